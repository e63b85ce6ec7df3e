"""Fixtures of the tiny Stable Diffusion and export folders; the builders live in ``workbench/tiny/sd.py``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from workbench.tiny.sd import (  # noqa: F401  (re-exported: tests import them from here)
    TINY_CLASSES, TINY_COLOURS, build_tiny_sd, palette_png, write_export,
)
from workbench.tiny.sdxl import build_tiny_sdxl


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny Stable Diffusion diffusers folder, built once per test session (read-only)."""
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "sd")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    """A tiny SDXL diffusers folder (two text encoders), built once per test session (read-only)."""
    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl") / "sdxl")


@pytest.fixture(scope="session")
def tiny_sam_dir(tmp_path_factory) -> Path:
    """A tiny random SAM folder (marked as a tiny test model), built once per test session (read-only)."""
    from workbench.tiny import mark_tiny
    from workbench.tiny.repair import save_tiny_sam

    return mark_tiny(save_tiny_sam(tmp_path_factory.mktemp("tiny-sam") / "sam"), "sam")


@pytest.fixture(scope="session")
def tiny_inpaint_dir(tmp_path_factory) -> Path:
    """A tiny random inpainting pipeline folder (marked as a tiny test model), built once per session."""
    from workbench.tiny import mark_tiny
    from workbench.tiny.repair import build_tiny_inpaint

    return mark_tiny(build_tiny_inpaint(tmp_path_factory.mktemp("tiny-inpaint") / "inpaint"), "inpaint")


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
