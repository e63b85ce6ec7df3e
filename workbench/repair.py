"""Repairing partially-labelled people instead of dropping the image: erase them, or label them.

For an image where a person has no garment masks, a curator draws a box around that person (or
takes a detector's proposal, :func:`propose_box`) and either

- **erases** them: the box is repainted (``inpaint``: a diffusers inpainting pipeline; ``fill``:
  OpenCV, no model) and the edited photo is written as a new PNG under
  ``<data_dir>/repairs/<dataset id>/``; the original file is never touched. A later erase of the
  same image starts from the latest erased photo;
- **labels** them: the person inside the box is segmented (``sam``, ``cloth-segmenter``, or
  ``manual``: the box itself), each segment gets a garment category of the dataset, and the masks
  are stored as :class:`~db.repair.RepairAnnotation` rows.

Each repair is a :class:`~db.repair.PeopleRepair` row (curator, source, model, box, time) plus an
audit-log entry. Repairs are kept apart from the dataset's own annotations: EDA, rendering,
people flagging and the export see them only when asked (:func:`repairs_for_export`, the export's
``repaired="include"``). Removing a repair marks it removed (who, when); nothing is deleted.

The page previews first (:func:`preview_erase`, :func:`preview_label`) and saves what it showed
(:func:`save_erase`, :func:`save_label`); the CLI does both in one call (:func:`repair_image`).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Category, Dataset, Image, utcnow
from db.repair import PeopleRepair, RepairAnnotation
from workbench.audit import record
from workbench.datasets import get_dataset, get_image
from workbench.files import write_atomically
from workbench.repair_models import (
    DEFAULT_CLOTH,
    DEFAULT_INPAINT,
    DEFAULT_SAM,
    Box,
    InpaintSettings,
    RepairError,
    box_mask,
    erase_fill,
    erase_inpaint,
    segment_cloth,
    segment_sam,
)
from workbench.progress import ProgressFn, StopFn
from workbench.rle import encode_mask, runs_area, runs_bbox, runs_to_counts
from workbench.settings import Settings
from workbench.taxonomy import short_name

ERASE_METHODS = ("fill", "inpaint")
LABEL_SOURCES = ("sam", "cloth-segmenter", "manual")
ENTITY = "people_repair"
# The cloth segmenter's classes and the iMaterialist category each becomes unless the curator picks one.
CLOTH_CATEGORIES = {"upper body": "top", "lower body": "pants", "full body": "dress"}
REPAIR_ID_OFFSET = 10**12  # repair masks sort after the dataset's own where everything else ties

__all__ = [
    "CLOTH_CATEGORIES", "DEFAULT_CLOTH", "DEFAULT_INPAINT", "DEFAULT_SAM", "ERASE_METHODS", "LABEL_SOURCES", "ImageRepairs",
    "InpaintSettings", "RepairError", "RepairInfo", "Segment", "active_repairs", "box_text", "check_box", "check_repair",
    "dataset_categories", "image_photo", "list_repairs", "parse_box", "preview_erase", "preview_label", "preview_picture",
    "propose_box", "remove_repair", "repair_image", "repair_masks", "repairs_for_export", "save_erase",
    "save_label", "undo_last_repair",
]


# -- boxes ----------------------------------------------------------------------------------------
def parse_box(text: str) -> Box:
    """``"x0,y0,x1,y1"`` (pixels) -> a box; :class:`RepairError` naming the text otherwise."""
    try:
        values = [float(v) for v in str(text).replace(" ", "").split(",")]
        if len(values) != 4:
            raise ValueError
    except ValueError:
        raise RepairError(f"box {text!r} must be x0,y0,x1,y1 in pixels (four numbers)") from None
    return tuple(round(v) for v in values)  # type: ignore[return-value]


def box_text(box: Box) -> str:
    """``"x0,y0,x1,y1"``: the box as the CLI takes it."""
    return ",".join(str(int(v)) for v in box)


def check_box(box: Box, width: int, height: int, label: str = "the image") -> Box:
    """The box clipped to a ``width x height`` image; :class:`RepairError` when nothing of it is left."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise RepairError(f"box {box_text(box)}: x1 must be greater than x0 and y1 greater than y0")
    clipped = (max(0, x0), max(0, y0), min(width, x1), min(height, y1))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise RepairError(f"box {box_text(box)} lies outside {label} ({width}x{height})")
    return clipped


# -- reading --------------------------------------------------------------------------------------
@dataclass
class RepairInfo:
    """A repair as the page and the CLI list it."""

    id: int
    image_id: int
    file_name: str
    action: str
    source: str
    model: str | None
    box: list[int]
    curator: str
    created_at: datetime
    photo_path: str | None
    masks: list[dict[str, Any]] = field(default_factory=list)  # category, area, bbox
    removed_at: datetime | None = None
    removed_by: str | None = None
    random_weights: bool = False  # made with a tiny test model: its pixels or masks are noise

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (``image_id`` is the file name, as on the command line; times as ISO text)."""
        data = asdict(self)
        data["image_db_id"] = data.pop("image_id")
        data["image_id"] = self.file_name
        for key in ("created_at", "removed_at"):
            data[key] = data[key].isoformat() if data[key] is not None else None
        return data


def _info(session: Session, row: PeopleRepair) -> RepairInfo:
    file_name = session.scalar(select(Image.file_name).where(Image.id == row.image_id))
    masks = [{"category": name, "area": area, "bbox": [x, y, w, h]}
             for name, area, x, y, w, h in session.execute(
                 select(Category.name, RepairAnnotation.area, RepairAnnotation.bbox_x, RepairAnnotation.bbox_y,
                        RepairAnnotation.bbox_w, RepairAnnotation.bbox_h)
                 .join(Category, Category.id == RepairAnnotation.category_id)
                 .where(RepairAnnotation.repair_id == row.id).order_by(RepairAnnotation.id))]
    return RepairInfo(row.id, row.image_id, file_name, row.action, row.source, row.model, list(row.box), row.curator,
                      row.created_at, row.photo_path, masks, row.removed_at, row.removed_by,
                      bool((row.settings or {}).get("random_weights")))


def list_repairs(session: Session, dataset_name: str, file_name: str | None = None, *,
                 include_removed: bool = False) -> list[RepairInfo]:
    """The dataset's repairs (of one image when ``file_name`` is given), oldest first."""
    dataset = get_dataset(session, dataset_name)
    query = select(PeopleRepair).where(PeopleRepair.dataset_id == dataset.id)
    if file_name is not None:
        query = query.where(PeopleRepair.image_id == get_image(session, dataset, file_name).id)
    if not include_removed:
        query = query.where(PeopleRepair.removed_at.is_(None))
    return [_info(session, row) for row in session.scalars(query.order_by(PeopleRepair.id))]


def active_repairs(session: Session, image_ids: list[int]) -> dict[int, int]:
    """Active repairs per image id (images without any are left out)."""
    if not image_ids:
        return {}
    return {i: int(n) for i, n in session.execute(
        select(PeopleRepair.image_id, func.count()).where(PeopleRepair.image_id.in_(image_ids),
                                                          PeopleRepair.removed_at.is_(None))
        .group_by(PeopleRepair.image_id))}


def _latest_erase(session: Session, image_id: int) -> PeopleRepair | None:
    return session.scalar(select(PeopleRepair).where(
        PeopleRepair.image_id == image_id, PeopleRepair.action == "erase", PeopleRepair.removed_at.is_(None),
        PeopleRepair.photo_path.is_not(None)).order_by(PeopleRepair.id.desc()).limit(1))


def _open(path: Path, label: str) -> PILImage.Image:
    try:
        with PILImage.open(path) as img:
            return img.convert("RGB")
    except OSError as exc:
        raise RepairError(f"cannot read the photo of {label} at {path}: {exc}") from None


def _image(session: Session, dataset_name: str, file_name: str) -> tuple[Dataset, Image]:
    dataset = get_dataset(session, dataset_name)
    try:
        return dataset, get_image(session, dataset, file_name)
    except LookupError as exc:
        raise RepairError(str(exc.args[0])) from None


def _curator(session: Session, name: str) -> str:
    from workbench.people.queue import QueueError, ensure_curator

    try:
        return ensure_curator(session, name)
    except QueueError as exc:
        raise RepairError(str(exc)) from None


def _choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise RepairError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def _boxed(session: Session, dataset_name: str, file_name: str, box: Box) -> tuple[Dataset, Image, Box]:
    """The dataset, the image and the box clipped to it."""
    dataset, image = _image(session, dataset_name, file_name)
    return dataset, image, check_box(box, image.width, image.height, image.file_name)


def original_photo(session: Session, dataset: Dataset, image: Image) -> PILImage.Image:
    """The image's photo as the dataset has it."""
    return _open(Path(dataset.images_root) / image.file_name, image.file_name)


def image_photo(session: Session, dataset_name: str, file_name: str) -> PILImage.Image:
    """The photo of an image of a dataset, as the dataset has it (what a label preview is drawn on)."""
    dataset, image = _image(session, dataset_name, file_name)
    return original_photo(session, dataset, image)


def current_photo(session: Session, dataset: Dataset, image: Image) -> PILImage.Image:
    """The photo a new erase starts from: the latest erased copy, else the original."""
    latest = _latest_erase(session, image.id)
    if latest is not None:
        return _open(Path(latest.photo_path), f"repair {latest.id}")
    return original_photo(session, dataset, image)


def dataset_categories(session: Session, dataset_name: str) -> list[str]:
    """The dataset's garment category names, in id order (what a label repair may assign)."""
    dataset = get_dataset(session, dataset_name)
    return list(session.scalars(select(Category.name).where(Category.dataset_id == dataset.id)
                                .order_by(Category.source_id)))


def _category(session: Session, dataset: Dataset, name: str) -> Category:
    """A category of the dataset by its name or its short name (``top`` for "top, t-shirt, sweatshirt")."""
    rows = list(session.scalars(select(Category).where(Category.dataset_id == dataset.id)))
    wanted = name.strip().lower()
    for row in rows:
        if row.name.lower() == wanted or short_name(row.name).lower() == wanted:
            return row
    raise RepairError(f"dataset {dataset.name!r} has no category {name!r}; its categories are "
                      f"{', '.join(short_name(r.name) for r in rows)}")


# -- proposals ------------------------------------------------------------------------------------
def propose_box(session: Session, dataset_name: str, file_name: str) -> tuple[Box, str] | None:
    """A box around the image's most probably unlabelled person, and where it came from.

    The stored detector proposals come first (best unlabelled score, labelled clusters left out);
    with none stored, the offline ``annotations`` detector looks at the image now. ``None``: no
    detector proposes anyone.
    """
    from workbench.people.queue import proposals_for

    dataset, image = _image(session, dataset_name, file_name)
    stored = [p for p in proposals_for(session, image.id) if p.kind != "labelled"]
    if stored:
        p = stored[0]
        box = (p.box_x, p.box_y, p.box_x + p.box_w, p.box_y + p.box_h)
        return check_box(box, image.width, image.height, image.file_name), f"{p.detector} proposal #{p.id}"
    from workbench.people.detect import load_samples
    from workbench.people.detectors import make_detector

    found = [p for p in make_detector("annotations").detect(load_samples(session, dataset, [image.id]))[0]
             if p.kind != "labelled"]
    if not found:
        return None
    best = max(found, key=lambda p: p.score)
    x, y, w, h = best.box
    return check_box((x, y, x + w, y + h), image.width, image.height, image.file_name), f"annotations {best.kind}"


# -- previews ---------------------------------------------------------------------------------------
@dataclass
class Segment:
    """One new garment mask of a label repair: its category and ``(height, width)`` bool mask."""

    category: str
    mask: np.ndarray


def _label_category(session: Session, dataset: Dataset, source: str, category: str | None) -> str | None:
    """The full name of a label repair's category (``None``: the cloth segmenter names its own)."""
    if category is not None:
        return _category(session, dataset, category).name
    if source != "cloth-segmenter":
        raise RepairError(f"a {source} label repair needs the garment category of the segment (--category); "
                          f"e.g. {', '.join(short_name(n) for n in dataset_categories(session, dataset.name)[:5])}")
    return None


def check_repair(session: Session, dataset_name: str, file_name: str, box: Box, action: str, *,
                 method: str = "fill", source: str = "sam", category: str | None = None) -> Box:
    """The box clipped to the image, once everything a repair asks that needs no model is checked
    (the image, the box, the method or segmenter, the category); :class:`RepairError` otherwise."""
    if action not in ("erase", "label"):
        raise RepairError(f"unknown repair {action!r}; choose erase or label")
    if action == "erase":
        _choice(method, ERASE_METHODS, "erase method")
    else:
        _choice(source, LABEL_SOURCES, "segmenter")
    dataset, image, box = _boxed(session, dataset_name, file_name, box)
    if action == "label":
        _label_category(session, dataset, source, category)
    return box


def preview_erase(session: Session, dataset_name: str, file_name: str, box: Box, method: str = "fill", *,
                  model: str | None = None, settings: InpaintSettings | None = None, device: str = "auto",
                  progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> PILImage.Image:
    """The photo with the box erased (``fill`` or ``inpaint``), not stored yet (``progress``: the
    inpainting steps; ``should_stop`` checked after each)."""
    _choice(method, ERASE_METHODS, "erase method")
    dataset, image, box = _boxed(session, dataset_name, file_name, box)
    photo = current_photo(session, dataset, image)
    if method == "fill":
        return erase_fill(photo, box)
    return erase_inpaint(photo, box, model or DEFAULT_INPAINT, settings, device, progress=progress,
                         should_stop=should_stop)


def preview_label(session: Session, dataset_name: str, file_name: str, box: Box, source: str = "sam", *,
                  category: str | None = None, model: str | None = None, device: str = "auto") -> list[Segment]:
    """The new garment masks of the person in the box, with their categories; not stored yet.

    ``sam`` and ``manual`` (the box itself) give one segment and need ``category``; the
    ``cloth-segmenter`` gives one per garment class it finds, each named by
    :data:`CLOTH_CATEGORIES` unless ``category`` is given (then it is one segment of that category).
    """
    _choice(source, LABEL_SOURCES, "segmenter")
    dataset, image, box = _boxed(session, dataset_name, file_name, box)
    category = _label_category(session, dataset, source, category)
    if source == "manual":
        return [Segment(category, box_mask(image.height, image.width, box))]
    photo = original_photo(session, dataset, image)
    if source == "sam":
        segments = [Segment(category, segment_sam(photo, box, model or DEFAULT_SAM, device))]
    else:
        found = segment_cloth(photo, box, model)
        if category is not None:
            segments = [Segment(category, np.logical_or.reduce(list(found.values())))] if found else []
        else:
            segments = [Segment(_category(session, dataset, CLOTH_CATEGORIES[name]).name, mask)
                        for name, mask in found.items() if name in CLOTH_CATEGORIES]
    segments = [s for s in segments if s.mask.any()]
    if not segments:
        raise RepairError(f"{image.file_name}: the {source} found nothing in box {box_text(box)}; draw the box "
                          "tighter around the person, or label it by hand (manual)")
    return segments


def preview_picture(photo: PILImage.Image, segments: list[Segment] = (), box: Box | None = None,
                    alpha: float = 0.5) -> PILImage.Image:
    """The photo with ``segments`` tinted over it (a colour each) and the box outlined: what the page shows."""
    from PIL import ImageDraw

    from workbench.palette import fine_colour

    pixels = np.asarray(photo.convert("RGB"), dtype=np.float32).copy()
    for k, segment in enumerate(segments):
        colour = np.asarray(fine_colour(1 + (k * 7) % 46), dtype=np.float32)
        pixels[segment.mask] = (1 - alpha) * pixels[segment.mask] + alpha * colour
    picture = PILImage.fromarray(pixels.clip(0, 255).astype(np.uint8))
    if box is not None:
        ImageDraw.Draw(picture).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=(255, 255, 255),
                                          width=max(1, round(max(picture.size) / 300)))
    return picture


# -- saving ---------------------------------------------------------------------------------------
def _audit(session: Session, curator: str, action: str, row: PeopleRepair, before: Any = None) -> None:
    record(session, curator, action, ENTITY, row.id, dataset=row.dataset_id, before=before,
           after=_info(session, row).to_dict())


def _random_weights(model: str | None, kind: str) -> bool:
    """Whether ``model`` (a registry name, hub id or path of ``kind``) is a tiny random-weight test model."""
    from workbench.models import is_tiny, resolve

    if not model:
        return False
    local = Path(resolve(model, kind))
    return local.exists() and is_tiny(local)


def _png(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def save_erase(session: Session, settings: Settings, dataset_name: str, file_name: str, box: Box, method: str,
               curator: str, edited: PILImage.Image, *, model: str | None = None,
               options: dict[str, Any] | None = None) -> RepairInfo:
    """Store an erase: the edited photo as a new PNG beside the data (the original untouched) and its row."""
    _choice(method, ERASE_METHODS, "erase method")
    curator = _curator(session, curator)
    dataset, image, box = _boxed(session, dataset_name, file_name, box)
    if edited.size != (image.width, image.height):
        raise RepairError(f"the erased photo is {edited.size[0]}x{edited.size[1]}, {image.file_name} is "
                          f"{image.width}x{image.height}; erase again")
    row = PeopleRepair(dataset_id=dataset.id, image_id=image.id, action="erase", source=method,
                       model=model if method == "inpaint" else None, box=list(box),
                       settings={**(options or {}), **({"random_weights": True} if method == "inpaint"
                                                       and _random_weights(model, "inpaint") else {})},
                       curator=curator)
    session.add(row)
    session.flush()
    path = Path(settings.data_dir).resolve() / "repairs" / str(dataset.id) / f"{image.id}-{Path(file_name).stem}-repair{row.id}.png"
    write_atomically(path, _png(edited))
    row.photo_path = str(path)
    _audit(session, curator, "people.repair", row)
    return _info(session, row)


def save_label(session: Session, dataset_name: str, file_name: str, box: Box, source: str, curator: str,
               segments: list[Segment], *, model: str | None = None) -> RepairInfo:
    """Store a label repair: its segments as curated masks (never in the dataset's own annotations)."""
    _choice(source, LABEL_SOURCES, "segmenter")
    if not segments:
        raise RepairError("a label repair needs at least one segment")
    curator = _curator(session, curator)
    dataset, image, box = _boxed(session, dataset_name, file_name, box)
    row = PeopleRepair(dataset_id=dataset.id, image_id=image.id, action="label", source=source,
                       model=model if source != "manual" else None, box=list(box), curator=curator,
                       settings={"random_weights": True} if source != "manual" and _random_weights(
                           model, "sam" if source == "sam" else "segmenter") else {})
    session.add(row)
    session.flush()
    for segment in segments:
        if segment.mask.shape != (image.height, image.width):
            raise RepairError(f"a {segment.category} mask is {segment.mask.shape[1]}x{segment.mask.shape[0]}, "
                              f"{image.file_name} is {image.width}x{image.height}")
        runs = encode_mask(segment.mask)
        x, y, w, h = runs_bbox(runs, image.height)
        session.add(RepairAnnotation(repair_id=row.id, image_id=image.id,
                                     category_id=_category(session, dataset, segment.category).id,
                                     counts=runs_to_counts(runs, image.height * image.width), area=runs_area(runs),
                                     bbox_x=x, bbox_y=y, bbox_w=w, bbox_h=h))
    session.flush()
    _audit(session, curator, "people.repair", row)
    return _info(session, row)


def repair_image(session: Session, settings: Settings, dataset_name: str, file_name: str, box: Box, *,
                 action: str, curator: str, method: str = "fill", source: str = "sam",
                 category: str | None = None, model: str | None = None,
                 inpaint: InpaintSettings | None = None, device: str = "auto") -> RepairInfo:
    """Erase (``action="erase"``, ``method``) or label (``action="label"``, ``source``, ``category``)
    the person in ``box`` and store it: preview and save in one step (the CLI)."""
    if action == "erase":
        edited = preview_erase(session, dataset_name, file_name, box, method, model=model, settings=inpaint,
                               device=device)
        options = (inpaint or InpaintSettings()).model_dump() if method == "inpaint" else {}
        return save_erase(session, settings, dataset_name, file_name, box, method, curator, edited,
                          model=(model or DEFAULT_INPAINT) if method == "inpaint" else None, options=options)
    if action == "label":
        segments = preview_label(session, dataset_name, file_name, box, source, category=category, model=model,
                                 device=device)
        used = model or (DEFAULT_SAM if source == "sam" else DEFAULT_CLOTH if source == "cloth-segmenter" else None)
        return save_label(session, dataset_name, file_name, box, source, curator, segments, model=used)
    raise RepairError(f"unknown repair {action!r}; choose erase or label")


def remove_repair(session: Session, repair_id: int, curator: str, dataset_name: str | None = None) -> RepairInfo:
    """Take a repair back (it stays on record as removed, by whom and when); its file stays on disk.

    ``dataset_name``: refuse a repair of another dataset (an id typed from the wrong list)."""
    curator = _curator(session, curator)
    row = session.get(PeopleRepair, repair_id)
    if row is None or (dataset_name is not None and row.dataset_id != get_dataset(session, dataset_name).id):
        where = f" in {dataset_name!r}" if dataset_name else ""
        raise RepairError(f"no repair {repair_id}{where} (see `python -m workbench people repairs --dataset "
                          f"{dataset_name or 'NAME'}`)")
    if row.removed_at is not None:
        raise RepairError(f"repair {repair_id} was already removed by {row.removed_by}")
    before = _info(session, row).to_dict()
    row.removed_at, row.removed_by = utcnow(), curator
    session.flush()
    _audit(session, curator, "people.repair-remove", row, before)
    return _info(session, row)


def undo_last_repair(session: Session, dataset_name: str, curator: str) -> RepairInfo:
    """Remove the curator's latest active repair in the dataset."""
    dataset = get_dataset(session, dataset_name)
    last = session.scalar(select(PeopleRepair.id).where(
        PeopleRepair.dataset_id == dataset.id, PeopleRepair.curator == (curator or "").strip(),
        PeopleRepair.removed_at.is_(None)).order_by(PeopleRepair.id.desc()).limit(1))
    if last is None:
        raise RepairError(f"{curator} has no repair to undo in {dataset_name!r}")
    return remove_repair(session, last, curator, dataset_name)


# -- what the export reads ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageRepairs:
    """What the active repairs of one image change in an export."""

    photo: str | None  # the latest erased photo, if any
    actions: tuple[str, ...]  # "erase" and/or "label"
    categories: frozenset[str]  # categories of the added masks
    box: tuple[float, float, float, float] | None  # x, y, w, h union of the added masks


def repairs_for_export(session: Session, dataset_id: int) -> dict[int, ImageRepairs]:
    """The active repairs of every repaired image of a dataset, by image id."""
    rows = session.execute(select(PeopleRepair.image_id, PeopleRepair.action, PeopleRepair.photo_path)
                           .where(PeopleRepair.dataset_id == dataset_id, PeopleRepair.removed_at.is_(None))
                           .order_by(PeopleRepair.id)).all()
    if not rows:
        return {}
    photos: dict[int, str | None] = {}
    actions: dict[int, set[str]] = {}
    for image_id, action, path in rows:
        actions.setdefault(image_id, set()).add(action)
        photos.setdefault(image_id, None)
        if action == "erase" and path:
            photos[image_id] = path
    categories: dict[int, set[str]] = {}
    boxes: dict[int, tuple[float, float, float, float]] = {}
    for image_id, name, x0, y0, x1, y1 in session.execute(
        select(RepairAnnotation.image_id, Category.name, func.min(RepairAnnotation.bbox_x),
               func.min(RepairAnnotation.bbox_y), func.max(RepairAnnotation.bbox_x + RepairAnnotation.bbox_w),
               func.max(RepairAnnotation.bbox_y + RepairAnnotation.bbox_h))
        .join(Category, Category.id == RepairAnnotation.category_id)
        .join(PeopleRepair, PeopleRepair.id == RepairAnnotation.repair_id)
        .where(PeopleRepair.dataset_id == dataset_id, PeopleRepair.removed_at.is_(None))
        .group_by(RepairAnnotation.image_id, Category.name)
    ):
        categories.setdefault(image_id, set()).add(name)
        if image_id in boxes:
            a = boxes[image_id]
            x0, y0, x1, y1 = min(a[0], x0), min(a[1], y0), max(a[0] + a[2], x1), max(a[1] + a[3], y1)
        boxes[image_id] = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
    return {i: ImageRepairs(photos[i], tuple(sorted(actions[i])), frozenset(categories.get(i, ())), boxes.get(i))
            for i in actions}


def repair_masks(session: Session, image_ids: list[int]) -> dict[int, list[tuple[str, str, str, int, int]]]:
    """``image id -> [(category, supercategory, counts, area, id)]``: the active repairs' masks, the
    records :func:`workbench.masks.compose_mask` takes (ids after every real annotation's)."""
    found: dict[int, list[tuple[str, str, str, int, int]]] = {}
    if not image_ids:
        return found
    for image_id, ann_id, counts, area, name, supercategory in session.execute(
        select(RepairAnnotation.image_id, RepairAnnotation.id, RepairAnnotation.counts, RepairAnnotation.area,
               Category.name, Category.supercategory)
        .join(Category, Category.id == RepairAnnotation.category_id)
        .join(PeopleRepair, PeopleRepair.id == RepairAnnotation.repair_id)
        .where(RepairAnnotation.image_id.in_(image_ids), PeopleRepair.removed_at.is_(None))
        .order_by(RepairAnnotation.id)
    ):
        found.setdefault(image_id, []).append((name, supercategory or "", counts, area, REPAIR_ID_OFFSET + ann_id))
    return found

