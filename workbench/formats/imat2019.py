"""iMaterialist Fashion importer: the 2019 (FGVC6) ``train.csv`` and its 2020 variant.

2019: ``ImageId, EncodedPixels, Height, Width, ClassId`` with ``ClassId`` = ``"6"`` or
``"6_28_77"`` (category, then attribute ids). 2020: ``ImageId`` without ``.jpg``, an integer
``ClassId`` and a comma-separated ``AttributesIds`` column.

The CSV is streamed in chunks of whole lines (never loaded whole). Parsing and checking a
chunk's run-length masks is CPU work, so on a large file it runs in worker processes
(spawned, so the same on Linux, macOS and Windows), each reading its own byte range of the
file, while this process checks image files and writes to the store; at most a few chunks are
in flight, which bounds memory. Every bad row is reported with its 1-based line number
(header = line 1). A record never spans lines in this format (a quoted field ends with its
line).
"""

from __future__ import annotations

import csv
import ctypes
import gc
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, NamedTuple

from sqlalchemy import Engine

from workbench.formats.store import (
    DatasetWriter,
    ImportReport,
    ImportSourceError,
    PendingAnnotation,
    Rejection,
    source_key,
)
from workbench.progress import ProgressFn, StopFn, report
from workbench.rle import RLEError, measure_runs_many
from workbench.settings import get_settings
from workbench.taxonomy import TaxonomyError, load_taxonomy

REQUIRED_COLUMNS = ("ImageId", "EncodedPixels", "Height", "Width", "ClassId")
FORMAT = "imat2019"
# Below this size worker processes cost more to start than they save.
PARALLEL_MIN_BYTES = 32 * 1024 * 1024
# Parsing a chunk costs about as much CPU as writing it here, so two parsing processes keep
# this one (the store's single writer) busy on any machine; more would only wait. On two
# cores the three processes share them, which measured faster than one parsing process.
MAX_DEFAULT_WORKERS = 2
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
# About the size of an iMaterialist row (a few kB of runs): sizes a parsing chunk.
TYPICAL_ROW_BYTES = 4096


class _RowError(ValueError):
    pass


class _Row(NamedTuple):
    """A row whose fields passed their checks; its runs are measured with the chunk's."""

    line: int
    image_id: str
    height: int
    width: int
    classes: _Classes
    text: str


class _Classes(NamedTuple):
    """What a row's ``ClassId`` (and ``AttributesIds``) say, checked against the label file."""

    category: int
    attributes: list[int]
    key: str  # part of the row's source key


def _csv_fields(line: str) -> list[str]:
    """The fields of one CSV line (without its ``\\n``), as :mod:`csv` reads them."""
    if line.endswith("\r"):
        line = line[:-1]
    return next(csv.reader([line]), [])


@dataclass(frozen=True)
class _RowParser:
    """Everything a worker needs to parse rows: the column layout and the known ids."""

    columns: dict[str, int]
    variant_2020: bool
    categories: frozenset[int]
    attributes: frozenset[int]

    def parse_range(self, csv_path: Path, start: int, end: int) -> tuple[int, list[tuple], list[Rejection]]:
        """Read and parse bytes ``start:end`` of the CSV (whole lines).

        Returns ``(lines read, rows, rejected)`` with line numbers counted from the range's
        first line as 0; ``rows`` are :class:`PendingAnnotation` fields as plain tuples, which
        cross between processes several times faster than named tuples.
        """
        with csv_path.open("rb") as handle:
            handle.seek(start)
            data = handle.read(end - start)
        text = data.decode("utf-8", errors="replace")
        lines = text.split("\n")
        if lines[-1] == "":  # the range ends with a line end, not a line
            lines.pop()
        pending, rejected = self.parse_lines(0, lines, quoted='"' in text or "\r" in text)
        return len(lines), [tuple(p) for p in pending], rejected

    def parse_lines(
        self, first_line: int, lines: list[str], quoted: bool = True
    ) -> tuple[list[PendingAnnotation], list[Rejection]]:
        """Parse and check lines (without their line end); rejections in line order.

        Every row's fields are checked one by one, then the run-length masks of all the rows
        at once (:func:`~workbench.rle.measure_runs_many`), which is where the time goes.
        ``quoted=False`` says no line holds a quote or a carriage return, so a plain split
        gives csv's fields.
        """
        rejected: list[Rejection] = []
        rows: list[_Row] = []
        # ClassId values repeat all through a file: each distinct one is checked once.
        classes_seen: dict[tuple[str, str], _Classes | str] = {}
        for line, text in enumerate(lines, start=first_line):
            try:
                fields = _csv_fields(text) if quoted else self._split(text)
            except csv.Error as exc:
                rejected.append(Rejection(line, "", f"not a CSV line ({exc})"))
                continue
            if not fields:
                continue
            try:
                rows.append(self._parse_fields(line, fields, classes_seen))
            except _RowError as exc:
                image_id = fields[self.columns["ImageId"]].strip() if len(fields) > self.columns["ImageId"] else ""
                rejected.append(Rejection(line, image_id, str(exc)))
        measured = measure_runs_many(
            [row.text for row in rows], [row.height for row in rows], [row.width for row in rows]
        )
        pending: list[PendingAnnotation] = []
        for row, result in zip(rows, measured):
            if isinstance(result, RLEError):
                rejected.append(Rejection(row.line, row.image_id, str(result)))
                continue
            area, bbox = result
            pending.append(
                PendingAnnotation(
                    line=row.line,
                    file_name=_file_name(row.image_id, self.variant_2020),
                    height=row.height,
                    width=row.width,
                    category_source_id=row.classes.category,
                    attribute_source_ids=row.classes.attributes,
                    rle=row.text,
                    area=area,
                    bbox=bbox,
                    source_key=source_key(row.image_id, row.classes.key, row.text),
                )
            )
        rejected.sort(key=lambda r: r.line or 0)
        return pending, rejected

    def _split(self, text: str) -> list[str]:
        """The fields of a line without quotes: ``text.split(",")``, scanning only the short
        fields around the long EncodedPixels one (a plain split walks all of it)."""
        if not text:
            return []
        before = self.columns["EncodedPixels"]
        after = len(self.columns) - before - 1
        head = text.split(",", before)
        if len(head) <= before:
            return head
        tail = head.pop().rsplit(",", after)
        if len(tail) <= after or "," in tail[0]:
            return text.split(",")  # not the expected number of fields
        return head + tail

    def _parse_fields(self, line: int, fields: list[str], classes_seen: dict[tuple[str, str], _Classes | str]) -> _Row:
        """Check a row's fields, all but its runs (measured with the whole chunk's)."""
        col = self.columns
        if len(fields) != len(col):
            raise _RowError(f"{len(fields)} fields, expected {len(col)}")
        image_id = fields[col["ImageId"]].strip()
        if not image_id:
            raise _RowError("empty ImageId")
        height = _positive_int(fields[col["Height"]], "Height")
        width = _positive_int(fields[col["Width"]], "Width")
        raw = (fields[col["ClassId"]], fields[col["AttributesIds"]] if self.variant_2020 else "")
        classes = classes_seen.get(raw)
        if classes is None:
            try:
                classes = self._classes(*raw)
            except _RowError as exc:
                classes = str(exc)
            classes_seen[raw] = classes
        if isinstance(classes, str):
            raise _RowError(classes)
        return _Row(line, image_id, height, width, classes, fields[col["EncodedPixels"]].strip())

    def _classes(self, class_id: str, attribute_ids: str) -> _Classes:
        category, attributes = self._class_ids(class_id.strip(), attribute_ids.strip())
        if category not in self.categories:
            raise _RowError(f"unknown category id {category} (not in the label file)")
        unknown = [a for a in attributes if a not in self.attributes]
        if unknown:
            raise _RowError(f"unknown attribute id(s) {unknown} (not in the label file)")
        return _Classes(category, attributes, f"{category}:{','.join(map(str, attributes))}")

    def _class_ids(self, raw: str, attrs_raw: str) -> tuple[int, list[int]]:
        try:
            if self.variant_2020:
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


def _byte_ranges(handle: BinaryIO, start: int, size: int, chunk_bytes: int) -> Iterator[tuple[int, int]]:
    """Consecutive ``(start, end)`` byte ranges of about ``chunk_bytes``, each ending at a line end."""
    while start < size:
        end = size
        if start + chunk_bytes < size:
            handle.seek(start + chunk_bytes)
            handle.readline()  # on to the end of the line the range would cut
            end = min(handle.tell(), size)
        yield start, end
        start = end


class _ParsedChunk(NamedTuple):
    pending: list[PendingAnnotation]
    rejected: list[Rejection]
    end: int  # bytes of the CSV read once this chunk is written


def _parsed_chunks(
    parser: _RowParser, csv_path: Path, ranges: Iterator[tuple[int, int]], workers: int
) -> Iterator[_ParsedChunk]:
    """Parse the ranges in order, in ``workers`` spawned processes (0: in this process).

    A worker reads its range itself, so only parsed rows cross between processes; it counts
    lines from its range's start, and line numbers become the file's here, in order.
    """
    base = 2  # the header is line 1
    for lines, rows, rejected, end in _parse_ranges(parser, csv_path, ranges, workers):
        yield _ParsedChunk(
            [PendingAnnotation._make((base + row[0],) + row[1:]) for row in rows],
            [Rejection(base + r.line, r.image_id, r.reason) for r in rejected],
            end,
        )
        base += lines


def _parse_ranges(
    parser: _RowParser, csv_path: Path, ranges: Iterator[tuple[int, int]], workers: int
) -> Iterator[tuple[int, list[tuple], list[Rejection], int]]:
    if workers == 0:
        for start, end in ranges:
            yield (*parser.parse_range(csv_path, start, end), end)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_set_up_parsing_process) as pool:
        in_flight: deque[tuple[Future, int]] = deque()
        for start, end in ranges:
            in_flight.append((pool.submit(parser.parse_range, csv_path, start, end), end))
            if len(in_flight) > 2 * workers:
                future, done = in_flight.popleft()
                yield (*future.result(), done)
        while in_flight:
            future, done = in_flight.popleft()
            yield (*future.result(), done)


def _set_up_parsing_process() -> None:
    """Tune a parsing process (this module's own, so its settings touch nothing else).

    Every chunk allocates the same tens of MB of buffers and arrays again. By default glibc's
    malloc maps each large one afresh and unmaps it when freed, so every chunk touches new
    pages: on the 1.6 GB benchmark a million page faults, a fifth of the parsing's CPU time.
    With buffers up to 32 MB taken from the heap, and the heap kept, the pages are reused
    (where malloc is not glibc's this does nothing). Parsing makes millions of short-lived
    tuples and no reference cycles, so the cyclic garbage collector only costs time here.
    """
    gc.disable()
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):
        return
    mallopt(_M_TRIM_THRESHOLD, 256 * 2**20)
    mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)  # a default chunk's largest buffer is about 12 MB


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while an import runs (as it was after).

    An import makes millions of short-lived tuples and no reference cycles; the collector's
    passes over them and the rest of the process took a tenth of the importing process's
    time on the 1.6 GB benchmark. Process-wide: other threads' cycles wait for the end.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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
    chunk_bytes: int | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> ImportReport:
    """Import an iMaterialist ``train.csv`` (2019 or 2020 layout) with its label file.

    Idempotent: rows already stored are recognised and skipped. Bad rows are rejected with
    their line number and the import goes on, unless ``strict``, which stops at the first one
    having written nothing (:class:`~workbench.formats.store.StrictImportError`).
    ``workers`` parsing processes (default: two, or none on one core or under 32 MB), each
    parsing ``chunk_bytes`` of the CSV at a time (default: ``import_batch_rows`` rows of a
    typical size); rows are written in batches of ``import_batch_rows``. ``should_stop`` is
    checked after each chunk (see :meth:`DatasetWriter.stop_if_asked`).
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
    batch_rows = max(1, settings.import_batch_rows)
    chunk_bytes = max(1, chunk_bytes or batch_rows * TYPICAL_ROW_BYTES)
    if workers is None:
        cores = os.cpu_count() or 1
        workers = min(MAX_DEFAULT_WORKERS, cores) if total_bytes >= PARALLEL_MIN_BYTES and cores > 1 else 0

    with csv_path.open("rb") as handle, _cyclic_gc_paused():
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
            ranges = _byte_ranges(handle, handle.tell(), total_bytes, chunk_bytes)
            for pending, rejected, end in _parsed_chunks(parser, csv_path, ranges, workers):
                if rejected and strict:
                    # Rows before the first bad one still get their image checks first, so
                    # strict mode reports the earliest problem of the file.
                    first_bad = rejected[0].line or 0
                    writer.write_batch([p for p in pending if (p.line or 0) < first_bad])
                for rejection in rejected:
                    writer.reject(rejection.line, rejection.image_id, rejection.reason)
                for i in range(0, len(pending), batch_rows):
                    writer.write_batch(pending[i : i + batch_rows])
                report(progress, end, total_bytes)
                writer.stop_if_asked(should_stop)
            report(progress, total_bytes, total_bytes)
            return writer.finish()
        except BaseException:
            writer.close()
            raise
