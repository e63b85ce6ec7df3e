"""Predicted masks in the store and on disk: run a segmenter over a dataset or a folder, resumably.

Predictions of a dataset are written per batch of photos to ``predicted_annotation`` under a
:class:`db.segment.PredictionSource` (model, checkpoint, scheme), never to ``annotation``: the
dataset's real masks stay what every other query reads. Running the same segmenter again
continues where it stopped (images that have rows are skipped). Predictions of a plain folder
of photos are written as palette PNGs (``<name>.png``, pixel value = class value) with a legend.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image as PILImage
from sqlalchemy import Engine, exists, func, select
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import Annotation, Dataset, Image
from db.segment import PredictedAnnotation, PredictionSource
from workbench.datasets import get_dataset
from workbench.models import TINY_LABEL
from workbench.progress import ProgressFn, StopFn, check_stop, report
from workbench.rle import counts_to_runs, encode_mask, paint_runs, runs_area, runs_bbox, runs_to_counts
from workbench.segment.loaders import SegmentError
from workbench.segment.predict import Segmenter, to_scheme

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class PredictionSummary:
    """What a prediction run did."""

    source_id: int | None
    predicted: int
    skipped: int
    total: int
    failed: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        """Plain data (``--json``)."""
        return {"source_id": self.source_id, "predicted": self.predicted, "skipped_already_done": self.skipped,
                "total": self.total, "failed": self.failed}


def source_label(source: PredictionSource) -> str:
    """``model @ checkpoint (scheme vN)``, marked when a tiny test model made them: how pages,
    facets and ``segment sources`` name a prediction source."""
    checkpoint = f" @ {source.checkpoint}" if source.checkpoint else ""
    tiny = f" · {TINY_LABEL}" if (source.settings or {}).get("tiny") else ""
    return f"{source.model}{checkpoint} ({source.scheme} v{source.scheme_version}){tiny}"


def get_or_create_source(session: Session, dataset_id: int, segmenter: Segmenter, scheme: str,
                         scheme_version: int, legend: dict[str, str], checkpoint: str = "",
                         settings: dict[str, Any] | None = None) -> PredictionSource:
    """The source row of this segmenter on this dataset (the same one on a resumed run)."""
    query = select(PredictionSource).where(
        PredictionSource.dataset_id == dataset_id, PredictionSource.model == segmenter.source,
        PredictionSource.checkpoint == checkpoint, PredictionSource.scheme == scheme,
        PredictionSource.scheme_version == scheme_version)
    source = session.scalar(query)
    if source is None:
        source = PredictionSource(dataset_id=dataset_id, model=segmenter.source, checkpoint=checkpoint,
                                  scheme=scheme, scheme_version=scheme_version, legend=legend,
                                  settings=settings or {})
        session.add(source)
        session.flush()
    return source


def list_sources(session: Session, dataset_id: int) -> list[PredictionSource]:
    """Prediction sources of a dataset, newest first."""
    return list(session.scalars(select(PredictionSource).where(PredictionSource.dataset_id == dataset_id)
                                .order_by(PredictionSource.id.desc())))


def label_map_rows(label_map: np.ndarray) -> list[dict[str, Any]]:
    """One row per class value present: its mask as COCO RLE, area and box."""
    height, width = label_map.shape
    rows = []
    for value in np.unique(label_map).tolist():
        runs = encode_mask(label_map == value)
        x, y, w, h = runs_bbox(runs, height)
        rows.append({"value": int(value), "counts": runs_to_counts(runs, height * width), "area": runs_area(runs),
                     "bbox_x": x, "bbox_y": y, "bbox_w": w, "bbox_h": h})
    return rows


def predicted_label_map(session: Session, source_id: int, image_id: int) -> np.ndarray | None:
    """The stored prediction of one image as a label map (``None`` if it has none)."""
    image = session.get(Image, image_id)
    rows = session.execute(select(PredictedAnnotation.value, PredictedAnnotation.counts).where(
        PredictedAnnotation.source_id == source_id, PredictedAnnotation.image_id == image_id)).all()
    if image is None or not rows:
        return None
    return compose_predicted(rows, image.height, image.width)


def compose_predicted(rows: Sequence[tuple[int, str]], height: int, width: int) -> np.ndarray:
    """``(value, counts)`` rows of one image painted into a ``(height, width)`` label map."""
    canvas = np.zeros(height * width, np.uint8)
    for value, counts in rows:
        paint_runs(canvas, counts_to_runs(counts, height, width), int(value))
    return np.ascontiguousarray(canvas.reshape(width, height).T)


def _open_photo(path: Path) -> PILImage.Image:
    with PILImage.open(path) as photo:
        return photo.convert("RGB")


def scheme_target(session: Session, scheme: str, dataset_id: int) -> tuple[int, dict[str, int], dict[str, str]]:
    """Version, class name -> value, and legend of the stored scheme as it applies to the dataset."""
    from workbench.schemes import SchemeNotFound, get_scheme, scheme_for_dataset

    try:
        stored = scheme_for_dataset(session, get_scheme(session, scheme), dataset_id)
    except SchemeNotFound as exc:
        raise SegmentError(str(exc)) from None
    names = {c.name: c.value for c in stored.definition.classes}
    return stored.version, names, stored.definition.legend()


def images_to_predict(session: Session, dataset: Dataset, split: str | None, real_masks: bool | None,
                      limit: int | None = None) -> list[tuple[int, str, int, int]]:
    """``(id, file name, width, height)`` of the dataset's images (of a split; with real masks, without
    them, or either when ``real_masks`` is None), by id."""
    query = select(Image.id, Image.file_name, Image.width, Image.height).where(Image.dataset_id == dataset.id)
    if split is not None:
        query = query.where(Image.split == split)
    if real_masks is not None:
        has_masks = exists().where(Annotation.image_id == Image.id)
        query = query.where(has_masks if real_masks else ~has_masks)
    query = query.order_by(Image.id)
    if limit is not None:
        query = query.limit(limit)
    return [tuple(r) for r in session.execute(query).all()]


def predict_dataset(engine: Engine, dataset_name: str, segmenter: Segmenter, *, scheme: str | None = None,
                    split: str | None = None, only_without_masks: bool = False, checkpoint: str = "",
                    batch_size: int = 8, limit: int | None = None, progress: ProgressFn | None = None,
                    should_stop: StopFn | None = None) -> PredictionSummary:
    """Predict masks for a dataset's images (a split, or only those without real masks) into the store.

    ``scheme`` defaults to the segmenter's own; a different one is mapped class by class name.
    Images already predicted by this source are skipped, so a stopped run resumes.
    """
    from workbench.formats.images import ImageProblem, resolve_image_path

    scheme = scheme or segmenter.scheme.name
    with session_scope(engine) as session:
        dataset = get_dataset(session, dataset_name)
        if scheme == segmenter.scheme.name and scheme.startswith("model:"):
            version, target, legend = 0, None, segmenter.scheme.legend()
        else:
            version, target, legend = scheme_target(session, scheme, dataset.id)
        source = get_or_create_source(session, dataset.id, segmenter, scheme, version, legend, checkpoint,
                                      {"batch_size": batch_size, "split": split,
                                       "only_without_masks": only_without_masks,
                                       "tiny": bool(getattr(segmenter, "tiny", False))})
        source_id = source.id
        chosen = images_to_predict(session, dataset, split, False if only_without_masks else None, limit)
        done_ids = set(session.scalars(select(PredictedAnnotation.image_id).where(
            PredictedAnnotation.source_id == source_id).distinct()))
        images_root = Path(dataset.images_root)
    todo = [row for row in chosen if row[0] not in done_ids]
    skipped = len(chosen) - len(todo)
    failed: dict[str, str] = {}
    predicted = 0
    report(progress, skipped, len(chosen))
    for start in range(0, len(todo), batch_size):
        check_stop(should_stop)
        batch = todo[start:start + batch_size]
        photos, kept = [], []
        for image_id, file_name, width, height in batch:
            try:
                photos.append(_open_photo(resolve_image_path(images_root, file_name)))
                kept.append((image_id, file_name, width, height))
            except (ImageProblem, OSError) as exc:
                failed[file_name] = f"cannot read the photo: {exc}"
        maps = segmenter.predict(photos) if photos else []
        with session_scope(engine) as session:
            for (image_id, _name, width, height), label_map in zip(kept, maps):
                if label_map.shape != (height, width):  # the file differs from the size stored at import
                    label_map = np.asarray(PILImage.fromarray(label_map).resize((width, height),
                                                                                PILImage.Resampling.NEAREST))
                label_map = to_scheme(label_map, segmenter.scheme, scheme, target)
                session.add_all(PredictedAnnotation(source_id=source_id, image_id=image_id, **row)
                                for row in label_map_rows(label_map))
        predicted += len(kept)
        report(progress, skipped + start + len(batch), len(chosen))
    return PredictionSummary(source_id, predicted, skipped, len(chosen), failed)


def predict_folder(folder: Path, out_dir: Path, segmenter: Segmenter, *, scheme: str | None = None,
                   batch_size: int = 8, progress: ProgressFn | None = None,
                   should_stop: StopFn | None = None) -> PredictionSummary:
    """Predict a mask for every photo under ``folder`` into ``out_dir`` (same relative paths, ``.png``).

    Photos whose mask already exists are skipped (resume). ``legend.json`` names the classes.
    """
    from workbench.files import write_atomically
    from workbench.formats.images import image_file, iter_image_files
    from workbench.masks import RenderedMask, encode_palette_png
    from workbench.palette import flat_palette

    folder, out_dir = Path(folder), Path(out_dir)
    if not folder.is_dir():
        raise SegmentError(f"{folder} is not a folder of photos")
    scheme = scheme or segmenter.scheme.name
    names = [n for n in iter_image_files(folder) if n.lower().endswith(PHOTO_SUFFIXES)]
    todo = [n for n in names if not (out_dir / n).with_suffix(".png").is_file()]
    skipped = len(names) - len(todo)
    legend, palette = _legend_and_palette(segmenter, scheme)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(out_dir / "legend.json", (json.dumps(legend, indent=2) + "\n").encode())
    failed: dict[str, str] = {}
    report(progress, skipped, len(names))
    for start in range(0, len(todo), batch_size):
        check_stop(should_stop)
        batch, photos = [], []
        for name in todo[start:start + batch_size]:
            path = image_file(folder, name)
            if path is None:
                failed[name] = f"leads out of {folder} (a symlink): not read"
                continue
            try:
                photos.append(_open_photo(path))
                batch.append(name)
            except OSError as exc:
                failed[name] = f"cannot read the photo: {exc}"
        for name, label_map in zip(batch, segmenter.predict(photos) if photos else []):
            label_map = to_scheme(label_map, segmenter.scheme, scheme)
            rendered = RenderedMask(array=label_map, palette=palette or flat_palette({}), legend=legend,
                                    scheme_name=scheme, scheme_version=0)
            write_atomically((out_dir / name).with_suffix(".png"), encode_palette_png(rendered))
        report(progress, skipped + min(start + batch_size, len(todo)), len(names))
    return PredictionSummary(None, len(todo) - len(failed), skipped, len(names), failed)


def _legend_and_palette(segmenter: Segmenter, scheme: str) -> tuple[dict[str, str], list[int] | None]:
    from workbench.schemes import SchemeNotFound, builtin_scheme

    try:
        definition = builtin_scheme(scheme)
    except SchemeNotFound:
        return segmenter.scheme.legend(), None
    return definition.legend(), definition.palette()


def prediction_counts(session: Session, dataset_id: int) -> dict[int, int]:
    """Predicted images per source of a dataset."""
    rows = session.execute(
        select(PredictedAnnotation.source_id, func.count(func.distinct(PredictedAnnotation.image_id)))
        .join(PredictionSource, PredictionSource.id == PredictedAnnotation.source_id)
        .where(PredictionSource.dataset_id == dataset_id).group_by(PredictedAnnotation.source_id)).all()
    return dict(rows)


def mask_kind(session: Session, dataset_id: int) -> pd.Series:
    """Per image: ``real``, ``predicted`` or ``real + predicted`` (images with neither are left out)."""
    real = set(session.scalars(select(Annotation.image_id).where(Annotation.dataset_id == dataset_id).distinct()))
    predicted = set(session.scalars(
        select(PredictedAnnotation.image_id).join(PredictionSource, PredictionSource.id == PredictedAnnotation.source_id)
        .where(PredictionSource.dataset_id == dataset_id).distinct()))
    values = {i: "real" for i in real - predicted}
    values.update({i: "predicted" for i in predicted - real})
    values.update({i: "real + predicted" for i in real & predicted})
    return pd.Series(values, dtype=object)


def predicted_by(session: Session, dataset_id: int) -> pd.Series:
    """Per predicted image: the newest source that predicted it (``model @ checkpoint (scheme)``)."""
    rows = session.execute(
        select(PredictedAnnotation.image_id, func.max(PredictedAnnotation.source_id))
        .join(PredictionSource, PredictionSource.id == PredictedAnnotation.source_id)
        .where(PredictionSource.dataset_id == dataset_id).group_by(PredictedAnnotation.image_id)).all()
    labels = {s.id: source_label(s) for s in list_sources(session, dataset_id)}
    return pd.Series({image_id: labels[source_id] for image_id, source_id in rows}, dtype=object)


@dataclass(frozen=True)
class PredictedView:
    """One source's prediction of one image, ready to show: RGB, the classes present, the source."""

    source_id: int
    label: str
    rgb: np.ndarray
    classes: dict[int, tuple[str, tuple[int, int, int]]]  # value -> (name, colour), present ones only


def predicted_views(session: Session, image_id: int, size: tuple[int, int] | None = None) -> list[PredictedView]:
    """Every stored prediction of an image in its scheme's colours (newest source first)."""
    from workbench.masks import resize_nearest
    from workbench.schemes import SchemeNotFound, get_scheme

    image = session.get(Image, image_id)
    if image is None:
        return []
    views = []
    for source in list_sources(session, image.dataset_id):
        label_map = predicted_label_map(session, source.id, image_id)
        if label_map is None:
            continue
        try:
            palette = get_scheme(session, source.scheme, source.scheme_version or None).definition.palette()
        except SchemeNotFound:  # a model's own labels: greys
            palette = [min(255, v * 40) for v in range(256) for _ in range(3)]
        table = np.asarray(palette, np.uint8).reshape(256, 3)
        shown = resize_nearest(label_map, size) if size else label_map
        present = sorted(set(np.unique(label_map).tolist()))
        classes = {v: (source.legend.get(str(v), str(v)), tuple(int(c) for c in table[v])) for v in present}
        views.append(PredictedView(source.id, source_label(source), table[shown], classes))
    return views
