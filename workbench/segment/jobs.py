"""Segmenter work as background jobs (the job table of ``workbench/jobs.py``): training and prediction.

Each job runs the foreground CLI command (``python -m workbench segment train|predict ...``), so it is
cancelled, resumed and found dead exactly like a ControlNet training job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from workbench.settings import Settings

TRAIN_KIND = "segment-train"
PREDICT_KIND = "segment-predict"


def train_argv(config_path: Path, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The ``python -m workbench`` arguments of a foreground segmenter training run."""
    return ["segment", "train", "--config", str(Path(config_path).resolve())] + [f"--set={o}" for o in overrides]


def start_training_job(engine: Engine, settings: Settings, config_path: Path,
                       overrides: list[str] | tuple[str, ...] = ()) -> int:
    """Validate the config, then launch its training as a job; returns the job id."""
    from train.segmenter import load_segmenter_config

    config = load_segmenter_config(config_path, list(overrides))  # ConfigError here, not in the job's log
    return _start(engine, settings, TRAIN_KIND, train_argv(config_path, overrides), config.dataset,
                  {"config": str(Path(config_path).resolve()), "output_dir": str(config.output_dir),
                   "metrics_path": str(Path(config.output_dir) / "metrics.jsonl"),
                   "max_train_steps": config.max_train_steps})


def predict_argv(model: str, *, dataset: str | None = None, split: str | None = None,
                 without_masks: bool = False, folder: Path | None = None, out: Path | None = None,
                 scheme: str | None = None, checkpoint: str = "", batch_size: int = 8,
                 limit: int | None = None) -> list[str]:
    """The ``python -m workbench`` arguments of a foreground prediction run."""
    argv = ["segment", "predict", "--model", model, "--batch-size", str(batch_size)]
    for flag, value in (("--dataset", dataset), ("--split", split), ("--scheme", scheme),
                        ("--checkpoint", checkpoint or None), ("--limit", limit),
                        ("--folder", folder and Path(folder).resolve()), ("--out", out and Path(out).resolve())):
        if value is not None:
            argv += [flag, str(value)]
    return argv + (["--without-masks"] if without_masks else [])


def start_prediction_job(engine: Engine, settings: Settings, model: str, **options: Any) -> int:
    """Launch a prediction run (options: see :func:`predict_argv`) as a job; returns the job id."""
    return _start(engine, settings, PREDICT_KIND, predict_argv(model, **options), options.get("dataset"),
                  {"model": model, "scheme": options.get("scheme")})


def _start(engine: Engine, settings: Settings, kind: str, argv: list[str], dataset: str | None,
           details: dict[str, Any]) -> int:
    from workbench.jobs import start_job

    return start_job(engine, settings, kind=kind, argv=argv, dataset=dataset, details=details)
