"""Run-length masks: parsing, checks, area/box from runs, COCO conversions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as coco_mask

from workbench.rle import (
    RLEError,
    coco_counts_to_runs,
    coco_string_to_counts,
    decode_runs,
    encode_mask,
    mask_to_text,
    Encoded,
    counts_to_runs,
    encode_fields,
    encode_texts,
    measure_runs,
    parse_runs,
    runs_area,
    runs_bbox,
    runs_to_counts,
)

masks = st.tuples(st.integers(1, 24), st.integers(1, 24)).flatmap(
    lambda hw: arrays(np.bool_, hw)
)


@settings(max_examples=200, deadline=None)
@given(masks)
def test_text_round_trip_gives_the_same_mask(mask):
    h, w = mask.shape
    text = mask_to_text(mask)
    if not mask.any():
        assert text == ""
        return
    runs = parse_runs(text, h, w)
    assert np.array_equal(decode_runs(runs, h, w), mask)
    assert mask_to_text(decode_runs(runs, h, w)) == text


@settings(max_examples=200, deadline=None)
@given(masks)
def test_area_and_box_from_runs_match_the_decoded_mask(mask):
    if not mask.any():
        return
    h, w = mask.shape
    runs = encode_mask(mask)
    ys, xs = np.nonzero(mask)
    assert runs_area(runs) == mask.sum()
    box = (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    assert runs_bbox(runs, h) == box
    assert measure_runs(mask_to_text(mask), h, w) == (mask.sum(), box)


@settings(max_examples=150, deadline=None)
@given(masks)
def test_coco_compressed_rle_decodes_like_pycocotools(mask):
    h, w = mask.shape
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    counts = coco_string_to_counts(encoded["counts"])
    assert sum(counts) == h * w
    assert np.array_equal(decode_runs(coco_counts_to_runs(counts), h, w), mask)


def test_kaggle_runs_are_one_based_and_column_major():
    # Pixel 1 is the top-left; pixel 2 is the one below it (column-major order).
    mask = decode_runs(parse_runs("1 2 7 1", 3, 4), 3, 4)
    expected = np.zeros((3, 4), bool)
    expected[0:2, 0] = True  # pixels 1-2: first column, rows 0-1
    expected[0, 2] = True  # pixel 7: third column, first row
    assert np.array_equal(mask, expected)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty mask"),
        ("1 2 3", "odd number of tokens (3)"),
        ("1 x", "non-numeric token 'x'"),
        ("1 -2", "non-numeric token '-2'"),
        ("0 3", "start 0"),
        ("4 0", "has length 0"),
        ("11 3", "run 11 3 goes past the image (4x3 = 12 pixels)"),
        ("5 3 6 1", "must be in ascending order"),
        ("1 ２", "non-numeric token"),
    ],
)
def test_bad_runs_are_refused_with_a_message_naming_the_problem(text, message):
    for check in (parse_runs, measure_runs):
        with pytest.raises(RLEError) as err:
            check(text, 3, 4)
        assert message in str(err.value)


@pytest.mark.parametrize(
    "encoded, message",
    [("0 0", "invalid character ' '"), ("P", "truncated"), ("0\x7f", "invalid character")],
)
def test_bad_coco_strings_are_refused(encoded, message):
    with pytest.raises(RLEError, match=message):
        coco_string_to_counts(encoded)


def _pycocotools_counts(mask: np.ndarray) -> str:
    return coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def _encoded_one_by_one(text: str, h: int, w: int):
    """What the batched encoders must give for one text: pycocotools' counts of the mask the
    text decodes to, with :func:`measure_runs`'s area and box, or its message."""
    try:
        area, box = measure_runs(text, h, w)
    except RLEError as exc:
        return str(exc)
    return Encoded(_pycocotools_counts(decode_runs(parse_runs(text, h, w), h, w)), area, box)


def _as_comparable(result):
    return str(result) if isinstance(result, RLEError) else result


# Rows as an importer meets them: valid masks, and masks with one thing wrong.
_token = st.one_of(st.integers(0, 40).map(str), st.sampled_from(["x", "-3", "+4", "２", "99999999999999999999"]))
_broken_texts = st.one_of(
    st.lists(_token, max_size=8).map(" ".join),
    st.lists(st.integers(0, 40).map(str), max_size=8).map("  ".join),
    st.sampled_from(["", " ", "1\t2", " 3 4 ", "9223372036854775807 9223372036854775807", "1 2\n3 4"]),
)


@st.composite
def _rows(draw):
    mask = draw(masks)
    h, w = mask.shape
    if draw(st.booleans()) and mask.any():
        return mask_to_text(mask), h, w
    return draw(_broken_texts), h, w


@settings(max_examples=200, deadline=None)
@given(st.lists(_rows(), min_size=1, max_size=12))
def test_encoding_many_rows_at_once_gives_each_rows_own_result_or_message(rows):
    texts, heights, widths = (list(column) for column in zip(*rows))
    results = encode_texts(texts, heights, widths)
    assert [_as_comparable(r) for r in results] == [_encoded_one_by_one(*row) for row in rows]


def test_encoding_many_rows_keeps_good_rows_next_to_bad_ones():
    texts = ["1 2 7 1", "1 2 3", "0 3", "5 3 6 1", "11 3", "1 x", "3 5", "", "1  2"]
    results = encode_texts(texts, [3] * len(texts), [4] * len(texts))
    assert results[0][1:] == (3, (0, 0, 3, 2))
    assert results[6][1:] == (5, (0, 0, 3, 3))  # 3..7 wraps into the next column: full height
    assert results[8][1:] == (2, (0, 0, 1, 2))  # a double space is still read, as one by one
    messages = [str(r) for r in results if isinstance(r, RLEError)]
    assert [m.split(":")[0].split(" (")[0] for m in messages] == [
        "odd number of tokens", "start 0", "run 6 1 starts before the previous run ends",
        "run 11 3 goes past the image", "non-numeric token 'x' in EncodedPixels", "empty mask",
    ]


def test_a_token_past_the_int64_range_is_refused_not_wrapped():
    for text in ("9223372036854775807 9223372036854775807", "4611686018427387904 4611686018427387904 1 1"):
        with pytest.raises(RLEError, match="goes past the image"):
            measure_runs(text, 3, 4)
        assert isinstance(encode_texts([text], [3], [4])[0], RLEError)


def test_plain_valid_rows_are_encoded_together_not_one_by_one(monkeypatch):
    import workbench.rle as rle

    rng = np.random.default_rng(3)
    rows = []
    for _ in range(30):
        h, w = (int(v) for v in rng.integers(1, 24, 2))
        mask = rng.random((h, w)) < 0.4
        mask[0, 0] = True
        rows.append((mask_to_text(mask), h, w, mask))
    # Later rows start before earlier rows end: only runs within a row must ascend.
    rows.sort(key=lambda row: -len(row[0]))
    expected = [_encoded_one_by_one(text, h, w) for text, h, w, _ in rows]

    def one_by_one(*args):
        raise AssertionError("a valid row left the compiled path")

    monkeypatch.setattr(rle, "measure_runs", one_by_one)
    results = rle.encode_texts([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    assert results == expected
    for (_, area, (x, y, bw, bh)), (_, _, _, mask) in zip(results, rows):
        ys, xs = np.nonzero(mask)
        assert area == mask.sum()
        assert (x, y, bw, bh) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def test_fields_are_encoded_where_they_lie_in_a_larger_buffer():
    data = b"a.jpg, 1 2 7 1 ,3,4,6\nb.jpg,\t3 5,3,4,1_2\n"
    starts = np.array([data.index(b" 1 2"), data.index(b"\t3")])
    ends = starts + [len(b" 1 2 7 1 "), len(b"\t3 5")]
    results = encode_fields(data, starts, ends, np.array([3, 3]), np.array([4, 4]))
    assert results[0] == _encoded_one_by_one("1 2 7 1", 3, 4)
    assert results[1] == _encoded_one_by_one("3 5", 3, 4)


@settings(max_examples=200, deadline=None)
@given(masks)
def test_stored_counts_are_pycocotools_strings_and_decode_to_the_same_runs(mask):
    h, w = mask.shape
    runs = encode_mask(mask)
    counts = runs_to_counts(runs, h * w)
    assert counts == _pycocotools_counts(mask)
    assert np.array_equal(counts_to_runs(counts, h, w), runs)
    assert np.array_equal(coco_mask.decode({"size": [h, w], "counts": counts.encode()}).astype(bool), mask)


def test_stored_counts_of_another_size_are_refused():
    counts = runs_to_counts(np.array([[0, 20]]), 20)
    with pytest.raises(RLEError, match="past the image"):
        counts_to_runs(counts, 3, 4)


def test_the_compiled_loop_refuses_a_field_rather_than_write_past_its_buffer():
    from workbench import rle_kernels

    text = b" ".join(b"%d 1" % (1 + 2 * i) for i in range(40)) + b"\n"
    data = np.frombuffer(text, np.uint8)
    for room, refused in ((len(text) + 64, False), (40, True)):
        out = np.zeros(room + 8, np.uint8)  # 8 guard bytes that must stay untouched
        offsets, measures = np.empty(2, np.int64), np.empty((1, 5), np.int64)
        result = rle_kernels.measure_and_encode(data, np.array([0]), np.array([len(text) - 1]), np.array([100]),
                                                np.array([1]), out[:room], offsets, measures)
        assert bool(result[0]) is refused
        assert not out[room:].any()
