"""The captioner interface (a batch of images in, texts out) and the one place models load.

Every captioner loads its models through :func:`load_model`, from a hub id, a local folder or a
model registry name (:mod:`workbench.models`), and they are cached there per kind (``"caption"``, ``"clip"``, ``"kosmos2"``), so several
captioners, modes and pages share one copy.
"""

from __future__ import annotations

import hashlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image as PILImage

T = TypeVar("T")

_models: dict[tuple[str, str], Any] = {}
_models_lock = threading.Lock()


class CaptionerError(RuntimeError):
    """A captioner that cannot run (model not found, bad setting), with the fix in the message."""


@dataclass
class Phrase:
    """A grounded phrase: its text, its span in the caption, its box ``(x0, y0, x1, y1)`` in pixels."""

    text: str
    start: int
    end: int
    box: tuple[float, float, float, float]


@dataclass
class CaptionResult:
    """What a captioner says about one image: the text, and for grounded models its phrases."""

    text: str
    phrases: list[Phrase] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Captioner(ABC):
    """A captioning model behind one interface: a batch of PIL images in, one result per source out.

    ``sources`` names what a run stores (one captioner may give several, e.g. the CLIP
    Interrogator's modes, which share one pass of image features). ``model`` and ``settings``
    identify the output: the same image, source, model and settings is captioned only once.
    """

    sources: list[str]
    model: str
    batch_size: int = 8

    @abstractmethod
    def settings_for(self, source: str) -> dict[str, Any]:
        """The settings that shape ``source``'s text (stored with each caption)."""

    @abstractmethod
    def caption_batch(self, images: list[PILImage.Image]) -> dict[str, list[CaptionResult]]:
        """``{source: one result per image}`` for a batch of RGB images."""

    def caption(self, images: list[PILImage.Image]) -> list[str]:
        """The texts of the first source, one per image."""
        return [r.text for r in self.caption_batch(images)[self.sources[0]]]


def settings_key(model: str, settings: dict[str, Any]) -> str:
    """A short stable hash of a model and its settings (what makes two captions the same run)."""
    payload = json.dumps({"model": model, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> this process's accelerator (its own GPU under ``accelerate launch``) or ``cpu``."""
    if device != "auto":
        return device
    import os

    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def is_local(source: str) -> bool:
    """Whether a model reference is a folder on this machine (otherwise: a hub id)."""
    return Path(source).expanduser().exists()


def load_model(kind: str, source: str, loader: Callable[[], T], device: str = "") -> T:
    """The ``kind`` model (a registry kind: ``caption``, ``clip``, ``kosmos2``) from ``source``
    (hub id, spec or folder), loaded once per process and device by ``loader``.

    The load runs inside :func:`workbench.models.loading`: an unreachable hub is noticed in
    seconds, and a failed load says why and gives the registry's fix for that kind.
    """
    from workbench.models import ModelNotReady, loading

    key = (kind, f"{source}@{device}")
    with _models_lock:
        if key in _models:
            return _models[key]
    try:
        with loading(kind, source, passthrough=(CaptionerError,)):
            model = loader()
    except ModelNotReady as exc:
        raise CaptionerError(str(exc)) from exc
    with _models_lock:
        return _models.setdefault(key, model)


def clear_models() -> None:
    """Forget every cached model (tests; freeing GPU memory)."""
    with _models_lock:
        _models.clear()


def open_rgb(path: str | Path) -> PILImage.Image:
    """An image file as RGB, fully read (so the file is closed)."""
    with PILImage.open(path) as image:
        return image.convert("RGB")
