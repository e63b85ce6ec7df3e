"""iMaterialist Fashion importer: the 2019 (FGVC6) ``train.csv`` and its 2020 variant.

2019: ``ImageId, EncodedPixels, Height, Width, ClassId`` with ``ClassId`` = ``"6"`` or
``"6_28_77"`` (category, then attribute ids). 2020: ``ImageId`` without ``.jpg``, an integer
``ClassId`` and a comma-separated ``AttributesIds`` column.

The CSV is streamed in chunks of lines (never loaded whole). Parsing and checking a chunk's
run-length masks is CPU work, so on a large file it runs in worker processes (spawned, so
the same on Linux, macOS and Windows) while this process checks image files and writes to
the store; at most a few chunks are in flight, which bounds memory. Every bad row is reported
with its 1-based line number (header = line 1). A record never spans lines in this format.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sqlalchemy import Engine

from workbench.formats.store import (
    DatasetWriter,
    ImportReport,
    ImportSourceError,
    PendingAnnotation,
    Rejection,
    source_key,
)
from workbench.progress import ProgressFn, report
from workbench.rle import RLEError, measure_runs
from workbench.settings import get_settings
from workbench.taxonomy import TaxonomyError, load_taxonomy

REQUIRED_COLUMNS = ("ImageId", "EncodedPixels", "Height", "Width", "ClassId")
FORMAT = "imat2019"
# Below this size worker processes cost more to start than they save.
PARALLEL_MIN_BYTES = 32 * 1024 * 1024


class _RowError(ValueError):
    pass


@dataclass(frozen=True)
class _RowParser:
    """Everything a worker needs to parse rows: the column layout and the known ids."""

    columns: dict[str, int]
    variant_2020: bool
    categories: frozenset[int]
    attributes: frozenset[int]

    def parse_chunk(
        self, first_line: int, lines: list[bytes]
    ) -> tuple[list[PendingAnnotation], list[Rejection]]:
        """Parse and check the rows of one chunk of lines."""
        pending: list[PendingAnnotation] = []
        rejected: list[Rejection] = []
        text_lines = (raw.decode("utf-8", errors="replace") for raw in lines)
        for offset, fields in enumerate(csv.reader(text_lines)):
            line = first_line + offset
            if not fields:
                continue
            try:
                pending.append(self._parse_fields(fields, line))
            except (_RowError, RLEError) as exc:
                image_id = fields[self.columns["ImageId"]].strip() if len(fields) > self.columns["ImageId"] else ""
                rejected.append(Rejection(line, image_id, str(exc)))
        return pending, rejected

    def _parse_fields(self, fields: list[str], line: int) -> PendingAnnotation:
        if len(fields) != len(self.columns):
            raise _RowError(f"{len(fields)} fields, expected {len(self.columns)}")
        col = self.columns
        image_id = fields[col["ImageId"]].strip()
        if not image_id:
            raise _RowError("empty ImageId")
        height = _positive_int(fields[col["Height"]], "Height")
        width = _positive_int(fields[col["Width"]], "Width")
        category, attributes = self._class_ids(fields)
        if category not in self.categories:
            raise _RowError(f"unknown category id {category} (not in the label file)")
        unknown = [a for a in attributes if a not in self.attributes]
        if unknown:
            raise _RowError(f"unknown attribute id(s) {unknown} (not in the label file)")
        text = fields[col["EncodedPixels"]].strip()
        area, bbox = measure_runs(text, height, width)
        class_key = f"{category}:{','.join(map(str, attributes))}"
        return PendingAnnotation(
            line=line,
            file_name=_file_name(image_id, self.variant_2020),
            height=height,
            width=width,
            category_source_id=category,
            attribute_source_ids=attributes,
            rle=text,
            area=area,
            bbox=bbox,
            source_key=source_key(image_id, class_key, text),
        )

    def _class_ids(self, fields: list[str]) -> tuple[int, list[int]]:
        raw = fields[self.columns["ClassId"]].strip()
        try:
            if self.variant_2020:
                attrs_raw = fields[self.columns["AttributesIds"]].strip()
                attrs = [] if attrs_raw.lower() in ("", "nan") else [int(a) for a in attrs_raw.split(",") if a.strip()]
                return int(raw), attrs
            parts = [int(p) for p in raw.split("_")]
        except ValueError:
            raise _RowError(
                f"ClassId {raw!r} is not a category id (optionally followed by _attribute ids)"
            ) from None
        return parts[0], parts[1:]


def _positive_int(value: str, column: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _RowError(f"{column} {value!r} is not an integer") from None
    if number <= 0:
        raise _RowError(f"{column} must be positive, not {number}")
    return number


def _file_name(image_id: str, variant_2020: bool) -> str:
    if variant_2020 and not PurePosixPath(image_id).suffix:
        return image_id + ".jpg"
    return image_id


def _read_chunks(handle: BinaryIO, rows: int) -> Iterator[tuple[int, list[bytes], int]]:
    """``(first line number, lines, bytes read so far)`` after the header (line 1)."""
    line_no = 2
    consumed = handle.tell()
    chunk: list[bytes] = []
    for raw in handle:
        consumed += len(raw)
        chunk.append(raw)
        if len(chunk) >= rows:
            yield line_no, chunk, consumed
            line_no += len(chunk)
            chunk = []
    if chunk:
        yield line_no, chunk, consumed


def _parsed_chunks(
    parser: _RowParser, chunks: Iterator[tuple[int, list[bytes], int]], workers: int
) -> Iterator[tuple[list[PendingAnnotation], list[Rejection], int]]:
    """Parse chunks in order, in ``workers`` spawned processes (0: in this process)."""
    if workers == 0:
        for first, lines, consumed in chunks:
            yield (*parser.parse_chunk(first, lines), consumed)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        in_flight: deque[tuple[Future, int]] = deque()
        for first, lines, consumed in chunks:
            in_flight.append((pool.submit(parser.parse_chunk, first, lines), consumed))
            if len(in_flight) > 2 * workers:
                future, done = in_flight.popleft()
                yield (*future.result(), done)
        while in_flight:
            future, done = in_flight.popleft()
            yield (*future.result(), done)


def _header(handle: BinaryIO, csv_path: Path) -> list[str]:
    first = handle.readline().decode("utf-8-sig").strip()
    header = next(csv.reader([first]), [])
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ImportSourceError(
            f"{csv_path} line 1: missing column(s) {', '.join(missing)}; expected "
            f"{', '.join(REQUIRED_COLUMNS)} (plus AttributesIds in the 2020 layout)"
        )
    return header


def import_imat2019(
    engine: Engine,
    *,
    csv_path: str | Path,
    labels_path: str | Path,
    images_dir: str | Path,
    name: str,
    strict: bool = False,
    image_check: str | None = None,
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> ImportReport:
    """Import an iMaterialist ``train.csv`` (2019 or 2020 layout) with its label file.

    Idempotent: rows already stored are recognised and skipped. Bad rows are rejected with
    their line number and the import goes on, unless ``strict``, which stops at the first one
    having written nothing (:class:`~workbench.formats.store.StrictImportError`).
    ``workers`` parsing processes (default: one per core but one, for files over 32 MB).
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
    if workers is None:
        cores = os.cpu_count() or 1
        workers = max(1, cores - 1) if total_bytes >= PARALLEL_MIN_BYTES and cores > 1 else 0

    with csv_path.open("rb") as handle:
        header = _header(handle, csv_path)
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
        parser = _RowParser(
            columns={column: i for i, column in enumerate(header)},
            variant_2020="AttributesIds" in header,
            categories=frozenset(c.id for c in taxonomy.categories),
            attributes=frozenset(a.id for a in taxonomy.attributes),
        )
        try:
            chunks = _read_chunks(handle, settings.import_batch_rows)
            for pending, rejected, consumed in _parsed_chunks(parser, chunks, workers):
                if rejected and strict:
                    # Rows before the first bad one still get their image checks first, so
                    # strict mode reports the earliest problem of the file.
                    first_bad = rejected[0].line or 0
                    writer.write_batch([p for p in pending if (p.line or 0) < first_bad])
                for rejection in rejected:
                    writer.reject(rejection.line, rejection.image_id, rejection.reason)
                writer.write_batch(pending)
                report(progress, consumed, total_bytes)
            report(progress, total_bytes, total_bytes)
            return writer.finish()
        except BaseException:
            writer.close()
            raise
