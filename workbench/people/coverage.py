"""How much of a proposed person the garment masks cover, and the image-level score.

A labelled person's garments cover a good part of them; an unlabelled person has no garment
mask at all. So for each proposal:

- coverage = share of the person's mask covered by garment masks when the detector gives a
  mask; otherwise share of the proposal's probe box (the whole box, or for a face the chest
  below it);
- unlabelled score = detector confidence x how far coverage falls short of what a labelled
  person shows (``1 - coverage / full_coverage``, clipped to [0, 1]);

and the image score, "probably an unlabelled person here", is the highest unlabelled score of
its proposals. An image at or above the detector's threshold joins the review queue.

Defaults were measured on the demo dataset (``bench/people.py``, seed 1 used for choosing,
seed 0 reported): labelled people's garments covered 11-42 % of their HOG box (5th
percentile 13 %) and 67-100 % of the chest below their face; unlabelled people 0-5 % and 0 %.
The mask default is not measured (no detector with masks runs without downloaded weights
here): it assumes garments cover well over a third of a labelled person's silhouette.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from workbench.people.detectors import Box, Proposal

# Kinds that stand for people already labelled (annotation clusters): never "unlabelled".
LABELLED_KINDS = ("labelled",)


class CoverageSettings(BaseModel):
    """Thresholds of the coverage score and of flagging, per detector."""

    box_full_coverage: float = Field(0.10, gt=0, le=1, description="Share of a person's box that a "
                                     "labelled person's garments cover at least.")
    probe_full_coverage: float = Field(0.5, gt=0, le=1, description="Share of a face's chest probe that a "
                                       "labelled person's garments cover at least.")
    mask_full_coverage: float = Field(0.35, gt=0, le=1, description="Share of a person mask that a labelled "
                                      "person's garments cover at least (not measured: no mask "
                                      "detector runs offline).")
    thresholds: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_THRESHOLDS),
        description="Image score at or above which an image is flagged, per detector.",
    )

    def threshold(self, detector: str) -> float:
        """The flagging threshold of ``detector``."""
        return self.thresholds.get(detector, DEFAULT_THRESHOLDS.get(detector, 0.5))


# opencv and annotations: measured on the demo (bench/people.py --tune, seed 1). The
# network detectors' scores are calibrated probabilities; 0.5 is their usual cut.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "opencv": 0.45,
    "annotations": 0.5,
    "grounding-dino": 0.5,
    "torchvision": 0.5,
}


def box_coverage(covered: np.ndarray, box: Box) -> float:
    """Share of the pixels of ``box`` (``x, y, w, h``) that are set in ``covered``."""
    height, width = covered.shape
    x0, y0 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    x1 = min(width, int(round(box[0] + box[2])))
    y1 = min(height, int(round(box[1] + box[3])))
    if x1 <= x0 or y1 <= y0:
        return 0.0
    return float(covered[y0:y1, x0:x1].mean())


def mask_coverage(covered: np.ndarray, mask: np.ndarray) -> float:
    """Share of the pixels of ``mask`` that are set in ``covered`` (0 for an empty mask)."""
    if covered.shape != mask.shape:
        raise ValueError(f"person mask is {mask.shape[1]}x{mask.shape[0]} but the garment masks are "
                         f"{covered.shape[1]}x{covered.shape[0]}")
    area = int(mask.sum())
    return float((covered & mask).sum() / area) if area else 0.0


def proposal_coverage(covered: np.ndarray, proposal: Proposal) -> float:
    """Coverage of one proposal: by its mask if it has one, else by its probe box."""
    if proposal.mask is not None:
        return mask_coverage(covered, proposal.mask)
    return box_coverage(covered, proposal.probe or proposal.box)


def full_coverage(proposal: Proposal, settings: CoverageSettings) -> float:
    """The coverage at which this proposal counts as a labelled person."""
    if proposal.mask is not None:
        return settings.mask_full_coverage
    if proposal.probe is not None:
        return settings.probe_full_coverage
    return settings.box_full_coverage


def unlabelled_score(proposal: Proposal, coverage: float, settings: CoverageSettings) -> float:
    """How likely this proposal is a person without garment masks, in [0, 1]."""
    if proposal.kind in LABELLED_KINDS:
        return 0.0
    shortfall = 1.0 - coverage / full_coverage(proposal, settings)
    return float(np.clip(proposal.score, 0.0, 1.0) * np.clip(shortfall, 0.0, 1.0))


def image_score(scores: Sequence[float]) -> float:
    """The image-level score: the highest unlabelled score of its proposals (0 without any)."""
    return float(max(scores, default=0.0))
