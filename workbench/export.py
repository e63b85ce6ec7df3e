"""Export the curated set in a trainer's format: conditioning masks, photos, prompts, manifest.

Two layouts:

- ``controlnet`` (the original ControlNet tutorial's): ``prompt.json`` with one JSON object per
  line, ``{"source": "source/000000.png", "target": "target/000000.jpg", "prompt": "..."}``,
  the conditioning masks in ``source/`` and the photos in ``target/``;
- ``imagefolder`` (Hugging Face ``datasets``): ``metadata.jsonl`` with ``file_name`` (the
  photo, under ``images/``), ``conditioning_image_file_name`` (the mask, under
  ``conditioning_images/``) and ``text``; ``datasets.load_dataset(DIR)`` reads it as the
  ``image`` / ``conditioning_image`` / ``text`` columns diffusers' ControlNet example expects.

Both hold ``manifest.json``: the resolved recipe (scheme name and version, prompt source and
mixing recipe, filters, split, seed, resolution, crop, encodings), counts, which images were
left out and why, the source dataset, the workbench version and every file's SHA-256.

Geometry: each photo and its mask go through the SAME transform: scaled (aspect kept) until the
output size is covered, the short side to the resolution (or to an aspect bucket), then cropped
at the centre or around the union box of the garment masks (``crop="person"``). Both are done
in one resampling step from a source box in original pixels, so the two stay aligned to the
sub-pixel; masks are composed at the photo's own size and resampled by nearest neighbour only,
so every mask value is a value of the scheme's legend. Pixels are taken as stored (no EXIF
rotation), which is the frame the annotations are in.

Determinism: items are numbered in file-name order, encoders run with fixed settings, nothing
time- or machine-dependent goes into a file; the same recipe on the same data gives
byte-identical files whatever the number of worker processes.

Safety: everything is written into a hidden ``.<name>.partial-<pid>`` folder beside the
destination and renamed into place only when complete. An error or a stop request removes that
folder; a process killed outright cannot, and the next export into the same parent folder
sweeps such leftovers (their process being gone). Its worker processes end with it (they watch
it: ``workbench.processes``), and its record, found with its process gone, reads as failed.

Speed: photos are decoded with JPEG draft mode (DCT scaling) when downscaling, work is spread
over processes (spawned, fed compact work items; the parent alone reads the store), and each
resized, encoded photo is cached under ``<data_dir>/cache/export`` keyed by the source's
SHA-256, the output size, the crop box and the encoding, so a re-export with another scheme or
prompt recipe decodes no photo at all.

Other areas: people decisions come from ``workbench.people.queue.people_decisions``, curator
exclusions of duplicates, outliers and label problems from
``workbench.embeddings.decisions.excluded_images`` (always honoured, each its own reason), and
prompts from ``workbench.captions.mixing.training_prompts``; with no decisions and no recipe
that is every image with its dataset prompt. People repairs (``workbench.repair``: erased photos,
added masks) are read only with ``repaired="include"``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image as PILImage
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

import workbench
from workbench.buckets import bucket_sizes, output_size  # noqa: F401  (part of this module's API)
from db.engine import session_scope
from db.models import Annotation, Category, Dataset, Image, utcnow
from db.training import Export
from workbench.datasets import get_dataset
from workbench.files import write_atomically
from workbench.formats.images import image_file
from workbench.guard import InputRefused, read_json
from workbench.processes import ORPHANED, record_owner, settle_orphans, watched_process_pool
from workbench.progress import Cancelled, ProgressFn, StopFn, check_stop, report
from workbench.settings import Settings

FORMATS = ("controlnet", "imagefolder")
MANIFEST = "manifest.json"
PARTIAL_MARKER = ".workbench-export-partial"
# Layout of each format: (prompt file, mask folder, photo folder).
LAYOUTS: dict[str, tuple[str, str, str]] = {
    "controlnet": ("prompt.json", "source", "target"),
    "imagefolder": ("metadata.jsonl", "conditioning_images", "images"),
}
# Exports smaller than this run in the calling process: spawning a worker costs most of a
# second, the time to export about 50 images at 512 px (bench/export.py).
MIN_ITEMS_FOR_WORKERS = 200


class ExportError(ValueError):
    """An export that cannot be done as asked, with the thing, the place and the fix named."""


# ---------------------------------------------------------------------------------------------
# The recipe


class ExportRecipe(BaseModel):
    """Everything that decides an export's content (not where it goes, nor how many workers)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    format: Literal["controlnet", "imagefolder"] = "imagefolder"
    scheme: str = Field("body-parts", description="Mask scheme of the conditioning images.")
    scheme_version: int | None = Field(None, description="Pinned scheme version; default the latest.")
    resolution: int = Field(512, ge=8, le=8192, description="Short side of the output, pixels.")
    crop: Literal["center", "person"] = Field(
        "center", description="center, or person: around the union box of the garment masks.")
    buckets: bool = Field(False, description="Aspect buckets (about resolution² pixels, aspect "
                                             "1:2 to 2:1) instead of square crops.")
    target_format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = Field(95, ge=1, le=100)
    split: Literal["all", "train", "validation"] = Field(
        "all", description="Which part of the seeded train/validation split to export.")
    validation_fraction: float = Field(0.1, ge=0.0, le=1.0)
    seed: int = Field(0, ge=0, description="Seed of the split and of the prompt mixing.")
    people: Literal["ignore", "exclude", "crop"] = Field(
        "exclude", description="Use of people decisions: ignore them; exclude the images a "
                               "curator excluded or marked regions on; or crop the marked "
                               "regions away (excluding the image when no crop avoids them).")
    undecided: Literal["include", "exclude", "wait"] = Field(
        "exclude", description="Flagged images no curator has decided yet (pending, skipped, "
                               "in conflict): include them, exclude them, or wait (refuse to "
                               "export while any remain). Ignored with people=ignore.")
    min_size: int = Field(0, ge=0, description="Leave out photos whose short side is smaller.")
    require_categories: list[str] = Field(
        default_factory=list, description="Keep only images with at least one of these.")
    exclude_categories: list[str] = Field(
        default_factory=list, description="Leave out images with any of these.")
    reviewed_captions_only: bool = False
    caption_recipe: str | None = Field(None, description="Mixing recipe for the prompts.")
    use_predicted_masks: bool = Field(
        False, description="Images without real masks use a segmenter's predicted masks of the same scheme "
                           "(opt-in; real masks always win).")
    predicted_source: int | None = Field(
        None, description="The prediction source to use (default: the newest of the export's scheme).")
    repaired: Literal["exclude", "include"] = Field(
        "exclude", description="People repairs (workbench/repair.py): exclude = not used (images go as their "
                               "people decision says, with their own photo and masks); include = a repaired "
                               "image is exported with its erased photo and added masks, unless a curator "
                               "excluded it.")

    @model_serializer(mode="wrap")
    def _without_unused_repairs(self, handler):
        # A recipe that does not use repairs dumps exactly as before repairs existed, so its
        # manifest (and checksum) stays byte-identical.
        data = handler(self)
        if isinstance(data, dict) and data.get("repaired") == "exclude":
            data.pop("repaired")
        return data

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError(f"resolution {value} is not a multiple of 8 (Stable Diffusion's "
                             f"VAE needs that); use {value - value % 8 or 8}")
        return value

    @field_validator("require_categories", "exclude_categories")
    @classmethod
    def _sorted_unique(cls, value: list[str]) -> list[str]:
        return sorted(set(value))


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Recipe values from a JSON file: a recipe, or an export's manifest (its ``recipe``)."""
    path = Path(path)
    try:
        data = read_json(path, "recipe file")
    except InputRefused as exc:
        raise ExportError(str(exc)) from None
    if not isinstance(data, dict):
        raise ExportError(f"recipe file {path}: expected a JSON object")
    if isinstance(data.get("recipe"), dict) and "files" in data:
        data = data["recipe"]
    return data


# ---------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True)
class Geometry:
    """Output ``size = (width, height)`` and the source ``box`` (left, top, right, bottom) it shows."""

    size: tuple[int, int]
    box: tuple[float, float, float, float]

    def key(self) -> str:
        """A stable text form (cache keys, manifests)."""
        return f"{self.size[0]}x{self.size[1]}@" + ",".join(f"{v:.4f}" for v in self.box)


def plan_geometry(
    width: int, height: int, size: tuple[int, int],
    focus: tuple[float, float, float, float] | None = None,
    avoid: Sequence[tuple[float, float, float, float]] = (),
) -> Geometry | None:
    """Scale a ``width x height`` image to cover ``size`` (aspect kept) and pick the crop.

    The crop is centred, or centred on ``focus`` (an ``x, y, w, h`` box) when given, and
    slides along the free axis to stay clear of every ``avoid`` box; ``None`` when no position
    does.
    """
    out_w, out_h = size
    scale = max(out_w / width, out_h / height)
    horizontal = width * scale - out_w >= height * scale - out_h  # which axis has room to slide
    full = (width if horizontal else height) * scale
    window = out_w if horizontal else out_h
    room = max(full - window, 0.0)
    if focus is not None and focus[2] > 0 and focus[3] > 0:
        centre = (focus[0] + focus[2] / 2) if horizontal else (focus[1] + focus[3] / 2)
        preferred = centre * scale - window / 2
    else:
        preferred = room / 2
    allowed = [(0.0, room)]
    for x, y, w, h in avoid:
        lo, hi = ((x, x + w) if horizontal else (y, y + h))
        if hi <= lo:
            continue
        # The window [p, p + window) overlaps [lo, hi) * scale for p in (lo*scale - window, hi*scale).
        cut_lo, cut_hi = lo * scale - window, hi * scale
        allowed = [part for a, b in allowed
                   for part in ((a, min(b, cut_lo)), (max(a, cut_hi), b)) if part[0] <= part[1]]
    best: float | None = None
    for a, b in allowed:
        lo_i, hi_i = math.ceil(a - 1e-9), math.floor(b + 1e-9)
        if lo_i > hi_i:
            continue
        p = float(min(max(round(preferred), lo_i), hi_i))
        if best is None or abs(p - preferred) < abs(best - preferred):
            best = p
    if best is None:
        return None
    if horizontal:
        box = (best / scale, 0.0, (best + out_w) / scale, float(height))
    else:
        box = (0.0, best / scale, float(width), (best + out_h) / scale)
    return Geometry(size=(out_w, out_h), box=tuple(round(v, 4) for v in box))


# ---------------------------------------------------------------------------------------------
# Prompts and people decisions, from the captions and people areas.


def training_prompts_for(session: Session, dataset: Dataset, recipe: ExportRecipe
                         ) -> tuple[dict[int, str], dict[str, Any]]:
    """The prompt of every image and where they come from (recorded in the manifest).

    The prompts are the captions area's mixing recipe (``caption_recipe``; none: each image's
    dataset prompt); with ``reviewed_captions_only`` only images with an accepted or edited
    caption get one, so the others are left out of the export.
    """
    from workbench.captions.mixing import training_prompts
    from workbench.captions.review import reviewed_image_ids

    mixed = training_prompts(session, dataset.name, recipe=recipe.caption_recipe, seed=recipe.seed)
    prompts = {int(k): str(v) for k, v in mixed.items()}
    if recipe.reviewed_captions_only:
        reviewed = reviewed_image_ids(session, dataset.name)
        prompts = {k: v for k, v in prompts.items() if k in reviewed}
    return prompts, {"source": "workbench.captions.mixing", "caption_recipe": recipe.caption_recipe,
                     "caption_recipe_version": mixed.recipe_version,
                     "reviewed_captions_only": recipe.reviewed_captions_only}


@dataclass(frozen=True)
class PeopleDecision:
    """A curator's decision on the people of one image (see ``workbench.people.queue``)."""

    kind: str | None
    regions: tuple[tuple[float, float, float, float], ...] = ()


UNDECIDED_REASON = "people: flagged, not decided yet"


def curation_exclusions(session: Session, dataset: Dataset) -> dict[int, str]:
    """Image id -> export reason, for images a curator excluded as a duplicate, outlier or label problem."""
    from workbench.embeddings.decisions import EXPORT_REASONS, excluded_images

    return {image_id: EXPORT_REASONS[source] for image_id, source in excluded_images(session, dataset.id).items()}


def undecided_message(dataset: str, count: int, examples: Sequence[str] = ()) -> str:
    """Why an export with ``undecided="wait"`` is refused, and the ways on."""
    shown = f" ({', '.join(examples)}{', ...' if count > len(examples) else ''})" if examples else ""
    return (f"dataset {dataset!r}: {count} flagged image(s) are not decided yet{shown}; decide them "
            f"on the People page (`python -m workbench people list --dataset {dataset} --status "
            f"pending`), or choose what to do with them: include or exclude (--undecided)")


def undecided_flags(session: Session, dataset: str) -> int:
    """Flagged images of ``dataset`` that no curator has decided (pending, skipped, in conflict)."""
    from workbench.people.queue import people_decisions

    return sum(1 for d in people_decisions(session, dataset).values() if d.kind is None)


def people_decisions_for(session: Session, dataset: Dataset
                         ) -> tuple[dict[int, PeopleDecision], dict[str, Any]]:
    """People decisions per image id and where they come from (recorded in the manifest)."""
    from workbench.people.queue import people_decisions

    decisions = {
        int(image_id): PeopleDecision(decision.kind, tuple(tuple(float(v) for v in box)
                                                           for box in decision.regions or ()))
        for image_id, decision in people_decisions(session, dataset.name).items()
    }
    return decisions, {"source": "workbench.people.queue"}


# ---------------------------------------------------------------------------------------------
# Selection


@dataclass(frozen=True)
class PlannedImage:
    """One image chosen for the export, with its geometry and prompt."""

    image_id: int
    file_name: str
    path: str
    width: int
    height: int
    checksum: str | None
    split: str
    prompt: str
    geometry: Geometry
    predicted_source: int | None = None  # masks from this prediction source, not real annotations
    repaired: tuple[str, ...] = ()  # the repairs used ("erase": path is the erased photo; "label": added masks)


@dataclass
class ExportPlan:
    """What an export will write, and what it leaves out and why."""

    recipe: ExportRecipe
    dataset: Dataset
    scheme: Any
    images: list[PlannedImage]
    excluded: dict[str, list[str]]
    sources: dict[str, Any]
    images_in_dataset: int
    warnings: list[str] = field(default_factory=list)


def assign_split(file_name: str, seed: int, validation_fraction: float) -> str:
    """``"train"`` or ``"validation"``: a seeded hash of the file name, stable as data grows."""
    digest = hashlib.sha256(f"{seed}:{file_name}".encode()).digest()
    return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction else "train"


def plan_export(session: Session, recipe: ExportRecipe) -> ExportPlan:
    """Choose the images of an export and their geometry, from the store alone (no decoding)."""
    from workbench.schemes import SchemeNotFound, get_scheme, scheme_for_dataset

    dataset = get_dataset(session, recipe.dataset)
    try:
        scheme = scheme_for_dataset(session, get_scheme(session, recipe.scheme, recipe.scheme_version), dataset.id)
    except SchemeNotFound as exc:
        raise ExportError(str(exc)) from None
    categories = dict(session.execute(
        select(Category.name, Category.id).where(Category.dataset_id == dataset.id)).all())
    unknown = [c for c in recipe.require_categories + recipe.exclude_categories if c not in categories]
    if unknown:
        raise ExportError(f"dataset {dataset.name!r} has no categor{'y' if len(unknown) == 1 else 'ies'} "
                          f"{', '.join(map(repr, unknown))}; its categories are "
                          f"{', '.join(sorted(categories))}")
    image_categories: dict[int, set[str]] = defaultdict(set)
    names_by_id = {v: k for k, v in categories.items()}
    focus: dict[int, tuple[float, float, float, float]] = {}
    for image_id, category_id, x0, y0, x1, y1 in session.execute(
        select(Annotation.image_id, Annotation.category_id, func.min(Annotation.bbox_x),
               func.min(Annotation.bbox_y), func.max(Annotation.bbox_x + Annotation.bbox_w),
               func.max(Annotation.bbox_y + Annotation.bbox_h))
        .where(Annotation.dataset_id == dataset.id)
        .group_by(Annotation.image_id, Annotation.category_id)
    ):
        image_categories[image_id].add(names_by_id[category_id])
        if image_id in focus:
            a = focus[image_id]
            x0, y0, x1, y1 = min(a[0], x0), min(a[1], y0), max(a[0] + a[2], x1), max(a[1] + a[3], y1)
        focus[image_id] = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))

    repairs = {}
    if recipe.repaired == "include":
        from workbench.repair import repairs_for_export

        repairs = repairs_for_export(session, dataset.id)
        for image_id, repair in repairs.items():
            image_categories[image_id] |= repair.categories
            if repair.box is not None:
                a = focus.get(image_id, repair.box)
                b = repair.box
                x0, y0 = min(a[0], b[0]), min(a[1], b[1])
                focus[image_id] = (x0, y0, max(a[0] + a[2], b[0] + b[2]) - x0, max(a[1] + a[3], b[1] + b[3]) - y0)
    predicted, predicted_info = predicted_images_for(session, dataset, recipe, scheme.version)
    prompts, prompt_source = training_prompts_for(session, dataset, recipe)
    decisions, people_source = people_decisions_for(session, dataset)
    curated_out = curation_exclusions(session, dataset)
    undecided = sorted(session.scalars(select(Image.file_name).where(
        Image.id.in_([i for i, d in decisions.items() if d.kind is None and i not in repairs]))))
    warnings = []
    if recipe.people != "ignore" and undecided:
        if recipe.undecided == "wait":
            raise ExportError(undecided_message(dataset.name, len(undecided), undecided[:3]))
        warnings.append(f"{len(undecided)} flagged image(s) of {dataset.name!r} are not decided yet; "
                        f"they are {'left out' if recipe.undecided == 'exclude' else 'exported as they are'} "
                        f"(undecided={recipe.undecided}); decide them on the People page")
    root = Path(dataset.images_root)
    excluded: dict[str, list[str]] = defaultdict(list)
    planned: list[PlannedImage] = []
    rows = session.execute(
        select(Image.id, Image.file_name, Image.width, Image.height, Image.checksum)
        .where(Image.dataset_id == dataset.id).order_by(Image.file_name)
    ).all()
    require, exclude = set(recipe.require_categories), set(recipe.exclude_categories)
    for image_id, file_name, width, height, checksum in rows:
        split = assign_split(file_name, recipe.seed, recipe.validation_fraction)
        names = image_categories.get(image_id, set())
        decision = decisions.get(image_id)
        kind = decision.kind if decision is not None else None
        repair = repairs.get(image_id)
        if repair is not None and kind != "exclude":
            decision, kind = None, None  # repaired: the unlabelled person is erased or labelled now
        avoid: tuple = ()
        reason = None
        if recipe.split != "all" and split != recipe.split:
            reason = f"split: {split}"
        elif min(width, height) < recipe.min_size:
            reason = f"smaller than {recipe.min_size} px"
        elif require and not names & require:
            reason = "none of the required categories"
        elif names & exclude:
            reason = "an excluded category"
        elif image_id in curated_out:
            reason = curated_out[image_id]
        elif recipe.people != "ignore" and decision is not None and kind is None and recipe.undecided == "exclude":
            reason = UNDECIDED_REASON
        elif recipe.people != "ignore" and kind == "exclude":
            reason = "people: excluded by a curator"
        elif recipe.people == "exclude" and kind == "mask-region":
            reason = "people: has unlabelled-person regions"
        elif not names and image_id not in predicted:
            reason = "no garment masks"
        elif image_id not in prompts:
            reason = "no reviewed caption" if recipe.reviewed_captions_only else "no prompt"
        if reason is None and recipe.people == "crop" and kind == "mask-region":
            avoid = decision.regions
        if repair is not None and repair.photo:
            path = Path(repair.photo)
        else:
            path = image_file(root, file_name)
        if reason is None and path is None:
            reason = "photo outside the images folder (a symlink leading out)"
        elif reason is None and not path.is_file():
            reason = "photo file missing"
        if reason is not None:
            excluded[reason].append(file_name)
            continue
        size = output_size(width, height, recipe.resolution, recipe.buckets)
        geometry = plan_geometry(width, height, size,
                                 focus.get(image_id) if recipe.crop == "person" else None, avoid)
        if geometry is None:
            excluded["people: no crop avoids the flagged regions"].append(file_name)
            continue
        planned.append(PlannedImage(image_id, file_name, str(path), width, height,
                                    None if repair is not None and repair.photo else checksum, split,
                                    prompts[image_id], geometry,
                                    predicted_info["id"] if not names and image_id in predicted else None,
                                    repair.actions if repair is not None else ()))
    people_source.update(
        undecided=recipe.undecided if recipe.people != "ignore" else None,
        flagged=len(decisions), decided=len(decisions) - len(undecided), undecided_images=len(undecided),
        undecided_left_out=len(excluded.get(UNDECIDED_REASON, [])))
    return ExportPlan(recipe=recipe.model_copy(update={"scheme_version": scheme.version}),
                      dataset=dataset, scheme=scheme, images=planned,
                      excluded={k: v for k, v in sorted(excluded.items())},
                      sources={"prompts": prompt_source, "people": people_source,
                               **({"predicted_masks": predicted_info} if predicted_info else {})},
                      images_in_dataset=len(rows), warnings=warnings)


def predicted_images_for(session: Session, dataset: Dataset, recipe: ExportRecipe, scheme_version: int
                         ) -> tuple[set[int], dict[str, Any]]:
    """Images with predicted masks the recipe may use, and their source (none unless opted in)."""
    from db.segment import PredictedAnnotation, PredictionSource
    from workbench.segment.store import source_label

    if not recipe.use_predicted_masks:
        return set(), {}
    query = select(PredictionSource).where(PredictionSource.dataset_id == dataset.id,
                                           PredictionSource.scheme == recipe.scheme)
    if recipe.predicted_source is not None:
        query = query.where(PredictionSource.id == recipe.predicted_source)
    source = session.scalar(query.order_by(PredictionSource.id.desc()))
    if source is None:
        raise ExportError(f"dataset {dataset.name!r} has no predicted masks in scheme {recipe.scheme!r}"
                          + (f" from source {recipe.predicted_source}" if recipe.predicted_source else "")
                          + "; predict them first (`python -m workbench segment predict --dataset "
                          f"{dataset.name} --scheme {recipe.scheme} --model ...`) or export without them")
    if source.scheme_version != scheme_version:
        raise ExportError(f"predicted masks of source {source.id} are in {recipe.scheme} v{source.scheme_version}, "
                          f"the export uses v{scheme_version}; pin scheme_version={source.scheme_version} or predict again")
    ids = set(session.scalars(select(PredictedAnnotation.image_id)
                              .where(PredictedAnnotation.source_id == source.id).distinct()))
    return ids, {"id": source.id, "label": source_label(source), "model": source.model,
                 "checkpoint": source.checkpoint, "scheme": source.scheme, "scheme_version": source.scheme_version}


# ---------------------------------------------------------------------------------------------
# Work on one image (runs in worker processes)


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker needs once: the scheme, where to write, how to encode."""

    scheme: dict[str, Any]
    out_root: str
    cache_dir: str | None
    target_format: str
    jpeg_quality: int
    max_image_pixels: int


@dataclass(frozen=True)
class WorkItem:
    """One image to write: compact, so that it is cheap to send to a worker."""

    index: int
    path: str
    width: int
    height: int
    checksum: str | None
    annotations: tuple[tuple[str, str, str, int, int], ...]  # name, supercategory, counts, area, id
    geometry: Geometry
    mask_name: str
    photo_name: str
    predicted: tuple[tuple[int, str], ...] = ()  # (class value, counts) when the mask is a prediction


@dataclass(frozen=True)
class ItemResult:
    """What a worker wrote for one item."""

    index: int
    files: dict[str, str]  # relative path -> SHA-256
    decoded: bool


PHOTO_RESAMPLE = PILImage.Resampling.LANCZOS
_worker_config: WorkerConfig | None = None
_worker_scheme = None


def _init_worker(config: WorkerConfig) -> None:
    global _worker_config, _worker_scheme
    from workbench.schemes import parse_scheme

    _worker_config = config
    _worker_scheme = parse_scheme(config.scheme)
    PILImage.MAX_IMAGE_PIXELS = config.max_image_pixels


def encode_photo(image: PILImage.Image, target_format: str, jpeg_quality: int) -> bytes:
    """The photo encoded with fixed settings (no metadata, no timestamps)."""
    buffer = io.BytesIO()
    if target_format == "jpeg":
        # 4:4:4 keeps garment edges sharp in colour; baseline, no optimisation pass: fixed bytes.
        image.save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0, optimize=False,
                   progressive=False)
    else:
        image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def resize_photo(data: bytes, width: int, height: int, geometry: Geometry, label: str) -> PILImage.Image:
    """Decode a photo (JPEG draft mode when it may shrink) and resample ``geometry.box`` to its size."""
    with PILImage.open(io.BytesIO(data)) as image:
        if image.size != (width, height):
            raise ExportError(f"{label}: the file is {image.size[0]}x{image.size[1]} but the store "
                              f"says {width}x{height}; re-import the dataset so masks and photo agree")
        box = geometry.box
        scale = geometry.size[0] / (box[2] - box[0])
        if image.format == "JPEG" and scale < 1:
            # Ask for at least the whole image at output scale: the decoder then shrinks by the
            # largest power of two that keeps full detail for the final resampling.
            wanted = (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale)))
            drafted = image.draft("RGB", wanted)
            if drafted is not None:
                factor = drafted[1][2] / width
                box = tuple(v * factor for v in box)
        image = image.convert("RGB")
        return image.resize(geometry.size, PHOTO_RESAMPLE, box=box)


def _photo_bytes(item: WorkItem, config: WorkerConfig) -> tuple[bytes, bool]:
    """The encoded output photo of ``item`` and whether it had to be decoded (cache miss)."""
    data = None
    checksum = item.checksum
    if checksum is None:
        data = Path(item.path).read_bytes()
        checksum = hashlib.sha256(data).hexdigest()
    cache_path = None
    if config.cache_dir is not None:
        quality = config.jpeg_quality if config.target_format == "jpeg" else 0
        key = hashlib.sha256(f"{checksum}|{item.geometry.key()}|{PHOTO_RESAMPLE.name}|"
                             f"{config.target_format}|{quality}".encode()).hexdigest()
        cache_path = Path(config.cache_dir) / key[:2] / f"{key}.{_extension(config.target_format)}"
        try:
            return cache_path.read_bytes(), False
        except FileNotFoundError:
            pass
    if data is None:
        data = Path(item.path).read_bytes()
    photo = resize_photo(data, item.width, item.height, item.geometry, item.path)
    encoded = encode_photo(photo, config.target_format, config.jpeg_quality)
    if cache_path is not None:
        write_atomically(cache_path, encoded)
    return encoded, True


def _mask_bytes(item: WorkItem, scheme) -> bytes:
    """The palette PNG of the item's mask: composed at the photo's size, resampled nearest."""
    from workbench.masks import MaskAnnotation, RenderedMask, compose_mask, encode_palette_png
    from workbench.rle import counts_to_runs

    if item.predicted:
        from workbench.segment.store import compose_predicted

        full = compose_predicted(item.predicted, item.height, item.width)
    else:
        records = [MaskAnnotation(name, supercategory, counts_to_runs(counts, item.height, item.width), area,
                                  ann_id)
                   for name, supercategory, counts, area, ann_id in item.annotations]
        full = compose_mask(records, item.height, item.width, scheme)
    resized = PILImage.fromarray(full).resize(item.geometry.size, PILImage.Resampling.NEAREST,
                                              box=item.geometry.box)
    rendered = RenderedMask(array=np.asarray(resized), palette=scheme.palette(),
                            legend=scheme.legend(), scheme_name=scheme.name, scheme_version=0)
    return encode_palette_png(rendered)


def export_item(item: WorkItem) -> ItemResult:
    """Write one item's mask and photo under the worker's output folder (worker entry point)."""
    config, scheme = _worker_config, _worker_scheme
    assert config is not None, "export_item runs in a worker set up by _init_worker"
    root = Path(config.out_root)
    mask = _mask_bytes(item, scheme)
    photo, decoded = _photo_bytes(item, config)
    (root / item.mask_name).write_bytes(mask)
    (root / item.photo_name).write_bytes(photo)
    return ItemResult(item.index, {item.mask_name: _sha256(mask), item.photo_name: _sha256(photo)},
                      decoded)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _extension(target_format: str) -> str:
    return "jpg" if target_format == "jpeg" else "png"


# ---------------------------------------------------------------------------------------------
# The export


@dataclass
class ExportResult:
    """What an export wrote, and how it went."""

    export_id: int
    out_dir: Path
    images: int
    counts: dict[str, Any]
    manifest_sha256: str
    decoded: int
    cache_hits: int
    seconds: float
    excluded: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (CLI output)."""
        return {"export_id": self.export_id, "out_dir": str(self.out_dir), "images": self.images,
                "counts": self.counts, "manifest_sha256": self.manifest_sha256,
                "decoded": self.decoded, "cache_hits": self.cache_hits,
                "seconds": round(self.seconds, 3), "warnings": self.warnings}


def _partial_dir(out_dir: Path) -> Path:
    return out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")


def sweep_partial_exports(parent: Path) -> list[Path]:
    """Remove leftovers of exports into ``parent`` whose process is gone (killed outright)."""
    import psutil

    removed = []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        match = re.fullmatch(r"\..+\.(?:partial|old)-(\d+)", entry.name)
        if not match or not entry.is_dir() or psutil.pid_exists(int(match.group(1))):
            continue
        if (entry / PARTIAL_MARKER).is_file() or (entry / MANIFEST).is_file():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _batches(plan: ExportPlan, session_of, layout: tuple[str, str, str], ext: str,
             batch: int = 64) -> Iterator[WorkItem]:
    """Work items in index order, reading each batch's masks from the store only when needed."""
    _, mask_dir, photo_dir = layout
    for start in range(0, len(plan.images), batch):
        chunk = plan.images[start:start + batch]
        ids = [p.image_id for p in chunk]
        annotations: dict[int, list] = defaultdict(list)
        with session_of() as session:
            for image_id, ann_id, counts, area, name, supercategory in session.execute(
                select(Annotation.image_id, Annotation.id, Annotation.counts, Annotation.area,
                       Category.name, Category.supercategory)
                .join(Category, Annotation.category_id == Category.id)
                .where(Annotation.image_id.in_(ids)).order_by(Annotation.id)
            ):
                annotations[image_id].append((name, supercategory or "", counts, area, ann_id))
            if any("label" in p.repaired for p in chunk):
                from workbench.repair import repair_masks

                for image_id, records in repair_masks(session, [p.image_id for p in chunk
                                                                if "label" in p.repaired]).items():
                    annotations[image_id].extend(records)
            predicted = _predicted_masks(session, [p for p in chunk if p.predicted_source is not None])
        for offset, planned in enumerate(chunk):
            index = start + offset
            yield WorkItem(index, planned.path, planned.width, planned.height, planned.checksum,
                           tuple(annotations[planned.image_id]), planned.geometry,
                           f"{mask_dir}/{index:06d}.png", f"{photo_dir}/{index:06d}.{ext}",
                           tuple(predicted.get(planned.image_id, ())))


def _predicted_masks(session: Session, chunk: list[PlannedImage]) -> dict[int, list[tuple[int, str]]]:
    """``image id -> [(value, counts)]`` of the predicted masks the chunk's images use."""
    from db.segment import PredictedAnnotation

    found: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for planned in chunk:
        for value, counts in session.execute(
            select(PredictedAnnotation.value, PredictedAnnotation.counts)
            .where(PredictedAnnotation.source_id == planned.predicted_source,
                   PredictedAnnotation.image_id == planned.image_id).order_by(PredictedAnnotation.value)
        ):
            found[planned.image_id].append((value, counts))
    return found


def _run_items(items: Iterator[WorkItem], total: int, config: WorkerConfig, workers: int,
               progress: ProgressFn | None, should_stop: StopFn | None) -> list[ItemResult]:
    results: list[ItemResult] = []
    report(progress, 0, total)
    if workers <= 1:
        _init_worker(config)
        for item in items:
            check_stop(should_stop)
            results.append(export_item(item))
            report(progress, len(results), total)
        return results
    # Workers end with this process, even when it is killed outright (workbench.processes).
    pool = watched_process_pool(workers, _init_worker, (config,))
    _init_worker(config)  # the parent works too (below)
    pending: set[Future] = set()
    try:
        for item in items:
            done, pending = wait(pending, timeout=0)
            for future in done:
                results.append(future.result())
            if len(pending) < 2 * workers:
                pending.add(pool.submit(export_item, item))
            else:
                # Workers are busy or still starting (a spawned interpreter takes most of a
                # second): the parent does this item itself instead of waiting. The queue stays
                # bounded, so a big dataset's masks are read batch by batch, not all at once.
                results.append(export_item(item))
            report(progress, len(results), total)
            check_stop(should_stop)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                results.append(future.result())
            report(progress, len(results), total)
            check_stop(should_stop)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")


def _fingerprint(plan: ExportPlan) -> str:
    digest = hashlib.sha256()
    for image in plan.images:
        digest.update(f"{image.file_name}\0{image.checksum or ''}\n".encode())
    return digest.hexdigest()


def export_dataset(
    engine: Engine,
    settings: Settings,
    recipe: ExportRecipe,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    use_cache: bool = True,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    job_id: int | None = None,
) -> ExportResult:
    """Export ``recipe`` into ``out_dir`` (complete, or not at all) and record it in the store.

    ``workers``: processes to spread the images over (default: every core, or none for small
    exports). ``should_stop`` is checked between images (:class:`Cancelled`).
    """
    started = time.monotonic()
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and not overwrite:
        raise ExportError(f"{out_dir} already exists; choose another folder or overwrite it (--overwrite)")
    if out_dir.exists() and not (out_dir / MANIFEST).is_file():
        raise ExportError(f"{out_dir} exists and is not an export (no {MANIFEST}); refusing to "
                          "replace it; choose another folder")
    layout = LAYOUTS[recipe.format]
    with session_scope(engine) as session:
        plan = plan_export(session, recipe)
        row = Export(dataset_id=plan.dataset.id, format=recipe.format,
                     recipe=plan.recipe.model_dump(mode="json"), out_dir=str(out_dir),
                     status="running", job_id=job_id)
        record_owner(row)
        session.add(row)
        session.flush()
        export_id = row.id
    if not plan.images:
        _finish_row(engine, export_id, "failed", error="no image left after the filters")
        raise ExportError(f"dataset {recipe.dataset!r}: no image left after the filters "
                          f"({_excluded_summary(plan.excluded)}); loosen them")
    n = len(plan.images)
    if workers is None:
        workers = (os.cpu_count() or 1) if n >= MIN_ITEMS_FOR_WORKERS else 1
    workers = max(1, min(workers, n))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_partial_exports(out_dir.parent)
    partial = _partial_dir(out_dir)
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir()
        (partial / PARTIAL_MARKER).write_text(f"export {export_id} in progress\n")
        for folder in layout[1:]:
            (partial / folder).mkdir()
        config = WorkerConfig(
            scheme=plan.scheme.definition.to_dict(), out_root=str(partial),
            cache_dir=str(Path(settings.data_dir) / "cache" / "export") if use_cache else None,
            target_format=recipe.target_format, jpeg_quality=recipe.jpeg_quality,
            max_image_pixels=settings.max_image_pixels)
        ext = _extension(recipe.target_format)
        results = _run_items(_batches(plan, lambda: session_scope(engine), layout, ext), n, config,
                             workers, progress, should_stop)
        check_stop(should_stop)
        results.sort(key=lambda r: r.index)
        files = _write_index(partial, plan, layout, ext, results)
        manifest = _manifest(plan, files)
        manifest_bytes = _json_bytes(manifest)
        (partial / MANIFEST).write_bytes(manifest_bytes)
        (partial / PARTIAL_MARKER).unlink()
        _move_into_place(partial, out_dir)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        status = "cancelled" if isinstance(exc, (Cancelled, KeyboardInterrupt)) else "failed"
        _finish_row(engine, export_id, status, error=f"{type(exc).__name__}: {exc}")
        raise
    decoded = sum(r.decoded for r in results)
    counts = {**manifest["counts"], "decoded": decoded, "cache_hits": n - decoded}
    sha = _sha256(manifest_bytes)
    _finish_row(engine, export_id, "finished", counts=counts, manifest_sha256=sha)
    return ExportResult(export_id=export_id, out_dir=out_dir, images=n, counts=counts,
                        manifest_sha256=sha, decoded=decoded, cache_hits=n - decoded,
                        seconds=time.monotonic() - started, excluded=plan.excluded,
                        warnings=plan.warnings)


def _write_index(root: Path, plan: ExportPlan, layout: tuple[str, str, str], ext: str,
                 results: list[ItemResult]) -> dict[str, str]:
    """Write the prompt file; return every file's SHA-256 (sorted by path)."""
    index_name, mask_dir, photo_dir = layout
    lines = []
    for i, image in enumerate(plan.images):
        mask, photo = f"{mask_dir}/{i:06d}.png", f"{photo_dir}/{i:06d}.{ext}"
        if plan.recipe.format == "controlnet":
            row = {"source": mask, "target": photo, "prompt": image.prompt}
        else:
            row = {"file_name": photo, "conditioning_image_file_name": mask, "text": image.prompt}
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    data = "".join(lines).encode("utf-8")
    (root / index_name).write_bytes(data)
    files = {index_name: _sha256(data)}
    for result in results:
        files.update(result.files)
    return dict(sorted(files.items()))


def _manifest(plan: ExportPlan, files: dict[str, str]) -> dict[str, Any]:
    """The manifest: nothing in it depends on the time, the machine or the output folder."""
    scheme = plan.scheme
    splits = defaultdict(int)
    for image in plan.images:
        splits[image.split] += 1
    excluded_counts = {reason: len(names) for reason, names in plan.excluded.items()}
    return {
        "workbench_version": workbench.__version__,
        "format": plan.recipe.format,
        "recipe": plan.recipe.model_dump(mode="json"),
        "scheme": {"name": scheme.name, "version": scheme.version,
                   "legend": scheme.definition.legend()},
        "sources": plan.sources,
        "encoding": {"photo_resample": PHOTO_RESAMPLE.name.lower(), "mask_resample": "nearest",
                     "target_format": plan.recipe.target_format,
                     "jpeg_quality": plan.recipe.jpeg_quality if plan.recipe.target_format == "jpeg" else None,
                     "jpeg_subsampling": "4:4:4" if plan.recipe.target_format == "jpeg" else None},
        "dataset": {"name": plan.dataset.name, "format": plan.dataset.format,
                    "images_root": plan.dataset.images_root, "images": plan.images_in_dataset,
                    "fingerprint": _fingerprint(plan)},
        "counts": {"images": len(plan.images), "splits": dict(sorted(splits.items())),
                   **({"predicted_masks": sum(p.predicted_source is not None for p in plan.images)}
                      if plan.recipe.use_predicted_masks else {}),
                   **({"repaired": sum(bool(p.repaired) for p in plan.images),
                       "repaired_erased": sum("erase" in p.repaired for p in plan.images),
                       "repaired_labelled": sum("label" in p.repaired for p in plan.images)}
                      if plan.recipe.repaired == "include" else {}),
                   "excluded": excluded_counts, "excluded_total": sum(excluded_counts.values())},
        "items": [{"index": i, "image_id": p.image_id, "file_name": p.file_name, "split": p.split,
                   "size": list(p.geometry.size), "box": list(p.geometry.box),
                   **({"mask": "predicted"} if p.predicted_source is not None else {}),
                   **({"repaired": list(p.repaired)} if p.repaired else {})}
                  for i, p in enumerate(plan.images)],
        "excluded": plan.excluded,
        "files": files,
    }


def _move_into_place(partial: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.replace(partial, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out_dir, old)
    os.replace(partial, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _finish_row(engine: Engine, export_id: int, status: str, **values: Any) -> None:
    with session_scope(engine) as session:
        row = session.get(Export, export_id)
        row.status, row.finished_at = status, utcnow()
        for key, value in values.items():
            setattr(row, key, value)


def _excluded_summary(excluded: Mapping[str, list[str]]) -> str:
    return ", ".join(f"{len(v)} {k}" for k, v in excluded.items()) or "the dataset has no image"


# ---------------------------------------------------------------------------------------------
# Reading back


@dataclass
class ExportInfo:
    """A past export as the page and CLI list it."""

    id: int
    dataset: str
    format: str
    status: str
    out_dir: str
    images: int | None
    manifest_sha256: str | None
    created_at: datetime
    finished_at: datetime | None
    error: str | None
    recipe: dict[str, Any]
    counts: dict[str, Any]


def list_exports(session: Session, dataset: str | None = None) -> list[ExportInfo]:
    """Exports, newest first; a "running" one whose process is gone is recorded as failed."""
    query = (select(Export, Dataset.name).join(Dataset, Export.dataset_id == Dataset.id)
             .order_by(Export.id.desc()))
    if dataset is not None:
        query = query.where(Dataset.name == dataset)
    found = session.execute(query).all()
    settle_orphans((row for row, _ in found), error=f"the export's {ORPHANED}; run it again")
    return [ExportInfo(row.id, name, row.format, row.status, row.out_dir, (row.counts or {}).get("images"),
                       row.manifest_sha256, row.created_at, row.finished_at, row.error, row.recipe,
                       row.counts or {})
            for row, name in found]


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an export folder."""
    path = Path(out_dir) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{path} does not exist: not an export folder, or it was moved") from None


def verify_export(out_dir: str | os.PathLike) -> list[str]:
    """Files of an export whose SHA-256 differs from its manifest, or that are missing."""
    root = Path(out_dir)
    problems = []
    for name, expected in read_manifest(root)["files"].items():
        path = root / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif _sha256(path.read_bytes()) != expected:
            problems.append(f"{name}: checksum differs from the manifest")
    return problems


def export_argv(recipe: ExportRecipe, out_dir: str | os.PathLike, *, overwrite: bool = False,
                workers: int | None = None) -> list[str]:
    """The ``python -m workbench`` arguments that run ``recipe`` in the foreground (for jobs)."""
    argv = ["export", "--dataset", recipe.dataset, "--format", recipe.format,
            "--out", str(Path(out_dir).expanduser().resolve()), "--recipe-json",
            json.dumps(recipe.model_dump(mode="json"), sort_keys=True)]
    if overwrite:
        argv.append("--overwrite")
    if workers is not None:
        argv += ["--workers", str(workers)]
    return argv
