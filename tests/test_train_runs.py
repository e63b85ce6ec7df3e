"""The trainers' shared bookkeeping (train/runs.py): the per-step metrics log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from train import runs
from train.runs import MetricsLog


class TwoRanks:
    """The accelerator of rank 0 in a two-process run: ``reduce`` averages with what rank 1 sends."""

    device = torch.device("cpu")
    is_main_process = True
    num_processes = 2

    def __init__(self, other: list[float]):
        self.other = torch.tensor(other)

    def reduce(self, tensor: torch.Tensor, reduction: str) -> torch.Tensor:
        assert reduction == "mean"
        return (tensor + self.other) / 2

    def log(self, values, step):  # trackers are off in these tests
        raise AssertionError("no tracker")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_samples_per_s_counts_the_samples_each_step_really_trained_on(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(runs.time, "perf_counter", clock)
    # rank 1's losses 0.3, 0.5, 0.7; its three steps trained on 4, 4 and 1 samples
    accelerator = TwoRanks([0.3, 0.5, 0.7, 4, 4, 1])
    log = MetricsLog(accelerator, tmp_path / "metrics.jsonl")
    log.add({"step": 1}, torch.tensor(0.1), samples=4)
    log.add({"step": 2}, torch.tensor(0.3), samples=4)
    log.add({"step": 3}, torch.tensor(0.5), samples=2)  # the epoch's last, smaller batch
    clock.now += 2.0
    log.flush()
    records = _records(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert [r["loss"] for r in records] == pytest.approx([0.2, 0.4, 0.6])  # averaged over the two ranks
    # 4+4+2 here and 4+4+1 on rank 1: 19 samples in 2 s (not 3 full steps x 4 x 2 ranks = 24)
    assert {r["samples_per_s"] for r in records} == {9.5}


def test_each_flush_measures_its_own_window(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(runs.time, "perf_counter", clock)
    accelerator = TwoRanks([0.0, 4])
    log = MetricsLog(accelerator, tmp_path / "metrics.jsonl")
    log.add({"step": 1}, torch.tensor(0.0), samples=4)
    clock.now += 1.0
    log.flush()
    log.flush()  # nothing pending: nothing written
    clock.now += 3.0  # the next window runs from the last flush
    log.add({"step": 2}, torch.tensor(0.0), samples=3)
    clock.now += 0.5
    log.flush()
    # (4 + 4) / 1 s, then (3 + 4) / 3.5 s
    assert [r["samples_per_s"] for r in _records(tmp_path / "metrics.jsonl")] == [8.0, 2.0]
