"""The free-space proposal outlines the unlabelled person: the uncovered foreground of its stretch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import select

from db.engine import session_scope
from db.models import Dataset, Image
from workbench.people.annotations import AnnotationDetector, AnnotationSettings
from workbench.people.detect import load_samples
from workbench.people.detectors import box_iou as iou
from workbench.people.foreground import foreground_box

W, H = 300, 240


def scene() -> tuple[np.ndarray, np.ndarray]:
    """A wall darkening downwards over a floor; a labelled person (garments) on the right and an
    unlabelled one (no garment) at x 40-80, y 60-200 on the left."""
    rows = np.linspace(180, 120, H)[:, None, None]
    rgb = np.broadcast_to(rows * np.array([1.0, 0.95, 0.9]), (H, W, 3)).copy()
    rgb[170:] *= 0.7  # the floor
    garments = np.zeros((H, W), bool)
    garments[50:210, 200:260] = True
    rgb[garments] = (40, 60, 160)
    rgb[60:200, 40:80] = (200, 150, 120)  # skin and a light top
    rgb[120:200, 40:80] = (30, 30, 30)  # dark trousers
    return rgb.astype(np.uint8), garments


def test_the_box_fits_the_foreground_no_garment_covers():
    rgb, garments = scene()
    box = foreground_box(rgb, garments, [(200, 50, 60, 160)], (0, 200))
    assert box is not None and iou(box, (40, 60, 40, 140)) > 0.85, box


def test_an_empty_stretch_has_no_box():
    rgb, garments = scene()
    rgb[60:200, 40:80] = rgb[60:200, 100:140]  # the unlabelled person painted over with wall
    assert foreground_box(rgb, garments, [(200, 50, 60, 160)], (0, 200)) is None


@pytest.fixture
def demo_samples(demo_engine, demo_files):
    truth = json.loads(demo_files.truth.read_text())["images"]
    with session_scope(demo_engine) as session:
        dataset = session.scalar(select(Dataset))
        samples = load_samples(session, dataset, list(session.scalars(select(Image.id))))
    return [(s, [p["box"] for p in truth[s.file_name]["people"] if not p["labelled"]]) for s in samples]


def test_on_the_demo_the_free_space_box_outlines_the_unlabelled_person(demo_samples):
    fitted, stretch = AnnotationDetector(), AnnotationDetector(AnnotationSettings(fit_to_foreground=False))
    with_person = [(s, boxes) for s, boxes in demo_samples if boxes]
    assert with_person  # the demo always leaves someone unlabelled
    for sample, boxes in with_person:
        [box] = [p.box for p in fitted.detect_one(sample) if p.kind == "free-space"]
        [wide] = [p.box for p in stretch.detect_one(sample) if p.kind == "free-space"]
        overlap = max(iou(box, truth) for truth in boxes)
        assert overlap >= 0.5, (sample.file_name, box, boxes)
        assert overlap > max(iou(wide, truth) for truth in boxes), sample.file_name
