"""The person-detector interface: what a detector sees, what it proposes, and the registry.

A detector gets a batch of :class:`ImageSample` (an image's file, size and garment masks) and
returns, per image, a list of :class:`Proposal`: a box (``x, y, w, h`` in pixels of the
image), a confidence in ``[0, 1]``, what was seen (``kind``), and a person mask when the
detector makes one. How much of each proposal the garment masks cover is computed afterwards
by :mod:`workbench.people.coverage`, the same way for every detector.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

Box = tuple[float, float, float, float]  # x, y, w, h in pixels

DETECTOR_NAMES = ("grounding-dino", "torchvision", "opencv", "annotations")


class DetectorError(RuntimeError):
    """A detector that cannot be built or run (missing weights, bad settings ...)."""


@dataclass
class Garment:
    """One garment mask of an image: its category, box and (decoded) mask."""

    category: str
    supercategory: str
    box: Box
    mask: np.ndarray  # (height, width) bool


@dataclass
class ImageSample:
    """What a detector may look at for one image: the photo (read on demand) and its garments."""

    image_id: int
    file_name: str
    width: int
    height: int
    path: Path | None
    garments: list[Garment] = field(default_factory=list)
    rgb: np.ndarray | None = None  # set to skip reading ``path``

    def pixels(self) -> np.ndarray:
        """The photo as an ``(height, width, 3)`` uint8 RGB array."""
        if self.rgb is None:
            from PIL import Image as PILImage

            if self.path is None:
                raise DetectorError(f"image {self.file_name!r} has no file to read")
            try:
                with PILImage.open(self.path) as img:
                    self.rgb = np.asarray(img.convert("RGB"))
            except OSError as exc:
                raise DetectorError(f"cannot read image {self.path}: {exc}") from exc
        return self.rgb

    @cached_property
    def garment_union(self) -> np.ndarray:
        """Every pixel covered by some garment mask, as an ``(height, width)`` bool array."""
        union = np.zeros((self.height, self.width), dtype=bool)
        for garment in self.garments:
            union |= garment.mask
        return union


@dataclass
class Proposal:
    """A proposed person: box, detector confidence in [0, 1], kind, and optional mask.

    ``probe`` is the part of the box the garment masks should cover if this person is
    labelled (defaults to the whole box): a face's probe is the chest below it.
    """

    box: Box
    score: float
    kind: str = "person"
    mask: np.ndarray | None = None  # (height, width) bool
    probe: Box | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Detector(ABC):
    """A person detector: settings (a pydantic model) and a batched ``detect``."""

    name: ClassVar[str]
    needs_pixels: ClassVar[bool] = True
    settings: BaseModel

    @abstractmethod
    def detect(self, samples: Sequence[ImageSample]) -> list[list[Proposal]]:
        """Proposals for each sample, in the order given."""

    def settings_dict(self) -> dict[str, Any]:
        """The settings that change what this detector finds, as plain data."""
        return self.settings.model_dump(mode="json", exclude=self.runtime_fields())

    def runtime_fields(self) -> set[str]:
        """Settings that do not change results (device, batch size): left out of the key."""
        return set()

    def settings_key(self) -> str:
        """A short hash of the detector and its result-changing settings."""
        text = json.dumps({"detector": self.name, **self.settings_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def make_detector(name: str, **settings: Any) -> Detector:
    """The detector called ``name`` with ``settings`` over its defaults (heavy imports here)."""
    clean = {k: v for k, v in settings.items() if v is not None}
    if name == "opencv":
        from workbench.people.opencv import OpenCVDetector, OpenCVSettings

        return OpenCVDetector(OpenCVSettings(**clean))
    if name == "annotations":
        from workbench.people.annotations import AnnotationDetector, AnnotationSettings

        return AnnotationDetector(AnnotationSettings(**clean))
    if name == "grounding-dino":
        from workbench.people.grounding_dino import GroundingDinoDetector, GroundingDinoSettings

        return GroundingDinoDetector(GroundingDinoSettings(**clean))
    if name == "torchvision":
        from workbench.people.torchvision_rcnn import TorchvisionDetector, TorchvisionSettings

        return TorchvisionDetector(TorchvisionSettings(**clean))
    raise DetectorError(f"unknown detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}")


def clip_box(box: Box, width: int, height: int) -> Box:
    """``box`` clipped to the image (width and height never negative)."""
    x, y, w, h = box
    x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``x, y, w, h`` boxes."""
    inter = box_intersection(a, b)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def box_intersection(a: Box, b: Box) -> float:
    """Area shared by two ``x, y, w, h`` boxes."""
    ix = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    iy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0.0, ix) * max(0.0, iy)
