"""Stopping a run of several processes together: a stop file, and a flag every rank agrees on.

A launched run (``accelerate launch ... train/controlnet.py``) has no job reporter in its ranks.
Whoever wants it stopped with a checkpoint (the job watching it, or a user) creates
``<output_dir>/stop.request``. Every rank looks for the file, and the ranks combine what they saw
every few steps (one small all-reduce, at the same step on every rank), so that all of them
save the same checkpoint and end together instead of one waiting forever for the others.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

STOP_FILE = "stop.request"


def stop_file(output_dir: Path) -> Path:
    """Where a stop request for the run writing ``output_dir`` is made."""
    return Path(output_dir) / STOP_FILE


def stop_file_requested(output_dir: Path) -> Callable[[], bool]:
    """A ``should_stop`` that is true once the run's stop file exists."""
    path = stop_file(output_dir)
    return path.exists


def agreed_stop(should_stop: Callable[[], bool], accelerator, every: int) -> Callable[[], bool]:
    """``should_stop`` combined over all processes every ``every`` calls (any rank's request stops all).

    It must be called once per optimisation step on every rank, as the training loop does, so that
    the collective runs at the same step everywhere; between those steps it answers False.
    """
    import torch

    calls = 0

    def check() -> bool:
        nonlocal calls
        calls += 1
        if calls % max(1, every):
            return False
        flag = torch.tensor([1.0 if should_stop() else 0.0], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)

    return check
