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
    measure_runs,
    parse_runs,
    runs_area,
    runs_bbox,
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
