"""An offline person detector from what ships inside ``opencv-python-headless`` 4.x.

Three classic detectors, none of them good alone (see ``../shared/OFFLINE-MODELS.md`` and
``bench/people.py``), combined:

- HOG + linear SVM people detector (Dalal-Triggs, 64x128 window): whole standing bodies. The
  window needs background around a person, so the image is first padded by replicating its
  border (``pad_fraction``); on the demo's tightly framed figures that is the difference
  between finding few big figures and finding almost all of them. The image is downscaled to
  ``max_side`` first: HOG's cost grows with the pixel count and big figures do not need it.
- Haar frontal-face cascade: faces; a face implies a person below it (box: about four face
  widths wide and seven and a half face heights tall). A face inside the head region of a HOG
  body confirms that body instead of adding a person.
- Haar upper-body cascade: many false hits on its own (on the demo about as many false as
  true), so it only confirms a HOG body whose top it overlaps; it never adds a person.

Confidences are the detectors' own margins mapped to [0, 1] (``*_full_weight``: the margin
counted as certain); two cues on one person combine as independent evidence
``1 - (1 - a)(1 - b)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from workbench.people.detectors import Box, Detector, ImageSample, Proposal, box_intersection, clip_box


class OpenCVSettings(BaseModel):
    """Settings of the OpenCV detector (defaults chosen on the demo dataset, seed 1)."""

    max_side: int = Field(400, ge=64, description="Downscale so the longer side is at most this for HOG.")
    pad_fraction: float = Field(0.15, ge=0, le=1, description="Border replicated around the image before HOG, "
                                "as a share of the longer side.")
    hog_stride: int = Field(8, ge=4, description="HOG window stride in pixels (8 or 4; 4 is slower).")
    hog_scale: float = Field(1.05, gt=1, description="HOG image pyramid step.")
    hog_full_weight: float = Field(2.5, gt=0, description="HOG SVM margin counted as a certain body.")
    faces: bool = Field(True, description="Use the Haar frontal-face cascade.")
    face_scale: float = Field(1.1, gt=1, description="Haar pyramid step.")
    face_neighbours: int = Field(4, ge=1, description="Haar minNeighbors: higher = fewer, surer faces.")
    face_min_px: int = Field(16, ge=8, description="Smallest face searched, in pixels.")
    face_max_side: int = Field(1200, ge=64, description="Downscale so the longer side is at most this for "
                               "the Haar cascades (their cost grows with the pixel count).")
    face_full_weight: float = Field(6.0, gt=0, description="Haar face level weight counted as certain.")
    upper_body: bool = Field(True, description="Use the Haar upper-body cascade to confirm bodies.")
    upper_body_boost: float = Field(0.2, ge=0, le=1, description="Confidence an upper-body hit adds to a body.")


class OpenCVDetector(Detector):
    """HOG bodies + Haar faces (and upper bodies as confirmation), offline."""

    name = "opencv"

    def __init__(self, settings: OpenCVSettings | None = None) -> None:
        import cv2

        self.settings = settings or OpenCVSettings()
        self._cv2 = cv2
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self._face = self._cascade("haarcascade_frontalface_default.xml")
        self._upper = self._cascade("haarcascade_upperbody.xml")

    def _cascade(self, file_name: str) -> Any:
        from pathlib import Path

        from workbench.people.detectors import DetectorError

        path = Path(self._cv2.data.haarcascades) / file_name
        cascade = self._cv2.CascadeClassifier(str(path))
        if cascade.empty():
            raise DetectorError(f"OpenCV cascade {path} is missing: opencv-python-headless 5.x dropped "
                                "them; install opencv-python-headless==4.14.0.94")
        return cascade

    def detect(self, samples: Sequence[ImageSample]) -> list[list[Proposal]]:
        """Bodies and faces in each image, combined into person proposals."""
        return [self.detect_one(sample.pixels()) for sample in samples]

    def detect_one(self, rgb: np.ndarray) -> list[Proposal]:
        """Person proposals in one ``(h, w, 3)`` RGB image."""
        cv2, s = self._cv2, self.settings
        height, width = rgb.shape[:2]
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        bodies = self._bodies(gray)
        faces = self._faces(gray) if s.faces else []
        uppers = self._upper_bodies(gray) if s.upper_body else []

        proposals: list[Proposal] = []
        for box, weight in bodies:
            score = min(1.0, weight / s.hog_full_weight)
            details: dict[str, Any] = {"hog_weight": round(weight, 3)}
            if any(_in_head_region(u, box, 0.45) for u in uppers):
                score = _either(score, s.upper_body_boost)
                details["upper_body"] = True
            proposals.append(Proposal(clip_box(box, width, height), score, "body", details=details))
        for face, weight in faces:
            face_score = min(1.0, max(0.0, weight) / s.face_full_weight)
            host = next((p for p in proposals if p.kind == "body" and _in_head_region(face, p.box, 0.3)), None)
            if host is not None:
                host.score = _either(host.score, face_score)
                host.details["face"] = [round(v, 1) for v in face]
                continue
            fx, fy, fw, fh = face
            cx = fx + fw / 2
            implied = clip_box((cx - 2.0 * fw, fy, 4.0 * fw, 7.5 * fh), width, height)
            chest = clip_box((cx - 0.8 * fw, fy + 1.4 * fh, 1.6 * fw, 2.0 * fh), width, height)
            proposals.append(Proposal(implied, face_score, "face", probe=chest,
                                      details={"face": [round(v, 1) for v in face],
                                               "face_weight": round(weight, 3)}))
        return [p for p in proposals if p.box[2] > 0 and p.box[3] > 0]

    def _bodies(self, gray: np.ndarray) -> list[tuple[Box, float]]:
        cv2, s = self._cv2, self.settings
        height, width = gray.shape
        scale = min(1.0, s.max_side / max(height, width))
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
        pad = int(round(s.pad_fraction * max(small.shape)))
        padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else small
        stride = (s.hog_stride, s.hog_stride)
        rects, weights = self._hog.detectMultiScale(padded, winStride=stride, padding=(8, 8), scale=s.hog_scale)
        found = []
        for (x, y, w, h), weight in zip(np.asarray(rects).reshape(-1, 4), np.ravel(weights)):
            found.append((((x - pad) / scale, (y - pad) / scale, w / scale, h / scale), float(weight)))
        return found

    def _for_cascades(self, gray: np.ndarray) -> tuple[np.ndarray, float]:
        cv2 = self._cv2
        scale = min(1.0, self.settings.face_max_side / max(gray.shape))
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
        return cv2.equalizeHist(small), scale

    def _faces(self, gray: np.ndarray) -> list[tuple[Box, float]]:
        s = self.settings
        equalised, scale = self._for_cascades(gray)
        rects, _levels, weights = self._face.detectMultiScale3(
            equalised, s.face_scale, s.face_neighbours, minSize=(s.face_min_px, s.face_min_px),
            outputRejectLevels=True)
        return [(tuple(float(v) / scale for v in r), float(w))
                for r, w in zip(np.asarray(rects).reshape(-1, 4), np.ravel(weights))]

    def _upper_bodies(self, gray: np.ndarray) -> list[Box]:
        equalised, scale = self._for_cascades(gray)
        rects = self._upper.detectMultiScale(equalised, 1.1, 3, minSize=(30, 30))
        return [tuple(float(v) / scale for v in r) for r in np.asarray(rects).reshape(-1, 4)]


def _either(a: float, b: float) -> float:
    """Two independent pieces of evidence for the same person."""
    return 1.0 - (1.0 - a) * (1.0 - b)


def _in_head_region(part: Box, body: Box, depth: float) -> bool:
    """Whether ``part``'s centre lies in the top ``depth`` of ``body`` and mostly inside it."""
    cx, cy = part[0] + part[2] / 2, part[1] + part[3] / 2
    bx, by, bw, bh = body
    inside = box_intersection(part, body) >= 0.5 * part[2] * part[3]
    return inside and bx <= cx <= bx + bw and by <= cy <= by + depth * bh
