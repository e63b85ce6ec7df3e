"""Per-class IoU and mIoU on constructed masks whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.segment.metrics import ConfusionMatrix, MetricsError, iou_report, mean_iou


def test_perfect_prediction_is_one_for_present_classes_and_none_for_absent():
    truth = np.array([[0, 0, 1], [1, 2, 2]])
    cm = ConfusionMatrix(4).add(truth, truth)
    assert cm.iou() == [1.0, 1.0, 1.0, None]  # class 3 is in neither: no IoU
    assert cm.miou() == 1.0


def test_known_overlap():
    truth = np.zeros((4, 4), np.uint8)
    truth[:, :2] = 1  # 8 pixels of class 1
    pred = np.zeros((4, 4), np.uint8)
    pred[:, 1:3] = 1  # 8 pixels, 4 of them right
    cm = ConfusionMatrix(2).add(truth, pred)
    iou = cm.iou()
    assert iou[1] == pytest.approx(4 / 12)  # TP 4, FP 4, FN 4
    assert iou[0] == pytest.approx(4 / 12)  # background: TP 4 (column 3), FP 4, FN 4
    assert cm.miou() == pytest.approx(4 / 12)
    assert cm.pixel_accuracy() == pytest.approx(8 / 16)


def test_class_present_on_one_side_only_scores_zero():
    truth = np.zeros((2, 2), np.uint8)
    pred = truth.copy()
    pred[0, 0] = 2  # predicted where the truth has none
    cm = ConfusionMatrix(3).add(truth, pred)
    assert cm.iou() == [pytest.approx(3 / 4), None, 0.0]
    assert cm.miou() == pytest.approx((3 / 4 + 0.0) / 2)
    missed = ConfusionMatrix(3).add(pred, truth)  # in the truth, never predicted
    assert missed.iou()[2] == 0.0


def test_all_background():
    empty = np.zeros((5, 7), np.uint8)
    cm = ConfusionMatrix(4).add(empty, empty)
    assert cm.iou() == [1.0, None, None, None]
    assert cm.miou() == 1.0
    assert cm.miou(include_background=False) is None  # no foreground class to average
    report = iou_report(cm, {0: "background", 1: "upper body"})
    assert report["iou"]["background"] == 1.0 and report["iou"]["upper body"] is None
    assert report["miou_foreground"] is None


def test_accumulates_over_images_not_a_mean_of_images():
    a_t = np.array([[1, 1, 1, 1]])
    a_p = np.array([[1, 1, 1, 1]])  # class 1: 4/4
    b_t = np.array([[1, 0, 0, 0]])
    b_p = np.array([[0, 0, 0, 0]])  # class 1: 0/1
    cm = ConfusionMatrix(2).add(a_t, a_p).add(b_t, b_p)
    assert cm.iou()[1] == pytest.approx(4 / 5)  # pooled, not (1 + 0) / 2


def test_ignore_index_pixels_count_for_nothing():
    truth = np.array([[255, 1], [0, 1]])
    pred = np.array([[1, 1], [0, 1]])
    cm = ConfusionMatrix(2).add(truth, pred)
    assert cm.iou() == [1.0, 1.0]


def test_merge_adds_counts():
    t = np.array([[0, 1]])
    one, two = ConfusionMatrix(2).add(t, t), ConfusionMatrix(2).add(t, 1 - t)
    assert one.merge(two).iou() == [pytest.approx(1 / 3), pytest.approx(1 / 3)]


def test_mean_leaves_out_undefined_and_optionally_background():
    assert mean_iou([0.5, None, 1.0]) == pytest.approx(0.75)
    assert mean_iou([0.5, None, 1.0], include_background=False) == 1.0
    assert mean_iou([None, None]) is None


def test_bad_input_is_named():
    with pytest.raises(MetricsError, match="shape|\\("):
        ConfusionMatrix(2).add(np.zeros((2, 2)), np.zeros((3, 2)))
    with pytest.raises(MetricsError, match="class value 5"):
        ConfusionMatrix(2).add(np.zeros((2, 2), np.uint8), np.full((2, 2), 5, np.uint8))
