"""Segmentation agreement: a confusion matrix over class values, per-class IoU and mIoU.

IoU of class c = TP / (TP + FP + FN), counted over every pixel of every image added (the
dataset-level IoU semantic-segmentation benchmarks and the ControlNet papers report, not a mean
of per-image IoUs). A class that appears in neither the truth nor the prediction has no IoU
(``None``) and is left out of the mean; a class present on one side only has IoU 0.
``ignore_index`` pixels of the truth (e.g. 255, "unlabelled") count for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class MetricsError(ValueError):
    """Masks that cannot be compared (different shapes, values outside the classes)."""


@dataclass
class ConfusionMatrix:
    """Counts of (true class, predicted class) pixels, accumulated over images."""

    num_classes: int
    ignore_index: int | None = 255
    matrix: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise MetricsError(f"num_classes must be at least 1, not {self.num_classes}")
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def add(self, truth: np.ndarray, prediction: np.ndarray) -> "ConfusionMatrix":
        """Count one pair of label maps (same shape, values = class values)."""
        truth, prediction = np.asarray(truth), np.asarray(prediction)
        if truth.shape != prediction.shape:
            raise MetricsError(f"truth is {truth.shape} but the prediction {prediction.shape}; "
                               "resize the prediction to the truth (nearest neighbour) first")
        t = truth.astype(np.int64).ravel()
        p = prediction.astype(np.int64).ravel()
        if self.ignore_index is not None:
            keep = t != self.ignore_index
            t, p = t[keep], p[keep]
        for name, values in (("truth", t), ("prediction", p)):
            if values.size and (values.min() < 0 or values.max() >= self.num_classes):
                raise MetricsError(f"{name} holds class value {int(values.max())} but there are "
                                   f"{self.num_classes} classes (0-{self.num_classes - 1})")
        self.matrix += np.bincount(t * self.num_classes + p,
                                   minlength=self.num_classes ** 2).reshape(self.num_classes, self.num_classes)
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix's counts (e.g. from another process)."""
        self.matrix += other.matrix
        return self

    def iou(self) -> list[float | None]:
        """IoU per class value; ``None`` where the class is in neither truth nor prediction."""
        return per_class_iou(self.matrix)

    def miou(self, include_background: bool = True) -> float | None:
        """Mean IoU over the classes that have one (``None`` when none has)."""
        return mean_iou(self.iou(), include_background)

    def pixel_accuracy(self) -> float | None:
        """Share of counted pixels predicted right (``None`` before any pixel)."""
        total = int(self.matrix.sum())
        return float(np.trace(self.matrix)) / total if total else None


def per_class_iou(matrix: np.ndarray) -> list[float | None]:
    """IoU per class from a confusion matrix (rows = truth, columns = prediction)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    tp = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
    return [float(tp[c]) / float(union[c]) if union[c] else None for c in range(len(tp))]


def mean_iou(ious: list[float | None], include_background: bool = True) -> float | None:
    """Mean of the defined IoUs (class 0 left out with ``include_background=False``)."""
    values = [v for c, v in enumerate(ious) if v is not None and (include_background or c)]
    return float(np.mean(values)) if values else None


def iou_report(confusion: ConfusionMatrix, names: dict[int, str] | None = None) -> dict[str, Any]:
    """mIoU, mIoU without background, pixel accuracy and per-class IoU keyed by class name."""
    ious = confusion.iou()
    names = names or {}
    return {
        "miou": confusion.miou(),
        "miou_foreground": confusion.miou(include_background=False),
        "pixel_accuracy": confusion.pixel_accuracy(),
        "iou": {names.get(c, str(c)): v for c, v in enumerate(ious)},
    }
