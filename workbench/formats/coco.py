"""COCO instances importer, Fashionpedia included.

Categories (and Fashionpedia's top-level ``attributes``) come from the file itself. The JSON is
streamed with ijson in two passes, so memory grows with the number of images, never with the
annotations: the first pass reads ``info``, ``categories``, ``attributes`` and ``images``; the
second reads ``annotations`` one batch at a time. Every mask (polygons, uncompressed or
compressed RLE) is converted to the store's column-major runs; area and box are computed from
those runs, not taken from the file. Bad annotations are rejected with their id in the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ijson
import numpy as np
from pycocotools import mask as mask_utils
from sqlalchemy import Engine

from workbench.formats.records import PendingAnnotation, source_key
from workbench.formats.records import size_problem
from workbench.formats.store import DatasetWriter, ImportReport, ImportSourceError
from workbench.guard import InputRefused, JsonNesting
from workbench.progress import ProgressFn, StopFn, report
from workbench.rle import (
    RLEError,
    coco_counts_to_runs,
    coco_string_to_counts,
    runs_area,
    runs_bbox,
    runs_to_counts,
    runs_to_text,
)
from workbench.settings import get_settings
from workbench.taxonomy import TaxonomyError, taxonomy_from_dict

FORMAT = "coco"
_CHUNK_BYTES = 1 << 20


class _AnnotationError(ValueError):
    pass


@dataclass
class _CocoHeader:
    """Everything but the annotations: labels, ``info`` and the images by id."""

    categories: list[dict[str, Any]] = field(default_factory=list)
    attributes: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    images: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    # Image entries that cannot be used: (image id or None, file name, reason).
    bad_images: list[tuple[int | None, str, str]] = field(default_factory=list)
    saw_images: bool = False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _chunks(path: Path, on_bytes: Callable[[int], None], check_nesting: bool = False) -> Iterator[bytes]:
    """The file's bytes in chunks; with ``check_nesting`` (the first pass), each is checked for
    nesting past the limit before ijson's item builders see it (they take time that grows with
    the square of the depth)."""
    nesting = JsonNesting(str(path)) if check_nesting else None
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            if nesting is not None:
                try:
                    nesting.feed(chunk)
                except InputRefused as exc:
                    raise ImportSourceError(str(exc)) from None
            yield chunk
            on_bytes(len(chunk))


def _stream_items(path: Path, prefix: str, on_bytes: Callable[[int], None]) -> Iterator[Any]:
    target = ijson.sendable_list()
    coro = ijson.items_coro(target, prefix, use_float=True)
    try:
        for chunk in _chunks(path, on_bytes):
            coro.send(chunk)
            yield from target
            del target[:]
        coro.close()
    except ijson.JSONError as exc:
        raise _json_error(path, exc) from exc
    yield from target


def _json_error(path: Path, exc: Exception) -> ImportSourceError:
    return ImportSourceError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})")


def _read_header(path: Path, on_bytes: Callable[[int], None]) -> _CocoHeader:
    header = _CocoHeader()
    prefixes = ("info", "categories.item", "attributes.item", "images.item")
    targets = {prefix: ijson.sendable_list() for prefix in prefixes}
    coros = [ijson.items_coro(target, prefix, use_float=True) for prefix, target in targets.items()]
    images = targets["images.item"]
    count = 0

    def take_images() -> None:
        # Reduced to (file, width, height) as they arrive, so raw entries never pile up.
        nonlocal count
        for entry in images:
            _add_image_entry(header, entry, count)
            count += 1
        del images[:]

    try:
        for chunk in _chunks(path, on_bytes, check_nesting=True):
            for coro in coros:
                coro.send(chunk)
            take_images()
        for coro in coros:
            coro.close()
    except ijson.JSONError as exc:
        raise _json_error(path, exc) from exc
    take_images()
    header.categories = list(targets["categories.item"])
    header.attributes = list(targets["attributes.item"])
    info = targets["info"][0] if targets["info"] else {}
    header.info = info if isinstance(info, dict) else {}
    header.saw_images = count > 0
    return header


def _add_image_entry(header: _CocoHeader, entry: Any, index: int) -> None:
    if not isinstance(entry, dict):
        header.bad_images.append((None, "", f"images[{index}] is not an object"))
        return
    image_id, file_name = entry.get("id"), entry.get("file_name")
    width, height = entry.get("width"), entry.get("height")
    name = file_name if isinstance(file_name, str) else ""
    if not _is_int(image_id):
        reason = f"images[{index}]: id {image_id!r} is not an integer"
    elif image_id in header.images:
        reason = f"image {image_id}: duplicate id in 'images' (the first entry is kept)"
        header.bad_images.append((None, name, reason))
        return
    elif not name:
        reason = f"image {image_id}: file_name {file_name!r} must be a non-empty path"
    elif size_problem(width, "width") or size_problem(height, "height"):
        reason = f"image {image_id}: {size_problem(width, 'width') or size_problem(height, 'height')}"
    else:
        header.images[image_id] = (name, width, height)
        return
    header.bad_images.append((image_id if _is_int(image_id) else None, name, reason))


def import_coco(
    engine: Engine,
    *,
    annotations_path: str | Path,
    images_dir: str | Path,
    name: str,
    strict: bool = False,
    image_check: str | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> ImportReport:
    """Import a COCO instances JSON (Fashionpedia too) with the images it names.

    Idempotent: annotations already stored are recognised and skipped; images without
    annotations are stored too. Bad annotations and images are rejected (``line`` None, the
    annotation id in the reason) and the import goes on, unless ``strict``, which stops at
    the first one having written nothing. ``should_stop`` is checked after each batch.
    """
    settings = get_settings()
    annotations_path, images_dir = Path(annotations_path), Path(images_dir)
    if not annotations_path.is_file():
        raise ImportSourceError(f"{annotations_path}: annotations file not found")
    if not images_dir.is_dir():
        raise ImportSourceError(f"{images_dir}: images folder not found")

    # Two passes over the file: progress counts the bytes of both.
    total = 2 * annotations_path.stat().st_size
    done = [0]

    def on_bytes(n: int) -> None:
        done[0] += n
        report(progress, done[0], total)

    header = _read_header(annotations_path, on_bytes)
    if not header.categories:
        raise ImportSourceError(
            f"{annotations_path}: no categories: a COCO instances file defines them in 'categories'"
        )
    if not header.saw_images:
        raise ImportSourceError(
            f"{annotations_path}: no images: a COCO instances file lists them in 'images'"
        )
    try:
        taxonomy = taxonomy_from_dict(
            {"categories": header.categories, "attributes": header.attributes, "info": header.info},
            str(annotations_path),
        )
    except TaxonomyError as exc:
        raise ImportSourceError(str(exc)) from exc

    writer = DatasetWriter(
        engine,
        name=name,
        format=FORMAT,
        images_root=images_dir,
        taxonomy=taxonomy,
        sources={"annotations": str(annotations_path), "images": str(images_dir)},
        strict=strict,
        image_check=image_check or settings.image_check,
        max_pixels=settings.max_image_pixels,
    )
    try:
        refused = _store_images(writer, header, settings.import_batch_rows)
        seen_ids: set[int] = set()
        batch: list[PendingAnnotation] = []
        for index, ann in enumerate(_stream_items(annotations_path, "annotations.item", on_bytes)):
            pending = _parse_annotation(ann, index, header, refused, seen_ids, writer)
            if pending is not None:
                batch.append(pending)
            if len(batch) >= settings.import_batch_rows:
                writer.write_batch(batch)
                batch = []
                writer.stop_if_asked(should_stop)
        writer.write_batch(batch)
        report(progress, total, total)
        return writer.finish()
    except BaseException:
        writer.close()
        raise


def _store_images(writer: DatasetWriter, header: _CocoHeader, batch_rows: int) -> dict[int, str]:
    """Store every usable image entry; returns the refused image ids with the reason."""
    refused: dict[int, str] = {}
    for image_id, file_name, reason in header.bad_images:
        writer.reject(None, file_name, reason)
        if image_id is not None and image_id not in header.images:
            refused[image_id] = reason
    entries = list(header.images.items())
    for start in range(0, len(entries), batch_rows):
        part = entries[start : start + batch_rows]
        problems = writer.add_images(info for _, info in part)
        for image_id, (file_name, _, _) in part:
            if file_name in problems:
                refused[image_id] = f"image {image_id}: {problems[file_name]}"
    return refused


def _parse_annotation(
    ann: Any,
    index: int,
    header: _CocoHeader,
    refused: dict[int, str],
    seen_ids: set[int],
    writer: DatasetWriter,
) -> PendingAnnotation | None:
    if not isinstance(ann, dict) or not _is_int(ann.get("id")):
        what = ann.get("id") if isinstance(ann, dict) else ann
        writer.reject(None, "", f"annotations[{index}]: id {what!r} is not an integer")
        return None
    ann_id: int = ann["id"]
    image_id = ann.get("image_id")
    image = header.images.get(image_id) if _is_int(image_id) else None
    file_name = image[0] if image is not None else ""
    try:
        if ann_id in seen_ids:
            raise _AnnotationError("duplicate id (an earlier annotation has it)")
        seen_ids.add(ann_id)
        if _is_int(image_id) and image_id in refused:
            raise _AnnotationError(refused[image_id])
        if image is None:
            raise _AnnotationError(f"image_id {image_id!r} is not in 'images'")
        _, width, height = image
        category = ann.get("category_id")
        if not _is_int(category) or not writer.knows_category(category):
            raise _AnnotationError(f"unknown category_id {category!r} (not in the file's 'categories')")
        attributes = ann.get("attribute_ids") or []
        if not isinstance(attributes, list) or not all(_is_int(a) for a in attributes):
            raise _AnnotationError(f"attribute_ids {attributes!r} must be a list of integers")
        unknown = writer.unknown_attributes(attributes)
        if unknown:
            raise _AnnotationError(f"unknown attribute id(s) {unknown} (not in the file's 'attributes')")
        runs = segmentation_runs(ann.get("segmentation"), height, width)
        if len(runs) == 0:
            raise _AnnotationError("empty mask: the segmentation covers no pixel")
    except (_AnnotationError, RLEError) as exc:
        writer.reject(None, file_name, f"annotation {ann_id}: {exc}")
        return None
    attrs = sorted(set(attributes))
    return PendingAnnotation(
        line=None,
        file_name=file_name,
        height=height,
        width=width,
        category_source_id=category,
        attribute_source_ids=attrs,
        counts=runs_to_counts(runs, height * width),
        area=runs_area(runs),
        bbox=runs_bbox(runs, height),
        # Keyed by the runs' iMaterialist text, as stores made before masks were kept as
        # COCO strings were, so re-importing into them is still recognised.
        source_key=source_key(str(ann_id), str(category), ",".join(map(str, attrs)), runs_to_text(runs)),
    )


def segmentation_runs(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The store's 0-based runs of a COCO segmentation (polygons, or RLE compressed or not).

    Raises :class:`~workbench.rle.RLEError` naming what is wrong with it.
    """
    if isinstance(segmentation, list):
        return _polygon_runs(segmentation, height, width)
    if not isinstance(segmentation, dict):
        raise RLEError(
            f"segmentation must be a list of polygons or an RLE object, not {type(segmentation).__name__}"
        )
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if size != [height, width]:
        raise RLEError(f"RLE size {size!r} disagrees with the image's [height, width] [{height}, {width}]")
    if isinstance(counts, str):
        if not counts.isascii():
            raise RLEError("non-ASCII character in compressed RLE counts")
        counts = coco_string_to_counts(counts)
    elif not (isinstance(counts, list) and all(_is_int(c) for c in counts)):
        raise RLEError("RLE counts must be a list of integers or a compressed string")
    total = sum(counts)
    if total != height * width:
        raise RLEError(
            f"RLE counts sum to {total}, not height x width = {height}x{width} = {height * width}"
        )
    return coco_counts_to_runs(counts)


def _polygon_runs(polygons: list[Any], height: int, width: int) -> np.ndarray:
    if not polygons:
        raise RLEError("segmentation has no polygons")
    for i, polygon in enumerate(polygons):
        if not isinstance(polygon, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in polygon
        ):
            raise RLEError(f"polygon {i} must be a list of numbers x1, y1, x2, y2, ...")
        if len(polygon) % 2:
            raise RLEError(f"polygon {i} has an odd number of coordinates ({len(polygon)})")
        if len(polygon) < 6:
            raise RLEError(f"polygon {i} has {len(polygon) // 2} point(s); a polygon needs at least 3")
    merged = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return coco_counts_to_runs(coco_string_to_counts(merged["counts"]))

