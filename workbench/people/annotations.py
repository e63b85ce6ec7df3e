"""Annotation structure: group garment masks into people and count the labelled ones.

Garments that touch (after a small dilation) form a region; regions
stacked in the same column (a hat above a coat above shoes) are one person; a person with
more than two shoes or sleeves, or two whole-body garments side by side, is really several
people drawn close together and is split by that count. The result is how many people are
labelled and where.

What annotation structure can say about an *unlabelled* person is weak: only that the labelled
people leave room for someone else. The score here is the widest stretch of the image width
with no garment of a labelled person in it: a lone person in the middle of the frame leaves
about a quarter of the width on each side, someone standing beside an unlabelled companion
usually leaves half of it empty. (Measured on the demo with seed 1: empty share at most 0.44
for nine in ten images without an unlabelled person, at least 0.34 for nine in ten with one;
the same stretch counted in labelled-person widths separated worse.) ``bench/people.py``
prints how far that carries.

That score needs no pixels. Where the photo can be read, the free-space box is then fitted to
the foreground no garment covers inside that stretch (:mod:`workbench.people.foreground`), so
that it outlines the unlabelled person rather than the whole empty stretch; an unreadable
photo keeps the stretch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, Field

from workbench.people.detectors import Box, Detector, DetectorError, Garment, ImageSample, Proposal, clip_box
from workbench.people.foreground import ForegroundSettings, foreground_box

SHOE_NAMES = ("shoe",)
SLEEVE_NAMES = ("sleeve",)
WHOLE_BODY_NAMES = ("dress", "jumpsuit")


class AnnotationSettings(BaseModel):
    """How garments are grouped into people, and how free space is scored."""

    touch_fraction: float = Field(0.01, ge=0, description="Garments closer than this share of the image "
                                  "diagonal touch.")
    column_overlap: float = Field(0.5, ge=0, le=1, description="Regions whose horizontal extents overlap by "
                                  "this share of the narrower one are stacked in one column ...")
    column_gap: float = Field(1.0, ge=0, description="... when the vertical gap between them is at most this "
                              "many heights of the taller one.")
    free_low: float = Field(0.35, ge=0, le=1, description="Empty share of the image width that scores 0.")
    free_high: float = Field(0.55, ge=0, le=1, description="Empty share of the image width that scores 1.")
    fit_to_foreground: bool = Field(True, description="Fit the free-space box to the uncovered foreground "
                                    "in the photo (off: the whole empty stretch; no photo is read).")
    foreground: ForegroundSettings = Field(default_factory=ForegroundSettings)


@dataclass
class PersonCluster:
    """Garments of (probably) one labelled person, or of ``people`` people drawn close together."""

    garments: list[int]
    box: Box
    people: int = 1
    counts: dict[str, int] = field(default_factory=dict)


def cluster_garments(garments: Sequence[Garment], width: int, height: int,
                     settings: AnnotationSettings | None = None) -> list[PersonCluster]:
    """Group an image's garments into per-person clusters, left to right."""
    import cv2

    settings = settings or AnnotationSettings()
    if not garments:
        return []
    union = np.zeros((height, width), np.uint8)
    for g in garments:
        union[g.mask] = 1
    radius = max(1, int(round(settings.touch_fraction * math.hypot(width, height))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    count, labels = cv2.connectedComponents(cv2.dilate(union, kernel), connectivity=8)

    # Each garment joins the region holding most of its pixels.
    parent = list(range(count))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    region_of = []
    for g in garments:
        hits = np.bincount(labels[g.mask], minlength=count) if g.mask.any() else np.zeros(count, int)
        hits[0] = 0
        region_of.append(int(hits.argmax()) if hits.any() else 0)

    regions = sorted(set(region_of))
    boxes = {r: _union_box([garments[i].box for i, rr in enumerate(region_of) if rr == r]) for r in regions}
    merged = True
    while merged:  # stack regions in one column until nothing changes
        merged = False
        roots = sorted({find(r) for r in regions})
        for a_i, a in enumerate(roots):
            for b in roots[a_i + 1:]:
                if _same_column(boxes[a], boxes[b], settings):
                    parent[b] = a
                    boxes[a] = _union_box([boxes[a], boxes[b]])
                    merged = True
                    break
            if merged:
                break

    members: dict[int, list[int]] = {}
    for i, r in enumerate(region_of):
        members.setdefault(find(r), []).append(i)
    clusters = [_count_people(ids, garments) for ids in members.values()]
    return sorted(clusters, key=lambda c: c.box[0])


def labelled_people(clusters: Sequence[PersonCluster]) -> int:
    """How many people the clusters hold."""
    return sum(c.people for c in clusters)


def _same_column(a: Box, b: Box, settings: AnnotationSettings) -> bool:
    overlap = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    narrower = max(1.0, min(a[2], b[2]))
    if overlap < settings.column_overlap * narrower:
        return False
    gap = max(a[1], b[1]) - min(a[1] + a[3], b[1] + b[3])
    return gap <= settings.column_gap * max(a[3], b[3])


def _union_box(boxes: Sequence[Box]) -> Box:
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    return (x0, y0, x1 - x0, y1 - y0)


def _places(boxes: Sequence[Box]) -> int:
    """How many distinct places the boxes mark (boxes mostly inside each other are one)."""
    places: list[Box] = []
    for box in boxes:
        area = max(1.0, box[2] * box[3])
        for i, place in enumerate(places):
            ix = min(box[0] + box[2], place[0] + place[2]) - max(box[0], place[0])
            iy = min(box[1] + box[3], place[1] + place[3]) - max(box[1], place[1])
            if ix > 0 and iy > 0 and ix * iy >= 0.3 * min(area, place[2] * place[3]):
                places[i] = _union_box([place, box])
                break
        else:
            places.append(box)
    return len(places)


def _count_people(ids: list[int], garments: Sequence[Garment]) -> PersonCluster:
    def of(names: tuple[str, ...]) -> list[Box]:
        return [garments[i].box for i in ids if garments[i].category in names]

    counts = {"shoes": _places(of(SHOE_NAMES)), "sleeves": _places(of(SLEEVE_NAMES)),
              "whole_body": _places(of(WHOLE_BODY_NAMES))}
    people = max(1, math.ceil(counts["shoes"] / 2), math.ceil(counts["sleeves"] / 2), counts["whole_body"])
    return PersonCluster(garments=ids, box=_union_box([garments[i].box for i in ids]), people=people,
                         counts=counts)


def free_space(clusters: Sequence[PersonCluster], width: int, height: int) -> tuple[float, Box | None]:
    """The widest stretch beside the labelled people as a share of the image width, and where."""
    if not clusters:
        return 0.0, None
    top = min(c.box[1] for c in clusters)
    bottom = max(c.box[1] + c.box[3] for c in clusters)
    edges = [0.0] + [v for c in clusters for v in (c.box[0], c.box[0] + c.box[2])] + [float(width)]
    best, where = 0.0, None
    for left, right in zip(edges[0::2], edges[1::2]):
        if right - left > best:
            best, where = right - left, (left, right)
    if where is None:
        return 0.0, None
    left, right = where
    return best / width, clip_box((left, top, right - left, bottom - top), width, height)


class AnnotationDetector(Detector):
    """Labelled people from garment clusters; room for an unlabelled one from free space."""

    name = "annotations"
    needs_pixels = False  # the photo only sharpens the free-space box; a missing one is no failure

    def __init__(self, settings: AnnotationSettings | None = None) -> None:
        self.settings = settings or AnnotationSettings()

    def detect(self, samples: Sequence[ImageSample]) -> list[list[Proposal]]:
        """Per image: one ``labelled`` proposal per cluster, and a ``free-space`` proposal."""
        return [self.detect_one(s) for s in samples]

    def detect_one(self, sample: ImageSample) -> list[Proposal]:
        """Proposals of one image from its garments alone."""
        s = self.settings
        clusters = cluster_garments(sample.garments, sample.width, sample.height, s)
        proposals = [Proposal(c.box, 1.0, "labelled", details={"people": c.people, **c.counts})
                     for c in clusters]
        share, where = free_space(clusters, sample.width, sample.height)
        if where is not None and where[2] > 0 and where[3] > 0:
            span = max(1e-6, s.free_high - s.free_low)
            score = float(np.clip((share - s.free_low) / span, 0.0, 1.0))
            person_width = float(np.median([c.box[2] / c.people for c in clusters]))
            details = {"empty_share": round(share, 3), "person_widths": round(where[2] / max(1.0, person_width), 2)}
            fitted = self._fit(sample, clusters, where) if s.fit_to_foreground else None
            details["fitted"] = fitted is not None
            proposals.append(Proposal(fitted or where, score, "free-space", details=details))
        return proposals

    def _fit(self, sample: ImageSample, clusters: Sequence[PersonCluster], where: Box) -> Box | None:
        """The free-space stretch's box fitted to its uncovered foreground, if the photo can be read."""
        try:
            rgb = sample.pixels()
        except DetectorError:
            return None
        return foreground_box(rgb, sample.garment_union, [c.box for c in clusters], (where[0], where[0] + where[2]),
                              self.settings.foreground)
