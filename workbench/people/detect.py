"""Run a person detector over a dataset: batched, with progress, resumable, results stored.

Each processed image gets a :class:`~db.people.PeopleScan` (detector, settings, image score)
and its :class:`~db.people.PersonProposal` rows, committed batch by batch. A run skips images
that already have a scan for the same detector and settings, so a stopped run picks up where
it stopped. Images whose score reaches the threshold join the review queue
(:class:`~db.people.PeopleFlag`); that step reads the stored scans, so running again with
another threshold flags more (or fewer new) images without detecting anything again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import Annotation, Category, Dataset, Image, utcnow
from db.people import PeopleFlag, PeopleScan, PersonProposal
from workbench.datasets import get_dataset
from workbench.formats.images import image_file
from workbench.people.coverage import CoverageSettings, image_score, proposal_coverage, unlabelled_score
from workbench.people.detectors import Detector, DetectorError, Garment, ImageSample
from workbench.progress import ProgressFn, StopFn, check_stop, report
from workbench.rle import RLEError, counts_to_runs, decode_runs, mask_to_text


@dataclass
class DetectReport:
    """What a detection run did."""

    dataset: str
    detector: str
    settings_key: str
    threshold: float
    images: int = 0
    already_done: int = 0
    processed: int = 0
    flagged: int = 0
    proposals: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for JSON."""
        return asdict(self)


def load_samples(session: Session, dataset: Dataset, image_ids: list[int]) -> list[ImageSample]:
    """The images ``image_ids`` of ``dataset`` with their garment masks decoded."""
    images = {img.id: img for img in session.scalars(select(Image).where(Image.id.in_(image_ids)))}
    garments: dict[int, list[Garment]] = {i: [] for i in image_ids}
    rows = session.execute(
        select(Annotation.image_id, Annotation.id, Annotation.counts, Annotation.bbox_x, Annotation.bbox_y,
               Annotation.bbox_w, Annotation.bbox_h, Category.name, Category.supercategory)
        .join(Category, Annotation.category_id == Category.id)
        .where(Annotation.image_id.in_(image_ids))
        .order_by(Annotation.id)
    ).all()
    for image_id, ann_id, counts, x, y, w, h, name, supercategory in rows:
        image = images[image_id]
        try:
            mask = decode_runs(counts_to_runs(counts, image.height, image.width), image.height, image.width)
        except RLEError as exc:
            raise DetectorError(f"image {image.file_name!r}, annotation {ann_id}: {exc}") from exc
        garments[image_id].append(Garment(_short(name), supercategory or "", (x, y, w, h), mask))
    root = Path(dataset.images_root)
    return [
        ImageSample(image_id=i, file_name=images[i].file_name, width=images[i].width,
                    height=images[i].height, path=image_file(root, images[i].file_name), garments=garments[i])
        for i in image_ids
    ]


def _short(name: str) -> str:
    """``"shoe"`` from ``"shoe"``, ``"top, t-shirt, sweatshirt"`` -> ``"top"``: the first name."""
    return name.split(",")[0].strip().lower()


def detect_people(
    engine: Engine,
    dataset_name: str,
    detector: Detector,
    *,
    coverage: CoverageSettings | None = None,
    threshold: float | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> DetectReport:
    """Run ``detector`` over every image of the dataset not yet scanned with it; flag the worst.

    ``limit`` caps how many new images this run processes. ``should_stop`` is checked after
    each committed batch (:class:`~workbench.progress.Cancelled`); what was committed stays.
    """
    coverage = coverage or CoverageSettings()
    threshold = coverage.threshold(detector.name) if threshold is None else threshold
    key, settings = detector.settings_key(), detector.settings_dict()
    tiny = uses_tiny_model(detector)
    with session_scope(engine) as session:
        dataset = get_dataset(session, dataset_name)
        dataset_id = dataset.id
        all_ids = list(session.scalars(select(Image.id).where(Image.dataset_id == dataset_id).order_by(Image.id)))
        done = set(session.scalars(select(PeopleScan.image_id).where(
            PeopleScan.dataset_id == dataset_id, PeopleScan.detector == detector.name,
            PeopleScan.settings_key == key)))
    todo = [i for i in all_ids if i not in done]
    if limit is not None:
        todo = todo[:limit]
    result = DetectReport(dataset_name, detector.name, key, threshold, images=len(all_ids),
                          already_done=len(done))
    total = len(todo)
    report(progress, 0, total)
    for start in range(0, total, max(1, batch_size)):
        batch_ids = todo[start:start + batch_size]
        with session_scope(engine) as session:
            samples = load_samples(session, session.get(Dataset, dataset_id), batch_ids)
        found = _detect_batch(detector, samples, result)
        with session_scope(engine) as session:
            for sample, proposals in found:
                result.proposals += _store(session, dataset_id, detector.name, key, settings, sample, tiny,
                                           proposals, coverage)
                result.processed += 1
            result.flagged += flag_scanned(session, dataset_id, detector.name, key, threshold,
                                           image_ids=[sample.image_id for sample, _ in found])
        report(progress, min(start + len(batch_ids), total), total)
        check_stop(should_stop)
    if done:  # images scanned by an earlier run: this run's threshold may flag more of them
        with session_scope(engine) as session:
            result.flagged += flag_scanned(session, dataset_id, detector.name, key, threshold)
    return result


def _detect_batch(detector: Detector, samples: list[ImageSample], result: DetectReport) -> list[tuple[ImageSample, list]]:
    """Detections of a batch; an unreadable image is reported and left for the next run."""
    readable = []
    for sample in samples:
        if detector.needs_pixels:
            try:
                sample.pixels()
            except DetectorError as exc:
                result.failed.append({"image_id": sample.file_name, "error": str(exc)})
                continue
        readable.append(sample)
    if not readable:
        return []
    return list(zip(readable, detector.detect(readable)))


def uses_tiny_model(detector: Detector) -> bool:
    """Whether the detector runs a tiny random-weight test model (its proposals then say so)."""
    from workbench.models import is_tiny, resolve

    settings = getattr(detector, "settings", None)
    for field, kind in (("model", "grounding-dino"), ("weights_path", "torchvision")):
        ref = getattr(settings, field, None)
        if isinstance(ref, str) and ref and Path(path := resolve(ref, kind)).exists() and is_tiny(path):
            return True
    return False


def _store(session: Session, dataset_id: int, detector: str, key: str, settings: dict[str, Any],
           sample: ImageSample, tiny: bool, proposals: list, coverage: CoverageSettings) -> int:
    covered = sample.garment_union
    rows, scores, labelled = [], [], 0
    for p in proposals:
        cov = proposal_coverage(covered, p)
        score = unlabelled_score(p, cov, coverage)
        scores.append(score)
        if p.kind == "labelled":
            labelled += int(p.details.get("people", 1))
        x, y, w, h = p.box
        rows.append(PersonProposal(
            image_id=sample.image_id, detector=detector, settings_key=key, kind=p.kind,
            box_x=float(x), box_y=float(y), box_w=float(w), box_h=float(h),
            mask_rle=mask_to_text(p.mask) if p.mask is not None else None,
            score=float(p.score), coverage=cov, unlabelled_score=score,
            details={**p.details, **({"probe": [round(v, 1) for v in p.probe]} if p.probe else {}),
                     **({"random_weights": True} if tiny else {})},
        ))
    scan = PeopleScan(dataset_id=dataset_id, image_id=sample.image_id, detector=detector, settings_key=key,
                      settings=settings, score=image_score(scores), proposals=len(rows),
                      labelled_people=labelled if detector == "annotations" else None)
    session.add(scan)
    session.flush()
    for row in rows:
        row.scan_id = scan.id
    session.add_all(rows)
    return len(rows)


def flag_scanned(session: Session, dataset_id: int, detector: str, key: str, threshold: float,
                 image_ids: list[int] | None = None) -> int:
    """Put scanned images (all, or ``image_ids``) whose score reaches ``threshold`` into the
    queue; returns how many are new.

    An image already in the queue gets this detector's score added; a pending one is re-ranked
    by its highest score. Decided images keep their decision.
    """
    scans = session.execute(
        select(PeopleScan.image_id, PeopleScan.score).where(
            PeopleScan.dataset_id == dataset_id, PeopleScan.detector == detector,
            PeopleScan.settings_key == key, PeopleScan.score >= threshold,
            *([PeopleScan.image_id.in_(image_ids)] if image_ids is not None else []))
    ).all()
    if not scans:
        return 0
    flags = {f.image_id: f for f in session.scalars(
        select(PeopleFlag).where(PeopleFlag.image_id.in_([s.image_id for s in scans])))}
    new = 0
    for image_id, score in scans:
        flag = flags.get(image_id)
        if flag is None:
            session.add(PeopleFlag(dataset_id=dataset_id, image_id=image_id, score=float(score),
                                   scores={detector: round(float(score), 4)}, source="detector"))
            new += 1
        elif flag.scores.get(detector) != round(float(score), 4):
            flag.scores = {**flag.scores, detector: round(float(score), 4)}
            if flag.status == "pending":
                flag.score = max(float(v) for v in flag.scores.values())
            flag.updated_at = utcnow()
    return new
