"""Tiny captioning models for tests, built once per session from ``workbench.tiny.captioners``.

No weights can be downloaded here, so the tests drive the real loading code (hub id or local
folder) with tiny random models: CLIP, BLIP, Kosmos-2, label lists and a CLIP tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from workbench.tiny.captioners import (save_tiny_blip, save_tiny_clip, save_tiny_clip_tokenizer, save_tiny_kosmos2,
                                      write_label_lists)


def random_images(n: int, seed: int = 0, size: tuple[int, int] = (40, 48)) -> list[Image.Image]:
    """``n`` random RGB images (width, height = ``size``)."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


@dataclass
class TinyModels:
    """Paths of the saved tiny models."""

    clip: Path
    blip: Path
    kosmos2: Path
    labels: Path
    tokenizer: Path


def build_tiny_models(root: Path) -> TinyModels:
    """Every tiny model under ``root``."""
    return TinyModels(
        clip=save_tiny_clip(root / "clip"),
        blip=save_tiny_blip(root / "blip"),
        kosmos2=save_tiny_kosmos2(root / "kosmos2"),
        labels=write_label_lists(root / "labels"),
        tokenizer=save_tiny_clip_tokenizer(root / "clip-tokenizer"),
    )


_built: dict[str, TinyModels] = {}


def shared_tiny_models(tmp_path_factory) -> TinyModels:
    """The tiny models, built once per test session (several test modules share them)."""
    if "models" not in _built:
        _built["models"] = build_tiny_models(tmp_path_factory.mktemp("tiny-captioners"))
    return _built["models"]
