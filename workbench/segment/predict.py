"""Predict conditioning masks from photos: SegFormer (batched) or the public cloth U2NET.

A segmenter turns photos into label maps whose pixel values are its scheme's class values, at
each photo's own size. :func:`predict_mask` is the one-photo entry point (the Generate page);
:mod:`workbench.segment.store` runs segmenters over a dataset or a folder.

SegFormer input: the photo resized (bilinear) to ``resolution`` x ``resolution``, scaled to
[0, 1] and normalised with ImageNet's mean and std, exactly as ``train/segmenter.py`` feeds it;
its logits (a quarter of the input size) are upsampled to the photo's size before the argmax.
The cloth U2NET is fed as rembg feeds it (768 x 768, its own normalisation); the argmax of its
4-class output is resized nearest-neighbour, so no value outside the classes appears.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from workbench.models import is_tiny, resolve
from workbench.segment.loaders import (
    CLOTH_MODEL,
    CLOTH_SCHEME,
    SegmenterScheme,
    SegmentError,
    cloth_scheme,
    load_cloth_session,
    load_segformer,
    segformer_scheme,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLOTH_SIZE = (768, 768)
CLOTH_PREFIX = "u2net-cloth"  # the public cloth U2NET: "u2net-cloth" (= registry name u2net-cloth-seg) or "u2net-cloth:PATH"


class Segmenter(Protocol):
    """Anything that predicts label maps (scheme values) for a batch of photos."""

    scheme: SegmenterScheme
    source: str
    tiny: bool  # a tiny random-weight test model: its masks are noise

    def predict(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """One ``(height, width)`` uint8 label map per photo, at the photo's size."""


def pixel_tensor(images: Sequence[Image.Image], resolution: int):
    """(B, 3, resolution, resolution) float: photos resized and ImageNet-normalised."""
    import torch

    arrays = [np.asarray(im.convert("RGB").resize((resolution, resolution), Image.Resampling.BILINEAR))
              for im in images]
    return normalise(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))


def normalise(pixels):
    """uint8 (B, 3, H, W) -> ImageNet-normalised float."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float() / 255 - mean) / std


def default_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class SegformerSegmenter:
    """A SegFormer run in batches of ``batch_size`` photos at ``resolution``."""

    model: Any
    scheme: SegmenterScheme
    source: str = "segformer"
    resolution: int = 512
    batch_size: int = 8
    device: str = field(default_factory=default_device)
    half: bool = False
    tiny: bool = False

    def __post_init__(self) -> None:
        import torch

        self.model.to(self.device).eval()
        if self.half and self.device == "cuda":
            self.model.to(torch.float16)
        self._lut = np.asarray(self.scheme.values, dtype=np.uint8)

    def predict(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """Label maps of ``images``, ``batch_size`` photos per forward pass."""
        out: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            out.extend(self._predict_batch(images[start:start + self.batch_size]))
        return out

    def _predict_batch(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        import torch
        import torch.nn.functional as F

        pixels = pixel_tensor(images, self.resolution).to(self.device, next(self.model.parameters()).dtype)
        with torch.inference_mode():
            logits = self.model(pixel_values=pixels).logits.float()
            maps = []
            for i, image in enumerate(images):
                width, height = image.size
                up = F.interpolate(logits[i:i + 1], size=(height, width), mode="bilinear", align_corners=False)
                maps.append(up.argmax(1)[0])
            results = [m.to(torch.uint8).cpu().numpy() for m in maps]
        return [self._lut[r] for r in results]


@dataclass
class ClothSegmenter:
    """The public cloth-segmentation U2NET through rembg's ``u2net_cloth_seg`` session."""

    session: Any
    source: str = CLOTH_MODEL
    scheme: SegmenterScheme = field(default_factory=cloth_scheme)
    tiny: bool = False

    def predict(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """Label maps of ``images`` (one forward pass each: the model takes one image)."""
        out = []
        for image in images:
            inputs = self.session.normalize(image, IMAGENET_MEAN, IMAGENET_STD, CLOTH_SIZE)
            logits = self.session.inner_session.run(None, inputs)[0]
            classes = np.argmax(logits[0], axis=0).astype(np.uint8)
            if logits.shape[1] != len(self.scheme.values):
                raise SegmentError(f"{self.source}: the model gives {logits.shape[1]} classes, not the "
                                   f"{len(self.scheme.values)} of cloth-segmentation; is it u2net_cloth_seg.onnx?")
            resized = Image.fromarray(classes).resize(image.size, Image.Resampling.NEAREST)
            out.append(np.asarray(resized))
        return out


def open_segmenter(model: str | Path | Segmenter | None = None, *, resolution: int | None = None,
                   batch_size: int = 8, device: str | None = None) -> Segmenter:
    """A segmenter from a model spec: a registry name (``u2net-cloth-seg``, ``segformer-clothes``,
    ``tiny-segformer`` ...), ``u2net-cloth[:PATH]`` or an ``.onnx`` path (the public cloth model), a
    SegFormer hub id or folder, or a segmenter already built (returned as is). ``None``: the cloth model."""
    if model is not None and not isinstance(model, (str, Path)):
        return model
    spec = str(model) if model is not None else CLOTH_MODEL
    if spec == CLOTH_PREFIX or spec.startswith(CLOTH_PREFIX + ":"):
        path = spec.split(":", 1)[1] if ":" in spec else None
        return _cloth(path, spec)
    local = resolve(spec, "segmenter")
    tiny = Path(local).exists() and is_tiny(local)
    if local.lower().endswith(".onnx") or spec == CLOTH_MODEL:
        # a registry name is its own source; a path is recorded as u2net-cloth:PATH
        return _cloth(local if local != spec or spec.endswith(".onnx") else None,
                      f"{CLOTH_PREFIX}:{spec}" if spec.endswith(".onnx") else spec)
    loaded = load_segformer(spec)
    trained_at = getattr(loaded.config, "workbench_resolution", None)
    return SegformerSegmenter(loaded, segformer_scheme(loaded, spec), source=spec,
                              resolution=resolution or trained_at or 512, batch_size=batch_size,
                              device=device or default_device(), tiny=tiny)


def _cloth(path: str | None, source: str) -> ClothSegmenter:
    """The cloth U2NET at ``path`` (``None``: where the registry finds it), recorded as ``source``."""
    name = None if source.startswith(CLOTH_PREFIX + ":") else source
    tiny = path is not None and Path(path).expanduser().exists() and is_tiny(Path(path).expanduser())
    return ClothSegmenter(load_cloth_session(path, name), source=source, tiny=tiny)


def scheme_class_names(scheme: str) -> dict[str, int]:
    """Class name -> value of a built-in scheme (stored schemes are read by the store's callers)."""
    from workbench.schemes import SchemeNotFound, builtin_scheme

    try:
        definition = builtin_scheme(scheme)
    except SchemeNotFound as exc:
        raise SegmentError(str(exc)) from None
    return {c.name: c.value for c in definition.classes}


def to_scheme(label_map: np.ndarray, predicted: SegmenterScheme, scheme: str,
              target: dict[str, int] | None = None) -> np.ndarray:
    """A label map in ``predicted``'s values re-expressed in ``scheme``'s values, class by class name.

    Where the model was trained on ``scheme`` itself, nothing changes. ``target`` (name -> value)
    is the scheme's classes when it is not a built-in one.
    """
    if predicted.name == scheme:
        return label_map
    target = target if target is not None else scheme_class_names(scheme)
    missing = [n for n in predicted.names if n not in target]
    if missing:
        raise SegmentError(f"the segmenter predicts scheme {predicted.name!r}, whose classes "
                           f"{', '.join(map(repr, missing))} scheme {scheme!r} does not have; use a segmenter "
                           f"trained on {scheme!r} (`python -m workbench segment train --scheme {scheme} ...`)")
    lut = np.zeros(256, np.uint8)
    for value, name in zip(predicted.values, predicted.names):
        lut[value] = target[name]
    return lut[label_map]


def predict_mask(image: Image.Image, scheme: str = CLOTH_SCHEME, model: str | Path | Segmenter | None = None) -> np.ndarray:
    """The ``(height, width)`` label map of one photo in ``scheme``'s class values.

    ``model``: a segmenter, a SegFormer hub id or folder, or ``u2net-cloth[:PATH]`` / an
    ``.onnx`` path for the public cloth model (the default; it predicts ``cloth-seg-compat``,
    whose class names ``cloth-seg`` shares).
    """
    if not isinstance(image, Image.Image):
        raise SegmentError(f"predict_mask takes a PIL image, not {type(image).__name__}")
    segmenter = open_segmenter(model)
    return to_scheme(segmenter.predict([image])[0], segmenter.scheme, scheme)
