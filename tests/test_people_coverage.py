"""Coverage of proposed people by garment masks, and the image-level score, on constructed masks."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.people.coverage import (
    CoverageSettings,
    box_coverage,
    image_score,
    mask_coverage,
    proposal_coverage,
    unlabelled_score,
)
from workbench.people.detectors import Proposal


@pytest.fixture
def garments() -> np.ndarray:
    """A 100x200 image whose garments cover the block x 20-39, y 10-59."""
    covered = np.zeros((100, 200), bool)
    covered[10:60, 20:40] = True
    return covered


def test_box_coverage_is_the_covered_share_of_the_box(garments):
    assert box_coverage(garments, (20, 10, 20, 50)) == 1.0
    assert box_coverage(garments, (20, 10, 40, 50)) == pytest.approx(0.5)
    assert box_coverage(garments, (120, 10, 40, 50)) == 0.0
    assert box_coverage(garments, (190, 90, 50, 50)) == 0.0  # mostly outside: only the inside counts
    assert box_coverage(garments, (300, 300, 10, 10)) == 0.0  # wholly outside


def test_mask_coverage_uses_the_person_silhouette(garments):
    person = np.zeros_like(garments)
    person[0:60, 20:40] = True  # head (uncovered, 10 rows) over a covered body (50 rows)
    assert mask_coverage(garments, person) == pytest.approx(50 / 60)
    assert mask_coverage(garments, np.zeros_like(garments)) == 0.0
    with pytest.raises(ValueError, match="person mask is 10x10 but the garment masks are 200x100"):
        mask_coverage(garments, np.zeros((10, 10), bool))


def test_a_proposal_is_measured_by_its_mask_then_its_probe_then_its_box(garments):
    mask = np.zeros_like(garments)
    mask[10:20, 20:30] = True
    box = (0, 0, 100, 100)
    assert proposal_coverage(garments, Proposal(box, 1.0, mask=mask)) == 1.0
    assert proposal_coverage(garments, Proposal(box, 1.0, probe=(20, 10, 20, 50))) == 1.0
    assert proposal_coverage(garments, Proposal(box, 1.0)) == pytest.approx(1000 / 10000)


def test_unlabelled_score_falls_with_coverage_and_scales_with_confidence():
    s = CoverageSettings(box_full_coverage=0.2)
    body = Proposal((0, 0, 10, 10), 0.8, "body")
    assert unlabelled_score(body, 0.0, s) == pytest.approx(0.8)
    assert unlabelled_score(body, 0.1, s) == pytest.approx(0.4)
    assert unlabelled_score(body, 0.2, s) == 0.0
    assert unlabelled_score(body, 0.9, s) == 0.0
    assert unlabelled_score(Proposal((0, 0, 10, 10), 1.0, "labelled"), 0.0, s) == 0.0


def test_image_score_is_the_worst_proposal_and_thresholds_are_per_detector():
    assert image_score([0.1, 0.7, 0.3]) == 0.7
    assert image_score([]) == 0.0
    s = CoverageSettings(thresholds={"opencv": 0.3})
    assert s.threshold("opencv") == 0.3
    assert s.threshold("annotations") == CoverageSettings().threshold("annotations")
