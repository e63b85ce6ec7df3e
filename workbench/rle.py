"""Run-length masks: iMaterialist's text, the store's COCO strings, and conversions.

iMaterialist writes a mask of an ``height x width`` image as a text of space-separated pairs
``start length``: starts are 1-based, pixels are numbered top-to-bottom then left-to-right
(column-major), runs are in ascending order and do not overlap. Inside the workbench a parsed
mask is an ``(n, 2)`` int64 array of 0-based ``[start, length]`` rows ("runs"). The store keeps
masks as COCO compressed RLE strings (pycocotools' ``counts``, over the same column-major
pixels): :func:`runs_to_counts` and :func:`counts_to_runs` convert, and :func:`encode_fields`
turns iMaterialist text into them by the gigabyte.

Area and bounding box come straight from the runs, so statistics never decode a mask.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

_DIGITS_AND_SPACES = re.compile(r"[0-9\s]*", re.ASCII)


class RLEError(ValueError):
    """A run-length text that cannot be a mask of the given image."""


def _checked_pairs(text: str, height: int, width: int) -> np.ndarray:
    """The ``(n, 2)`` 1-based ``[start, length]`` pairs of a run-length text, all checked."""
    text = text.strip()
    if not text:
        raise RLEError("empty mask: EncodedPixels has no runs")
    if not _DIGITS_AND_SPACES.fullmatch(text):
        bad = next(t for t in text.split() if not t.isascii() or not t.isdigit())
        raise RLEError(f"non-numeric token {bad!r} in EncodedPixels")
    values = np.fromstring(text, dtype=np.int64, sep=" ")
    if values.size % 2:
        raise RLEError(
            f"odd number of tokens ({values.size}): EncodedPixels must be 'start length' pairs"
        )
    pairs = values.reshape(-1, 2)
    starts, lengths = pairs[:, 0], pairs[:, 1]
    if starts.min() < 1:
        raise RLEError("start 0: run starts are 1-based (the first pixel is 1)")
    if lengths.min() < 1:
        i = int(np.argmax(lengths < 1))
        raise RLEError(f"run {int(starts[i])} {int(lengths[i])} has length 0")
    ends = starts + lengths  # one past the last pixel of each run, 1-based
    if pairs.shape[0] > 1 and (starts[1:] < ends[:-1]).any():
        i = int(np.argmax(starts[1:] < ends[:-1])) + 1
        raise RLEError(
            f"run {int(starts[i])} {int(lengths[i])} starts before the previous run ends: "
            "runs must be in ascending order and must not overlap"
        )
    total = height * width
    # Compared without computing start + length, which a huge token would take past int64
    # (and whose wrapped sum would slip through the ordering check above).
    past = lengths > total + 1 - starts
    if past.any():
        # Runs are ascending, so the last one ends last; only an overflowing one is earlier.
        i = -1 if past[-1] else int(np.argmax(past))
        raise RLEError(
            f"run {int(starts[i])} {int(lengths[i])} goes past the image "
            f"({width}x{height} = {total} pixels)"
        )
    return pairs


def parse_runs(text: str, height: int, width: int) -> np.ndarray:
    """Parse and check an iMaterialist run-length text; return 0-based ``(n, 2)`` runs.

    Raises :class:`RLEError` naming the problem: empty, non-numeric tokens, an odd number of
    tokens, a start of 0, an empty run, runs out of order or overlapping, or a run past the
    end of the image.
    """
    runs = _checked_pairs(text, height, width).copy()
    runs[:, 0] -= 1
    return runs


def measure_runs(text: str, height: int, width: int) -> tuple[int, tuple[int, int, int, int]]:
    """Check a run-length text and return its area and ``(x, y, w, h)`` box, decoding nothing.

    The same checks as :func:`parse_runs`; this is the importer's fast path.
    """
    pairs = _checked_pairs(text, height, width)
    first = pairs[:, 0] - 1
    last = first + pairs[:, 1] - 1
    left, right = int(first[0] // height), int(last[-1] // height)
    if (last // height != first // height).any():
        # A run that continues into the next column covers that column's top and the
        # previous column's bottom.
        top, bottom = 0, height - 1
    else:
        top, bottom = int((first % height).min()), int((last % height).max())
    return int(pairs[:, 1].sum()), (left, top, right - left + 1, bottom - top + 1)


class Encoded(NamedTuple):
    """A checked run-length text as the store keeps it: COCO counts, area and box."""

    counts: str
    area: int
    bbox: tuple[int, int, int, int]


def encode_fields(
    data: bytes, starts: np.ndarray, ends: np.ndarray, heights: np.ndarray, widths: np.ndarray
) -> list[Encoded | RLEError]:
    """Check, measure and encode the run-length texts ``data[starts[i]:ends[i]]``.

    For each text, what :func:`measure_runs` gives plus its COCO counts string, or the
    :class:`RLEError` :func:`measure_runs` raises (same message). The plain form (digits and
    single spaces) goes through one compiled pass over the bytes
    (:func:`workbench.rle_kernels.measure_and_encode`); anything else, errors included, through
    :func:`measure_runs` one by one.
    """
    from workbench import rle_kernels

    n = len(starts)
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    heights = np.asarray(heights, dtype=np.int64)
    widths = np.asarray(widths, dtype=np.int64)
    if n and ends.max() >= len(data):
        data = data + b" "  # the compiled loop reads the byte after each field
    buffer = np.frombuffer(data, dtype=np.uint8)
    # COCO strings are about a sixth of the text's bytes; the loop refuses a field (to the
    # checked path) rather than overflow, which this much room makes rare.
    out = np.empty(int((ends - starts).sum()) + 8 * rle_kernels.MAX_CHARS_PER_COUNT * (n + 1), dtype=np.uint8)
    offsets = np.empty(n + 1, dtype=np.int64)
    measures = np.empty((n, 5), dtype=np.int64)
    # Sizes whose product could leave int64 are the checked path's to refuse.
    huge = (heights >= 2**31) | (widths >= 2**31)
    refused = rle_kernels.measure_and_encode(buffer, starts, ends, np.where(huge, 0, heights),
                                             widths, out, offsets, measures)
    text = out[: offsets[-1]].tobytes().decode("ascii")
    bounds = offsets.tolist()
    results: list[Encoded | RLEError] = []
    for i, (is_refused, row) in enumerate(zip(refused.tolist(), measures.tolist())):
        if is_refused:
            results.append(_encode_checked(data[starts[i] : ends[i]], int(heights[i]), int(widths[i])))
        else:
            area, x, y, w, h = row
            results.append(Encoded(text[bounds[i] : bounds[i + 1]], area, (x, y, w, h)))
    return results


def encode_texts(texts: Sequence[str], heights: Sequence[int], widths: Sequence[int]) -> list[Encoded | RLEError]:
    """:func:`encode_fields` of separate texts."""
    pieces = [t.encode("utf-8") for t in texts]
    ends = np.cumsum([len(p) for p in pieces], dtype=np.int64)
    return encode_fields(b"".join(pieces), ends - [len(p) for p in pieces], ends, heights, widths)


def _encode_checked(field: bytes, height: int, width: int) -> Encoded | RLEError:
    text = field.decode("utf-8", errors="replace")
    try:
        area, bbox = measure_runs(text, height, width)
    except RLEError as exc:
        return exc
    return Encoded(runs_to_counts(parse_runs(text, height, width), height * width), area, bbox)


def runs_to_counts(runs: np.ndarray, pixels: int) -> str:
    """The COCO compressed RLE string (pycocotools' ``counts``) of 0-based runs over an image
    of ``pixels`` pixels."""
    from workbench import rle_kernels

    runs = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
    out = np.empty(rle_kernels.MAX_CHARS_PER_COUNT * (2 * len(runs) + 1), dtype=np.uint8)
    size = rle_kernels.encode_runs(np.ascontiguousarray(runs[:, 0]), np.ascontiguousarray(runs[:, 1]),
                                   int(pixels), out)
    return out[:size].tobytes().decode("ascii")


def counts_to_runs(counts: str, height: int, width: int) -> np.ndarray:
    """0-based runs of a stored mask (a COCO compressed RLE string) of a ``height x width``
    image; raises :class:`RLEError` when the string is not one, or not of that size."""
    runs = coco_counts_to_runs(coco_string_to_counts(counts))
    if len(runs) and int(runs[-1].sum()) > height * width:
        raise RLEError(f"mask runs past the image ({width}x{height} = {height * width} pixels)")
    return runs


def runs_to_text(runs: np.ndarray) -> str:
    """The iMaterialist text (1-based starts) of 0-based runs."""
    if len(runs) == 0:
        return ""
    flat = np.asarray(runs, dtype=np.int64).copy()
    flat[:, 0] += 1
    return " ".join(map(str, flat.ravel().tolist()))


def runs_area(runs: np.ndarray) -> int:
    """Number of pixels in the mask."""
    return int(runs[:, 1].sum()) if len(runs) else 0


def runs_bbox(runs: np.ndarray, height: int) -> tuple[int, int, int, int]:
    """COCO-style box ``(x, y, w, h)`` of the mask, computed from its runs alone."""
    if len(runs) == 0:
        return (0, 0, 0, 0)
    starts = runs[:, 0]
    ends = starts + runs[:, 1] - 1
    x0, y0 = np.divmod(starts, height)
    x1, y1 = np.divmod(ends, height)
    wraps = x1 > x0  # a run that continues into the next column covers its top and bottom
    top = int(np.where(wraps, 0, y0).min())
    bottom = int(np.where(wraps, height - 1, y1).max())
    left, right = int(x0.min()), int(x1.max())
    return (left, top, right - left + 1, bottom - top + 1)


def paint_runs(canvas_colmajor: np.ndarray, runs: np.ndarray, value: int) -> None:
    """Write ``value`` into a flat column-major canvas wherever the mask is set."""
    for start, length in runs.tolist():
        canvas_colmajor[start : start + length] = value


def decode_runs(runs: np.ndarray, height: int, width: int) -> np.ndarray:
    """The ``(height, width)`` boolean mask of the runs."""
    flat = np.zeros(height * width, dtype=np.bool_)
    paint_runs(flat, runs, True)
    return flat.reshape(width, height).T


def encode_mask(mask: np.ndarray) -> np.ndarray:
    """0-based runs of a ``(height, width)`` boolean mask."""
    flat = np.asarray(mask, dtype=np.bool_).T.ravel()
    padded = np.concatenate(([False], flat, [False])).astype(np.int8)
    changes = np.flatnonzero(np.diff(padded))
    starts, ends = changes[0::2], changes[1::2]
    return np.stack([starts, ends - starts], axis=1).astype(np.int64)


def mask_to_text(mask: np.ndarray) -> str:
    """The iMaterialist run-length text of a boolean mask."""
    return runs_to_text(encode_mask(mask))


def coco_counts_to_runs(counts: list[int]) -> np.ndarray:
    """0-based runs from COCO's uncompressed counts (alternating 0s and 1s, column-major)."""
    arr = np.asarray(counts, dtype=np.int64)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if (arr < 0).any():
        raise RLEError("negative count in COCO RLE")
    offsets = np.concatenate(([0], np.cumsum(arr)))
    ones = np.arange(1, arr.size, 2)  # counts at odd positions are runs of 1s
    runs = np.stack([offsets[ones], arr[ones]], axis=1)
    return runs[runs[:, 1] > 0]


def coco_string_to_counts(encoded: str | bytes) -> np.ndarray:
    """Decode COCO's compressed RLE string (the LEB128-like text of ``maskApi.c``) to counts.

    Each count is 5-bit groups in characters ``'0' + value``, the 0x20 bit saying another
    group follows; counts after the second are stored as differences to the count two places
    back. Decoded with numpy: per-character Python is too slow for a Fashionpedia import.
    """
    data = encoded.encode("ascii") if isinstance(encoded, str) else bytes(encoded)
    chars = np.frombuffer(data, dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64)
    if ((chars < 0) | (chars > 63)).any():
        bad = data[int(np.argmax((chars < 0) | (chars > 63)))]
        raise RLEError(f"invalid character {chr(bad)!r} in COCO RLE string")
    last = (chars & 0x20) == 0  # the final character of each value
    if not last[-1]:
        raise RLEError("truncated COCO RLE string")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    groups = ends - starts + 1
    if groups.max() > 12:
        raise RLEError("COCO RLE string holds a count too large for any image")
    value_of = np.repeat(np.arange(ends.size), groups)
    shifts = 5 * (np.arange(chars.size) - starts[value_of])
    values = np.add.reduceat((chars & 0x1F) << shifts, starts)
    negative = (chars[ends] & 0x10) != 0
    values[negative] |= np.left_shift(np.int64(-1), 5 * groups[negative])
    counts = values.copy()
    counts[1::2] = np.cumsum(values[1::2])
    counts[2::2] = np.cumsum(values[2::2])
    return counts
