"""iMaterialist Fashion importer: the 2019 (FGVC6) ``train.csv`` and its 2020 variant.

2019: ``ImageId, EncodedPixels, Height, Width, ClassId`` with ``ClassId`` = ``"6"`` or
``"6_28_77"`` (category, then attribute ids). 2020: ``ImageId`` without ``.jpg``, an integer
``ClassId`` and a comma-separated ``AttributesIds`` column. The CSV is streamed line by line
(never loaded whole); every bad row is reported with its 1-based line number (header = 1).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from sqlalchemy import Engine

from workbench.formats.store import (
    DatasetWriter,
    ImportReport,
    ImportSourceError,
    PendingAnnotation,
    source_key,
)
from workbench.progress import ProgressFn, report
from workbench.rle import RLEError, parse_runs, runs_area, runs_bbox
from workbench.settings import get_settings
from workbench.taxonomy import TaxonomyError, load_taxonomy

REQUIRED_COLUMNS = ("ImageId", "EncodedPixels", "Height", "Width", "ClassId")
FORMAT = "imat2019"


class _RowError(ValueError):
    pass


def _count_bytes(handle, counter: list[int]) -> Iterator[str]:
    for raw in handle:
        counter[0] += len(raw)
        yield raw.decode("utf-8-sig" if counter[0] == len(raw) else "utf-8")


def _positive_int(value: str, column: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _RowError(f"{column} {value!r} is not an integer") from None
    if number <= 0:
        raise _RowError(f"{column} must be positive, not {number}")
    return number


def _class_ids(row: dict[str, str], variant_2020: bool) -> tuple[int, list[int]]:
    raw = (row.get("ClassId") or "").strip()
    try:
        if variant_2020:
            attrs_raw = (row.get("AttributesIds") or "").strip()
            attrs = [int(a) for a in attrs_raw.split(",") if a.strip()] if attrs_raw.lower() != "nan" else []
            return int(raw), attrs
        parts = [int(p) for p in raw.split("_")]
    except ValueError:
        raise _RowError(f"ClassId {raw!r} is not a category id (optionally followed by _attribute ids)") from None
    return parts[0], parts[1:]


def _file_name(image_id: str, variant_2020: bool) -> str:
    if variant_2020 and not PurePosixPath(image_id).suffix:
        return image_id + ".jpg"
    return image_id


def import_imat2019(
    engine: Engine,
    *,
    csv_path: str | Path,
    labels_path: str | Path,
    images_dir: str | Path,
    name: str,
    strict: bool = False,
    image_check: str | None = None,
    progress: ProgressFn | None = None,
) -> ImportReport:
    """Import an iMaterialist ``train.csv`` (2019 or 2020 layout) with its label file.

    Idempotent: rows already stored are recognised and skipped. Bad rows are rejected with
    their line number and the import goes on, unless ``strict``, which stops at the first one
    having written nothing (:class:`~workbench.formats.store.StrictImportError`).
    """
    settings = get_settings()
    csv_path, images_dir = Path(csv_path), Path(images_dir)
    if not csv_path.is_file():
        raise ImportSourceError(f"{csv_path}: CSV file not found")
    if not images_dir.is_dir():
        raise ImportSourceError(f"{images_dir}: images folder not found")
    try:
        taxonomy = load_taxonomy(labels_path)
    except TaxonomyError as exc:
        raise ImportSourceError(str(exc)) from exc

    total_bytes = csv_path.stat().st_size
    with csv_path.open("rb") as handle:
        consumed = [0]
        reader = csv.DictReader(_count_bytes(handle, consumed))
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ImportSourceError(
                f"{csv_path} line 1: missing column(s) {', '.join(missing)}; expected "
                f"{', '.join(REQUIRED_COLUMNS)} (plus AttributesIds in the 2020 layout)"
            )
        variant_2020 = "AttributesIds" in header
        writer = DatasetWriter(
            engine,
            name=name,
            format=FORMAT,
            images_root=images_dir,
            taxonomy=taxonomy,
            sources={"csv": str(csv_path), "labels": str(labels_path), "images": str(images_dir)},
            strict=strict,
            image_check=image_check or settings.image_check,
            max_pixels=settings.max_image_pixels,
        )
        try:
            batch: list[PendingAnnotation] = []
            for row in reader:
                pending = _parse_row(row, reader.line_num, variant_2020, writer)
                if pending is not None:
                    batch.append(pending)
                if len(batch) >= settings.import_batch_rows:
                    writer.write_batch(batch)
                    batch = []
                    report(progress, consumed[0], total_bytes)
            writer.write_batch(batch)
            report(progress, total_bytes, total_bytes)
            return writer.finish()
        except BaseException:
            writer.close()
            raise


def _parse_row(
    row: dict[str, str], line: int, variant_2020: bool, writer: DatasetWriter
) -> PendingAnnotation | None:
    image_id = (row.get("ImageId") or "").strip()
    try:
        if not image_id:
            raise _RowError("empty ImageId")
        if None in row:
            raise _RowError(f"{len(row[None]) + len(row) - 1} fields, expected {len(row) - 1}")
        height = _positive_int(row["Height"], "Height")
        width = _positive_int(row["Width"], "Width")
        category, attributes = _class_ids(row, variant_2020)
        if not writer.knows_category(category):
            raise _RowError(f"unknown category id {category} (not in the label file)")
        unknown = writer.unknown_attributes(attributes)
        if unknown:
            raise _RowError(f"unknown attribute id(s) {unknown} (not in the label file)")
        text = row["EncodedPixels"] or ""
        runs = parse_runs(text, height, width)
    except (_RowError, RLEError) as exc:
        writer.reject(line, image_id, str(exc))
        return None
    class_key = f"{category}:{','.join(map(str, attributes))}"
    return PendingAnnotation(
        line=line,
        file_name=_file_name(image_id, variant_2020),
        height=height,
        width=width,
        category_source_id=category,
        attribute_source_ids=attributes,
        rle=" ".join(text.split()),
        area=runs_area(runs),
        bbox=runs_bbox(runs, height),
        source_key=source_key(image_id, class_key, text.strip()),
    )
