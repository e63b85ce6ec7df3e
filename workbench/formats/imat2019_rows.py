"""Parsing iMaterialist ``train.csv`` rows: fields checked, masks checked, measured and encoded.

This is the part of the importer (:mod:`workbench.formats.imat2019`) that runs in its parsing
processes, so it imports nothing heavier than numpy and (when it parses) the compiled
run-length loops.
"""

from __future__ import annotations

import csv
import ctypes
import gc
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np

from workbench.formats.records import MAX_IMAGE_SIDE, Rejection, class_key, size_problem, source_key
from workbench.rle import Encoded, RLEError, encode_fields, encode_texts

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


class _RowError(ValueError):
    pass


class _Row(NamedTuple):
    """A row whose fields passed their checks; its runs are checked with the chunk's."""

    line: int
    image_id: str
    height: int
    width: int
    classes: _Classes


class _Classes(NamedTuple):
    """What a row's ``ClassId`` (and ``AttributesIds``) say, checked against the label file."""

    category: int
    attributes: list[int]
    key: str  # the category and the sorted attribute ids: with the mask, the row's source key


def _csv_fields(line: str) -> list[str]:
    """The fields of one CSV line (without its ``\\n``), as :mod:`csv` reads them."""
    return next(csv.reader([line.removesuffix("\r")]), [])


@dataclass(frozen=True)
class RowParser:
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
        return self.parse_chunk(data)

    def parse_chunk(self, data: bytes) -> tuple[int, list[tuple], list[Rejection]]:
        """Parse and check whole lines of the CSV; ``(lines, rows, rejections in line order)``.

        Where the chunk has ``\\r`` only before ``\\n``, a compiled scan finds every line's
        fields and sizes (:func:`~workbench.rle_kernels.field_spans`), and the run-length
        masks are checked and encoded where they lie in ``data``
        (:func:`~workbench.rle.encode_fields`): that is where the time goes. Any line the scan
        does not take (quoted where it reads no quotes, bad) is read by :mod:`csv` and checked
        field by field, which words its rejection.
        """
        from workbench import rle_kernels  # numba: only where rows are parsed

        buffer = np.frombuffer(data, dtype=np.uint8)
        line_ends = np.flatnonzero(buffer == ord("\n"))
        if data and not data.endswith(b"\n"):
            line_ends = np.append(line_ends, len(data))
        col = self.columns
        plain = b"\r" not in data or data.count(b"\r") == data.count(b"\r\n")
        if plain:
            spans = rle_kernels.field_spans(buffer, line_ends, len(col), col["EncodedPixels"])
            heights = rle_kernels.parse_sizes(buffer, spans[:, col["Height"]])
            widths = rle_kernels.parse_sizes(buffer, spans[:, col["Width"]])
            # Sizes out of range are read again by csv, which words their rejection.
            taken = np.flatnonzero((heights > 0) & (widths > 0) & (heights <= MAX_IMAGE_SIDE) & (widths <= MAX_IMAGE_SIDE))
            empty = np.flatnonzero(spans[:, 0, 0] == -2)
        else:
            taken = empty = np.zeros(0, dtype=np.int64)
        encoded = encode_fields(
            data, spans[taken, col["EncodedPixels"], 0], spans[taken, col["EncodedPixels"], 1],
            heights[taken], widths[taken],
        ) if len(taken) else []

        rows: dict[int, tuple] = {}
        rejected: list[Rejection] = []
        # ClassId values repeat all through a file: each distinct one is checked once.
        classes_seen: dict[tuple[bytes, bytes], _Classes | str] = {}
        to_read = set(range(len(line_ends))).difference(empty.tolist())
        if len(taken):
            short = spans[taken][:, [col["ImageId"], col["ClassId"], col.get("AttributesIds", col["ClassId"])]]
            for line, (image, classes, attributes), height, width, result in zip(
                taken.tolist(), short.tolist(), heights[taken].tolist(), widths[taken].tolist(), encoded
            ):
                if isinstance(result, RLEError):
                    continue  # csv reads it, then its fields are checked before its runs
                raw = (data[classes[0] : classes[1]], data[attributes[0] : attributes[1]] if self.variant_2020 else b"")
                found = classes_seen.get(raw)
                if found is None:
                    found = classes_seen[raw] = self._checked_classes(raw[0].decode("utf-8", "replace"),
                                                                      raw[1].decode("utf-8", "replace"))
                image_id = data[image[0] : image[1]].decode("utf-8", errors="replace").strip()
                if isinstance(found, str) or not image_id:
                    continue
                rows[line] = self._pending(line, image_id, height, width, found, result)
                to_read.discard(line)
        self._read_lines(data, line_ends, sorted(to_read), rows, rejected)
        rejected.sort(key=lambda r: r.line or 0)
        return len(line_ends), [rows[line] for line in sorted(rows)], rejected

    def _read_lines(self, data: bytes, line_ends: np.ndarray, lines: list[int], rows: dict[int, tuple],
                    rejected: list[Rejection]) -> None:
        """Read ``lines`` of the chunk with :mod:`csv`, check each field, then their masks."""
        bounds = np.concatenate(([0], line_ends + 1)).tolist()
        checked: list[tuple[_Row, str]] = []
        classes_seen: dict[tuple[str, str], _Classes | str] = {}
        for line in lines:
            text = data[bounds[line] : bounds[line + 1]].decode("utf-8", errors="replace").rstrip("\n")
            try:
                fields = _csv_fields(text)
            except csv.Error as exc:
                rejected.append(Rejection(line, "", f"not a CSV line ({exc})"))
                continue
            if not fields:
                continue
            try:
                checked.append((self._parse_fields(line, fields, classes_seen), fields[self.columns["EncodedPixels"]]))
            except _RowError as exc:
                image_id = fields[self.columns["ImageId"]].strip() if len(fields) > self.columns["ImageId"] else ""
                rejected.append(Rejection(line, image_id, str(exc)))
        results = encode_texts([mask.strip() for _, mask in checked], [row.height for row, _ in checked],
                               [row.width for row, _ in checked])
        for (row, _), result in zip(checked, results):
            if isinstance(result, RLEError):
                rejected.append(Rejection(row.line, row.image_id, str(result)))
            else:
                rows[row.line] = self._pending(row.line, row.image_id, row.height, row.width, row.classes, result)

    def _pending(self, line: int, image_id: str, height: int, width: int, classes: _Classes,
                 encoded: Encoded) -> tuple:
        """A :class:`PendingAnnotation`'s fields as a plain tuple."""
        return (line, _file_name(image_id, self.variant_2020), height, width, classes.category,
                classes.attributes, encoded.counts, encoded.area, encoded.bbox,
                source_key(classes.key, encoded.counts))

    def _checked_classes(self, class_id: str, attribute_ids: str) -> _Classes | str:
        try:
            return self._classes(class_id, attribute_ids)
        except _RowError as exc:
            return str(exc)

    def _parse_fields(self, line: int, fields: list[str], classes_seen: dict[tuple[str, str], _Classes | str]) -> _Row:
        """Check a row's fields, all but its runs (checked with the whole chunk's)."""
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
            classes = classes_seen[raw] = self._checked_classes(*raw)
        if isinstance(classes, str):
            raise _RowError(classes)
        return _Row(line, image_id, height, width, classes)

    def _classes(self, class_id: str, attribute_ids: str) -> _Classes:
        category, attributes = self._class_ids(class_id.strip(), attribute_ids.strip())
        if category not in self.categories:
            raise _RowError(f"unknown category id {category} (not in the label file)")
        unknown = [a for a in attributes if a not in self.attributes]
        if unknown:
            raise _RowError(f"unknown attribute id(s) {unknown} (not in the label file)")
        return _Classes(category, attributes, class_key(category, attributes))

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
    if len(value) > 40:  # int() of a huge digit string costs time, and no image side is that long
        raise _RowError(f"{column} {value[:20]!r}... ({len(value)} characters) is not an image side")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _RowError(f"{column} {value!r} is not an integer") from None
    problem = size_problem(number, column)
    if problem:
        raise _RowError(problem)
    return number


def _file_name(image_id: str, variant_2020: bool) -> str:
    if variant_2020 and not PurePosixPath(image_id).suffix:
        return image_id + ".jpg"
    return image_id


def set_up_parsing_process() -> None:
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
    mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's most; a default chunk's buffers are about 20 MB
