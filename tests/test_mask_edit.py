"""workbench/mask_edit.py: swap, erase and paint on constructed masks with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.mask_edit import MaskEditError, apply_edits, erase, paint, parse_edit, shape_mask, swap_class


def _mask() -> np.ndarray:
    mask = np.zeros((10, 20), np.uint8)
    mask[2:8, 4:10] = 1
    mask[2:8, 10:16] = 2
    return mask


def test_swap_changes_only_that_class_and_leaves_the_input_alone():
    mask = _mask()
    out = swap_class(mask, 1, 3)
    assert (out[2:8, 4:10] == 3).all() and (out[2:8, 10:16] == 2).all() and out.sum() == 36 * 3 + 36 * 2
    assert (mask[2:8, 4:10] == 1).all()  # a new array


def test_rectangle_box_is_in_fractions_of_the_size():
    region = shape_mask(10, 20, "rectangle", (0.0, 0.5, 0.25, 1.0))
    assert region.sum() == 5 * 5 and region[5:, :5].all()
    assert shape_mask(10, 20, "rectangle", (0, 0, 1, 1)).all()


def test_ellipse_inside_its_box_with_the_expected_area():
    region = shape_mask(200, 200, "ellipse", (0.25, 0.25, 0.75, 0.75))
    assert abs(region.sum() - np.pi * 50 * 50) < 0.01 * np.pi * 50 * 50
    ys, xs = np.nonzero(region)
    assert ys.min() >= 50 and ys.max() < 150 and xs.min() >= 50 and xs.max() < 150
    assert not region[50, 50] and region[100, 100]  # a corner of the box is outside, the centre inside


def test_erase_sets_background_and_paint_sets_the_class():
    mask = _mask()
    erased = erase(mask, "rectangle", (0.2, 0.0, 0.5, 1.0))  # columns 4..9
    assert (erased[:, 4:10] == 0).all() and (erased[2:8, 10:16] == 2).all()
    painted = paint(mask, "rectangle", (0, 0, 1, 0.1), 5)  # the first row
    assert (painted[0] == 5).all() and (painted[1:] == mask[1:]).all()


def test_apply_edits_in_order_and_refuses_a_class_outside_the_scheme():
    mask = _mask()
    edits = [{"op": "swap", "from": 2, "to": 1}, {"op": "erase", "shape": "rectangle", "box": [0.5, 0, 1, 1]}]
    out = apply_edits(mask, edits, classes=[0, 1, 2])
    assert set(np.unique(out[:, :10])) == {0, 1} and (out[:, 10:] == 0).all()
    with pytest.raises(MaskEditError, match="edit 1 \\(paint\\): class 9 is not in the mask's scheme"):
        apply_edits(mask, [{"op": "paint", "shape": "ellipse", "box": [0, 0, 1, 1], "value": 9}], classes=[0, 1, 2])
    with pytest.raises(MaskEditError, match="missing 'box'"):
        apply_edits(mask, [{"op": "erase", "shape": "ellipse"}])
    with pytest.raises(MaskEditError, match="unknown op 'blur'"):
        apply_edits(mask, [{"op": "blur"}])


def test_bad_boxes_and_shapes_are_refused_with_the_fix():
    with pytest.raises(MaskEditError, match="x1 must be right of x0"):
        shape_mask(4, 4, "rectangle", (0.5, 0, 0.2, 1))
    with pytest.raises(MaskEditError, match="fractions"):
        shape_mask(4, 4, "rectangle", (0, 0, 2, 1))
    with pytest.raises(MaskEditError, match="not one of rectangle, ellipse"):
        shape_mask(4, 4, "star", (0, 0, 1, 1))


def test_parse_edit_reads_the_command_line_forms():
    assert parse_edit("swap 1 2") == {"op": "swap", "from": 1, "to": 2}
    assert parse_edit("erase ellipse 0.1,0.2,0.5,0.6") == {"op": "erase", "shape": "ellipse", "box": [0.1, 0.2, 0.5, 0.6]}
    assert parse_edit("paint rectangle 3 0,0.5,1,1") == {"op": "paint", "shape": "rectangle", "value": 3,
                                                         "box": [0.0, 0.5, 1.0, 1.0]}
    with pytest.raises(MaskEditError, match="write 'swap FROM TO'"):
        parse_edit("swap 1")
    with pytest.raises(MaskEditError, match="paint rectangle x 0,0,1,1"):
        parse_edit("paint rectangle x 0,0,1,1")
