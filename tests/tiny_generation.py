"""A trained tiny ControlNet for the generation tests: the demo store, its export, two real training steps.

The run is made by the project's own path (``workbench.export.export_dataset`` and
``train.controlnet.train`` on the tiny Stable Diffusion), so its checkpoints, ``train_config.json``
and the export's ``manifest.json`` are exactly what a user's run leaves behind.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from db.engine import make_engine, session_scope
from db.jobs import Job


@dataclass(frozen=True)
class TrainedRun:
    """A store with the demo dataset and a finished training job, and the files it points at."""

    store: Path  # template SQLite file (copy it before writing)
    export_dir: Path
    run_dir: Path
    base_model: Path


def train_tiny_run(root: Path, demo_db: Path, tiny_sd: Path, scheme: str = "body-parts") -> TrainedRun:
    """Export the demo at 64 px in ``scheme`` and train a ControlNet on it for 2 steps (checkpoints 1 and 2)."""
    from train.config import load_config
    from train.controlnet import train
    from workbench.export import ExportRecipe, export_dataset
    from workbench.settings import get_settings

    root.mkdir(parents=True, exist_ok=True)
    store = root / "store.db"
    shutil.copy(demo_db, store)
    url = f"sqlite:///{store.as_posix()}"
    engine = make_engine(url)
    settings = get_settings(db_url=url, data_dir=root / "data")
    export_dir = root / "export"
    export_dataset(engine, settings, ExportRecipe(dataset="demo", format="imagefolder", scheme=scheme,
                                                  resolution=64, validation_fraction=0.25),
                   export_dir, workers=1)
    run_dir = root / "run"
    config = load_config(None, dict(
        pretrained_model_name_or_path=str(tiny_sd), train_data_dir=str(export_dir), output_dir=str(run_dir),
        resolution=64, train_batch_size=2, max_train_steps=2, checkpointing_steps=1, checkpoints_total_limit=None,
        validation_steps=100, num_validation_images=0, validation_loss_samples=0, learning_rate=1e-4,
        report_to="none"))
    train(config)
    with session_scope(engine) as session:  # the row a training job leaves (what the Generate page lists)
        session.add(Job(kind="train", argv=["train", "run"], status="finished",
                        details={"output_dir": str(run_dir), "max_train_steps": 2}))
    engine.dispose()
    return TrainedRun(store, export_dir, run_dir, tiny_sd)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, demo_template, tiny_sd) -> TrainedRun:
    """A demo store with a 2-step tiny ControlNet training run on its body-parts export (read-only)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_tiny_run(tmp_path_factory.mktemp("trained"), demo_template[0], tiny_sd)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_openpose(tmp_path_factory) -> Path:
    """An OpenPose annotator folder with random weights (read-only)."""
    from workbench.tiny.openpose import build_tiny_openpose

    return build_tiny_openpose(tmp_path_factory.mktemp("openpose") / "annotators")
