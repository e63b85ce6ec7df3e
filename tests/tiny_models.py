"""Tiny models and training data for tests: the tiny Stable Diffusion fixture, and export folders.

Nothing here is downloaded. The Stable Diffusion comes from ``workbench.tiny.sd`` (randomly
initialised from small configs, saved as an ordinary diffusers folder), so the trainer,
``add_control`` and the pipelines load it through their real ``from_pretrained`` paths.
The export folders follow the two documented layouts (ControlNet reference and Hugging Face
image folder) with single-channel palette PNG masks and a ``manifest.json`` naming the scheme.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.tiny.sd import build_tiny_sd  # noqa: F401  (the builders live in the library)
from workbench.tiny.sdxl import build_tiny_sdxl

TINY_CLASSES = {"0": "background", "1": "upper body", "2": "lower body", "3": "full body"}
TINY_COLOURS = [(0, 0, 0), (255, 0, 0), (0, 0, 255), (0, 255, 0)]


def _figure(rng: np.random.Generator, size: int) -> np.ndarray:
    """A class-id map: a 'person' with an upper and a lower garment or a full-body one."""
    mask = np.zeros((size, size), np.uint8)
    left = int(rng.integers(size // 8, size // 2))
    width = int(rng.integers(size // 4, size // 2))
    top = int(rng.integers(2, size // 4))
    mid = int(rng.integers(size // 3, size // 2)) + top
    bottom = min(size - 2, mid + int(rng.integers(size // 4, size // 2)))
    if rng.random() < 0.5:
        mask[top:mid, left:left + width] = 1
        mask[mid:bottom, left:left + width] = 2
    else:
        mask[top:bottom, left:left + width] = 3
    return mask


def palette_png(mask: np.ndarray, colours=TINY_COLOURS) -> Image.Image:
    """A single-channel palette PNG image of a class-id map."""
    image = Image.fromarray(mask, mode="P")
    flat = [c for colour in colours for c in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    return image


def write_export(root: Path, fmt: str = "controlnet", n: int = 8, size: int = 64, seed: int = 0,
                 validation: int = 2) -> Path:
    """A tiny export folder in ``fmt`` (``controlnet`` or ``imagefolder``) with a manifest.

    The manifest marks the last ``validation`` images as the validation split; photos are drawn from
    their masks (a colour per class plus noise) so that there is something to learn.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    garment = {1: "a red top", 2: "blue trousers", 3: "a green dress"}
    lines, items = [], []
    for i in range(n):
        mask = _figure(rng, size)
        photo = np.full((size, size, 3), 200, np.uint8)
        for value, colour in enumerate(TINY_COLOURS[1:], start=1):
            photo[mask == value] = colour
        photo = np.clip(photo.astype(int) + rng.integers(-20, 20, photo.shape), 0, 255).astype(np.uint8)
        prompt = "a person wearing " + " and ".join(garment[v] for v in sorted(set(mask.flat) - {0}))
        split = "validation" if i >= n - validation else "train"
        if fmt == "controlnet":
            (root / "source").mkdir(exist_ok=True)
            (root / "target").mkdir(exist_ok=True)
            palette_png(mask).save(root / "source" / f"{i}.png")
            Image.fromarray(photo).save(root / "target" / f"{i}.png")
            lines.append({"source": f"source/{i}.png", "target": f"target/{i}.png", "prompt": prompt})
        elif fmt == "imagefolder":
            (root / "images").mkdir(exist_ok=True)
            (root / "conditioning").mkdir(exist_ok=True)
            palette_png(mask).save(root / "conditioning" / f"{i}.png")
            Image.fromarray(photo).save(root / "images" / f"{i}.png")
            lines.append({"file_name": f"images/{i}.png", "conditioning_image_file_name": f"conditioning/{i}.png",
                          "text": prompt})
        else:
            raise ValueError(fmt)
        items.append({"index": i, "file_name": f"{i}.png", "split": split})
    name = "prompt.json" if fmt == "controlnet" else "metadata.jsonl"
    (root / name).write_text("".join(json.dumps(line) + "\n" for line in lines))
    # the layout workbench/export.py writes: the scheme (with its legend) and the split per line index
    manifest = {"format": fmt, "recipe": {"scheme": "cloth-seg", "resolution": size},
                "scheme": {"name": "cloth-seg", "version": 1, "legend": TINY_CLASSES},
                "counts": {"images": n}, "items": items}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny Stable Diffusion diffusers folder, built once per test session (read-only)."""
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "sd")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    """A tiny SDXL diffusers folder (two text encoders, text_time UNet), built once per session (read-only)."""
    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl") / "sdxl")


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Path:
    """A tiny ControlNet-layout export: 8 images of 64 px, 2 of them held out (read-only)."""
    return write_export(tmp_path_factory.mktemp("export") / "controlnet", "controlnet")


@pytest.fixture
def single_thread(monkeypatch):
    """One torch thread here and in child processes: with models this small, threads only wait on
    each other, and on a busy two-core machine that made the training tests ten times slower."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextmanager
def demo_store_with_tiny_models(root: Path, template_db: Path, only: tuple[str, ...] = (),
                                **env: str) -> Iterator[tuple[str, Path, list[dict]]]:
    """A copy of the demo store under ``root`` whose models folder got ``models tiny`` (``only``
    these), with the environment (plus ``env``) pointing at it; yields ``(db_url, data_dir, checks)``."""
    import shutil

    from typer.testing import CliRunner

    from db.engine import dispose_engines
    from workbench.cli import app

    shutil.copy(template_db, root / "demo.db")
    db = f"sqlite:///{(root / 'demo.db').as_posix()}"
    mp = pytest.MonkeyPatch()
    for name, value in {"WORKBENCH_DATA_DIR": str(root / "data"), "WORKBENCH_DB_URL": db, "HF_HUB_OFFLINE": "1",
                        "OMP_NUM_THREADS": "1", **env}.items():
        mp.setenv(name, value)
    try:
        made = CliRunner().invoke(app, ["--db", db, "models", "tiny", *[a for n in only for a in ("--only", n)],
                                        "--json"])
        assert made.exit_code == 0, made.output
        yield db, root / "data", json.loads(made.stdout)
    finally:
        dispose_engines()
        mp.undo()
