"""Compiled loops (numba) over run-length masks: the importer's hot path.

An iMaterialist CSV is gigabytes of run-length digits. Checking, measuring and re-encoding
them with whole-array numpy takes a dozen passes over every value; these loops do it in one
pass over the bytes, without a Python object per run. They only ever *accept* a mask: any
text they do not take (a tab between runs, a comma, a bad run) is marked, and the caller's
pure-Python path (:mod:`workbench.rle`) words the exact message.

The store keeps masks as COCO compressed RLE strings (the ``counts`` pycocotools reads and
writes): alternating runs of 0s and 1s over the column-major pixels, each count after the
third written as its difference to the count two places back, in 5-bit groups of characters
``'0' + group`` with bit 0x20 saying another group follows. That is the format's definition
(``rleToString`` in cocoapi's ``maskApi.c``); its strings are about a sixth of the size of the
same mask as iMaterialist text.

Compiled on first use and cached next to this file (``cache=True``); where that folder is
read-only numba compiles again in each process, which costs a second or two, not a result.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# What a field may have around its runs (the ASCII whitespace str.strip removes, bar
# \x1c-\x1f, which the Python path handles).
_TAB, _CR, _SPACE = 9, 13, 32
_ZERO, _NINE, _COMMA, _QUOTE = 48, 57, 44, 34
# Tokens longer than this are left to the Python path (so no value nears int64's limit).
_MAX_DIGITS = 18
# Characters of one count at most (64 bits in 5-bit groups, sign included).
MAX_CHARS_PER_COUNT = 13


@njit(cache=True, nogil=True, inline="always")
def _put_count(out: np.ndarray, pos: int, value: int) -> int:
    """Write one (already differenced) count in COCO's 5-bit groups; returns the new end."""
    more = True
    while more:
        group = value & 0x1F
        value >>= 5  # arithmetic: negative values keep their sign
        more = value != -1 if group & 0x10 else value != 0
        if more:
            group |= 0x20
        out[pos] = group + 48
        pos += 1
    return pos


@njit(cache=True, nogil=True, inline="always")
def _put_next(out: np.ndarray, pos: int, index: int, before2: int, before1: int, count: int):
    """Write the ``index``-th count of a mask, differenced against the one two places back
    (``before2``) from the fourth on; returns the new ``(pos, index, before2, before1)``."""
    pos = _put_count(out, pos, count - before2 if index > 2 else count)
    return pos, index + 1, before1, count


@njit(cache=True, nogil=True)
def encode_runs(starts: np.ndarray, lengths: np.ndarray, pixels: int, out: np.ndarray) -> int:
    """COCO compressed RLE of 0-based, ascending, non-overlapping runs of an image of
    ``pixels`` pixels, written into ``out`` (``MAX_CHARS_PER_COUNT`` per count, 2 counts per
    run plus one, is always enough); returns the number of characters. Touching runs are
    written as one, as pycocotools does, so a mask has one string."""
    pos = index = before2 = before1 = 0  # characters and counts written; the last two counts
    end = run = 0  # one past the run being gathered, and its length so far
    for i in range(starts.size):
        if i > 0 and starts[i] == end:
            run += lengths[i]
            end += lengths[i]
            continue
        if i > 0:
            pos, index, before2, before1 = _put_next(out, pos, index, before2, before1, run)
        pos, index, before2, before1 = _put_next(out, pos, index, before2, before1, starts[i] - end)
        run = lengths[i]
        end = starts[i] + run
    if starts.size:
        pos, index, before2, before1 = _put_next(out, pos, index, before2, before1, run)
    if pixels > end:  # the 0s after the last run
        pos, index, before2, before1 = _put_next(out, pos, index, before2, before1, pixels - end)
    return pos


@njit(cache=True, nogil=True)
def field_spans(data: np.ndarray, line_ends: np.ndarray, columns: int, long_column: int) -> np.ndarray:
    """Where each line's fields start and end: ``(lines, columns, 2)`` byte offsets.

    ``line_ends`` are the offsets of the lines' ``\\n`` (or the data's end). Only the short
    fields around ``long_column`` are scanned: its commas from the line's start, the rest from
    its end, so the long field is walked once, later, by :func:`measure_and_encode`, which
    refuses a comma in it. A field after the long one may be quoted (iMaterialist 2020's
    ``"3,77"``): its span is inside the quotes. A line this does not read (too few commas, a
    quote anywhere else) gets ``-1`` spans, for the caller's general path; an empty line
    ``-2``. A ``\\r`` before the ``\\n`` is not part of the line.
    """
    spans = np.full((line_ends.size, columns, 2), -1, dtype=np.int64)
    start = 0
    for line in range(line_ends.size):
        end = line_ends[line]
        if end > start and data[end - 1] == _CR:
            end -= 1
        if end == start:
            spans[line, :, :] = -2
            start = line_ends[line] + 1
            continue
        ok = True
        field_start = start
        pos = start
        for column in range(long_column):  # fields before the long one, left to right
            while pos < end and data[pos] != _COMMA and data[pos] != _QUOTE:
                pos += 1
            if pos == end or data[pos] == _QUOTE:
                ok = False
                break
            spans[line, column, 0] = field_start
            spans[line, column, 1] = pos
            pos += 1
            field_start = pos
        long_start = field_start
        field_end = end
        pos = end - 1
        for column in range(columns - 1, long_column, -1):  # fields after it, right to left
            if not ok:
                break
            if pos >= long_start and data[pos] == _QUOTE:  # a quoted field, "3,77" say
                close = pos
                pos -= 1
                while pos >= long_start and data[pos] != _QUOTE:
                    pos -= 1
                # Its opening quote must follow a comma (no doubled quotes inside).
                ok = pos > long_start and data[pos - 1] == _COMMA
                spans[line, column, 0] = pos + 1
                spans[line, column, 1] = close
                field_end = pos - 1
                pos -= 2
                continue
            while pos >= long_start and data[pos] != _COMMA and data[pos] != _QUOTE:
                pos -= 1
            if pos < long_start or data[pos] == _QUOTE:
                ok = False
                break
            spans[line, column, 0] = pos + 1
            spans[line, column, 1] = field_end
            field_end = pos
            pos -= 1
        if ok:
            spans[line, long_column, 0] = long_start
            spans[line, long_column, 1] = field_end
        else:
            spans[line, :, :] = -1
        start = line_ends[line] + 1
    return spans


@njit(cache=True, nogil=True)
def parse_sizes(data: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """The positive integer in each field ``data[spans[i, 0]:spans[i, 1]]`` (whitespace around
    allowed), or -1 where there is none (a missing field, another character, 0, too long)."""
    sizes = np.full(spans.shape[0], -1, dtype=np.int64)
    for i in range(spans.shape[0]):
        first, last = spans[i, 0], spans[i, 1]
        if first < 0:
            continue
        while first < last and (data[first] == _SPACE or _TAB <= data[first] <= _CR):
            first += 1
        while last > first and (data[last - 1] == _SPACE or _TAB <= data[last - 1] <= _CR):
            last -= 1
        if last == first or last - first > _MAX_DIGITS:
            continue
        value = 0
        for k in range(first, last):
            if not _ZERO <= data[k] <= _NINE:
                value = -1
                break
            value = value * 10 + (data[k] - _ZERO)
        if value > 0:
            sizes[i] = value
    return sizes


@njit(cache=True, nogil=True)
def measure_and_encode(
    data: np.ndarray,
    field_starts: np.ndarray,
    field_ends: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
    out: np.ndarray,
    offsets: np.ndarray,
    measures: np.ndarray,
) -> np.ndarray:
    """Check, measure and encode iMaterialist run-length fields in one pass over their bytes.

    Field ``i`` is ``data[field_starts[i]:field_ends[i]]``: 1-based ``start length`` pairs
    separated by single spaces, whitespace around; a byte must follow each field in ``data``
    (whatever it is: the loop reads it as the end of the last token, which keeps it simple).
    Its COCO string goes to ``out[offsets[i]:offsets[i + 1]]``, its area and box
    ``(x, y, w, h)`` to ``measures[i]``. Returns a boolean per field: True where the field was
    not taken (not in this plain form; a run that is empty, out of order, overlapping or past
    the image; or no room left in ``out``, whose size the caller picks: about the fields'
    bytes is plenty), for the caller's checked path; such a field writes no characters.
    """
    refused = np.zeros(field_starts.size, dtype=np.bool_)
    pos = 0
    for i in range(field_starts.size):
        offsets[i] = pos
        first, last = field_starts[i], field_ends[i]
        while first < last and (data[first] == _SPACE or _TAB <= data[first] <= _CR):
            first += 1
        while last > first and (data[last - 1] == _SPACE or _TAB <= data[last - 1] <= _CR):
            last -= 1
        height = heights[i]
        pixels = height * widths[i]
        ok = first < last and height > 0 and widths[i] > 0
        tokens = 0
        run_start = 0  # 1-based start of the run being read
        end = 1  # 1-based, one past the previous run
        index = before2 = before1 = 0  # COCO counts written, and the last two
        run = 0  # length of the run being gathered (touching runs are one)
        area = 0
        left = top = bottom = 0
        column = base = 0  # the column a run starts in, and its first pixel (0-based)
        wraps = False
        value = digits = 0
        for k in range(first, last + 1 if ok else first):
            # data[last] ends the last token whatever it is: the caller sees that it exists.
            byte = data[k]
            if _ZERO <= byte <= _NINE and k < last:
                value = value * 10 + (byte - _ZERO)
                digits += 1
                continue
            if digits == 0 or digits > _MAX_DIGITS or (byte != _SPACE and k < last):
                ok = False  # another character, a second space, or a token too long
                break
            tokens += 1
            token, value, digits = value, 0, 0
            if tokens % 2:
                run_start = token
                ok = token >= end  # starts at 1 and after the previous run
                if not ok:
                    break
                continue
            length = token
            # Room for this run's counts and the last two (a count differenced against a longer
            # one can take more characters than its digits: checked, never assumed).
            ok = 1 <= length <= pixels + 1 - run_start and pos + 4 * MAX_CHARS_PER_COUNT <= out.size
            if not ok:
                break
            if tokens > 2 and run_start == end:  # touching the run before: one run
                run += length
            else:
                if tokens > 2:
                    pos, index, before2, before1 = _put_next(out, pos, index, before2, before1, run)
                pos, index, before2, before1 = _put_next(out, pos, index, before2, before1, run_start - end)
                run = length
            # Rows and columns without a division per run: runs ascend, so the column moves on.
            first_pixel = run_start - 1
            if tokens == 2 or first_pixel - base >= 8 * height:
                column = first_pixel // height
                base = column * height
            while first_pixel - base >= height:
                column += 1
                base += height
            if tokens == 2:
                left, top, bottom = column, first_pixel - base, first_pixel - base
            last_pixel = first_pixel + length - 1
            if last_pixel - base >= height:
                wraps = True  # a run continuing into the next column covers its top and bottom
            else:
                top = min(top, first_pixel - base)
                bottom = max(bottom, last_pixel - base)
            area += length
            end = run_start + length
        ok = ok and tokens > 0 and tokens % 2 == 0
        right = (end - 2) // height if ok else 0
        if ok:
            pos, index, before2, before1 = _put_next(out, pos, index, before2, before1, run)
            if pixels >= end:  # the 0s after the last run
                pos, index, before2, before1 = _put_next(out, pos, index, before2, before1, pixels + 1 - end)
            if wraps:
                top, bottom = 0, height - 1
            measures[i, 0] = area
            measures[i, 1] = left
            measures[i, 2] = top
            measures[i, 3] = right - left + 1
            measures[i, 4] = bottom - top + 1
        else:
            refused[i] = True
            pos = offsets[i]
    offsets[field_starts.size] = pos
    return refused
