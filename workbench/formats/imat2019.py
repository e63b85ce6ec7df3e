"""iMaterialist Fashion importer: the 2019 (FGVC6) ``train.csv`` and its 2020 variant.

2019: ``ImageId, EncodedPixels, Height, Width, ClassId`` with ``ClassId`` = ``"6"`` or
``"6_28_77"`` (category, then attribute ids). 2020: ``ImageId`` without ``.jpg``, an integer
``ClassId`` and a comma-separated ``AttributesIds`` column.

The CSV is streamed in chunks of whole lines (never loaded whole). Parsing and checking a
chunk's run-length masks (:mod:`workbench.formats.imat2019_rows`) is CPU work, so on a large
file it runs in worker processes
(spawned, so the same on Linux, macOS and Windows), each reading its own byte range of the
file, while this process checks image files and writes to the store; at most a few chunks are
in flight, which bounds memory. Every bad row is reported with its 1-based line number
(header = line 1). A record never spans lines in this format (a quoted field ends with its
line).
"""

from __future__ import annotations

import csv
import gc
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, NamedTuple

from sqlalchemy import Engine

from workbench.formats.imat2019_rows import RowParser, set_up_parsing_process
from workbench.formats.records import PendingAnnotation, Rejection
from workbench.formats.store import DatasetWriter, ImportReport, ImportSourceError
from workbench.guard import InputRefused, decode_text
from workbench.processes import watched_process_pool
from workbench.progress import ProgressFn, StopFn, report
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
# About the size of an iMaterialist row (a few kB of runs): sizes a parsing chunk.
TYPICAL_ROW_BYTES = 4096
MAX_HEADER_BYTES = 64 * 1024


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
    parser: RowParser, csv_path: Path, ranges: Iterator[tuple[int, int]], workers: int
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
    parser: RowParser, csv_path: Path, ranges: Iterator[tuple[int, int]], workers: int
) -> Iterator[tuple[int, list[tuple], list[Rejection], int]]:
    if workers == 0:
        for start, end in ranges:
            yield (*parser.parse_range(csv_path, start, end), end)
        return
    with watched_process_pool(workers, set_up_parsing_process) as pool:  # they end with this process
        in_flight: deque[tuple[Future, int]] = deque()
        for start, end in ranges:
            in_flight.append((pool.submit(parser.parse_range, csv_path, start, end), end))
            if len(in_flight) > 2 * workers:
                future, done = in_flight.popleft()
                yield (*future.result(), done)
        while in_flight:
            future, done = in_flight.popleft()
            yield (*future.result(), done)


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
    try:
        # A bounded read: a binary file may have no line end for gigabytes.
        first = decode_text(handle.readline(MAX_HEADER_BYTES), f"{csv_path} line 1").strip()
    except InputRefused as exc:
        raise ImportSourceError(f"{exc} (a train.csv)") from None
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
        parser = RowParser(
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
