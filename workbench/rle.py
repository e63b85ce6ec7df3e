"""Run-length masks as iMaterialist writes them, and conversions from COCO's RLE.

A mask of an ``height x width`` image is a text of space-separated pairs ``start length``:
starts are 1-based, pixels are numbered top-to-bottom then left-to-right (column-major),
runs are in ascending order and do not overlap. Inside the workbench a parsed mask is an
``(n, 2)`` int64 array of 0-based ``[start, length]`` rows ("runs").

Area and bounding box come straight from the runs, so statistics never decode a mask.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_DIGITS_AND_SPACES = re.compile(r"[0-9\s]*", re.ASCII)
_PLAIN_FORM = re.compile(r"[0-9]+(?: [0-9]+)*", re.ASCII)


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


Measurement = tuple[int, tuple[int, int, int, int]]

# The one form the batched path reads: digits separated by single spaces.
_PLAIN_DIGITS = b"0123456789 "


def measure_runs_many(
    texts: Sequence[str], heights: Sequence[int], widths: Sequence[int]
) -> list[Measurement | RLEError]:
    """:func:`measure_runs` of many texts at once: each text's ``(area, box)``, or its error.

    Same results and same messages as calling :func:`measure_runs` on each text, at a fraction
    of the cost: one ``np.fromstring`` for all the texts, then the checks, area and box of
    every text with whole-array operations, rows told apart by their pair offsets
    (``reduceat``). Texts not in the plain form (digits and single spaces, an even number of
    tokens), and texts that fail any check, go through :func:`measure_runs` one by one, so
    every error message is exactly its own.
    """
    texts = [t.strip() for t in texts]
    results: list[Measurement | RLEError | None] = [None] * len(texts)
    counts = [t.count(" ") + 1 for t in texts]  # tokens, if the text is in the plain form
    plain = [i for i, t in enumerate(texts) if t and counts[i] % 2 == 0 and t.isascii()]
    measured = _measure_plain([texts[i] for i in plain], [counts[i] for i in plain],
                              [heights[i] for i in plain], [widths[i] for i in plain])
    for i, m in zip(plain, measured):
        results[i] = m
    for i, result in enumerate(results):
        if result is None:
            try:
                results[i] = measure_runs(texts[i], heights[i], widths[i])
            except RLEError as exc:
                results[i] = exc
    return results  # type: ignore[return-value]


def _measure_plain(
    texts: list[str], counts: list[int], heights: list[int], widths: list[int]
) -> list[Measurement | None]:
    """Area and box of stripped, non-empty ASCII texts with an even token count ``counts``;
    None for a text that is not digits and single spaces or fails a check."""
    if not texts:
        return []
    joined = " ".join(texts).encode("ascii")
    only_digits_and_spaces = not joined.translate(None, _PLAIN_DIGITS)
    values = np.fromstring(joined, dtype=np.int64, sep=" ") if only_digits_and_spaces else None
    # With digits and spaces only, a double space shows as fewer tokens than spaces + 1.
    if values is None or values.size != sum(counts):
        # A stray character or a double space somewhere: sort the texts out one by one (rare).
        ok = [i for i, t in enumerate(texts) if _PLAIN_FORM.fullmatch(t)]
        if len(ok) == len(texts):  # cannot happen; never loop on it
            return [None] * len(texts)
        result: list[Measurement | None] = [None] * len(texts)
        for i, m in zip(ok, _measure_plain([texts[i] for i in ok], [counts[i] for i in ok],
                                           [heights[i] for i in ok], [widths[i] for i in ok])):
            result[i] = m
        return result

    pairs_per_row = np.asarray(counts, dtype=np.int64) // 2
    row_first = np.zeros(len(texts), dtype=np.int64)  # index of each row's first pair
    np.cumsum(pairs_per_row[:-1], out=row_first[1:])
    row_last = row_first + pairs_per_row - 1
    height = np.asarray(heights, dtype=np.int64)
    pixels = height * np.asarray(widths, dtype=np.int64)
    pair_height = np.repeat(height, pairs_per_row)
    starts, lengths = values[0::2], values[1::2]  # 1-based, as in the text
    ends = starts + lengths  # one past each run's last pixel, 1-based

    # The checks of _checked_pairs, per pair, then per row.
    overlaps = starts[1:] < ends[:-1]  # a run starting before the previous one ends
    overlaps[row_first[1:] - 1] = False  # but a row's first run follows another row's last
    bad = np.concatenate(([False], overlaps))
    if values.min() < 1 or values.max() >= 2**62:  # rare: a 0, or a sum that may leave int64
        bad |= (starts < 1) | (lengths < 1) | (ends < 1)
    bad_row = np.logical_or.reduceat(bad, row_first)
    bad_row |= ends[row_last] - 1 > pixels

    # Area and box, as measure_runs computes them.
    area = np.add.reduceat(lengths, row_first)
    top_of_run = np.remainder(starts - 1, pair_height)  # the row of each run's first pixel
    bottom_of_run = top_of_run + lengths - 1  # past height - 1: the run wraps to the next column
    wraps = np.logical_or.reduceat(bottom_of_run >= pair_height, row_first)
    top = np.where(wraps, 0, np.minimum.reduceat(top_of_run, row_first))
    bottom = np.where(wraps, height - 1, np.maximum.reduceat(bottom_of_run, row_first))
    left = (starts[row_first] - 1) // height
    right = (ends[row_last] - 2) // height
    boxes = zip(left.tolist(), top.tolist(), (right - left + 1).tolist(), (bottom - top + 1).tolist())
    return [
        None if is_bad else (a, box)
        for is_bad, a, box in zip(bad_row.tolist(), area.tolist(), boxes)
    ]


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
