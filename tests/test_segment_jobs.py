"""Segmenter training as a background job: watched, cancelled with a checkpoint, resumed, found dead."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from db.engine import dispose_engines
from tests.job_waits import wait_job
from tests.trainer_jobs import cancel_with_a_checkpoint, kill_after_a_step, refused_before_a_job, resume_to_the_end
from train.segmenter import load_segmenter_config
from workbench.cli import app
from workbench.segment.tiny import tiny_segformer_config

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def store(demo_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DB_URL", str(demo_engine.url))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield demo_engine
    dispose_engines()


WAIT = 180  # seconds


def _config_file(tmp_path, steps: int):
    return load_segmenter_config(None, dict(
        segformer_config=tiny_segformer_config(4).to_dict(), dataset="demo", scheme="cloth-seg",
        output_dir=str(tmp_path / "run"), resolution=32, train_batch_size=2, max_train_steps=steps,
        checkpointing_steps=1000, validation_steps=1000, logging_steps=1, max_validation_images=2,
    )).to_file(tmp_path / "segment.yaml")


@pytest.mark.timeout(400)
def test_a_segmenter_job_is_cancelled_with_a_checkpoint_and_resumed(store, tmp_path):
    runner = CliRunner()
    started = runner.invoke(app, ["segment", "train", "--config", str(_config_file(tmp_path, 80)), "--background"])
    assert started.exit_code == 0, started.output
    job_id = int(started.output.strip())
    job = wait_job(store, job_id, lambda j: (j["done"] or 0) >= 2, WAIT)
    assert job["kind"] == "segment-train" and job["status"] == "running" and job["total"] == 80

    run_dir = tmp_path / "run"
    stopped_at = cancel_with_a_checkpoint(store, job_id, ["jobs", "cancel"], run_dir, total=80)
    resume_to_the_end(store, job_id, ["segment", "resume"], run_dir, stopped_at, total=80,
                      jobs_dir=tmp_path / "data" / "jobs", timeout=WAIT)
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(last["val_iou"]) == {"background", "upper body", "lower body", "full body"}


@pytest.mark.timeout(300)
def test_a_killed_segmenter_job_is_detected_as_dead(store, tmp_path):
    runner = CliRunner()
    job_id = int(runner.invoke(app, ["segment", "train", "--config", str(_config_file(tmp_path, 5000)),
                                     "--background"]).output.strip())
    kill_after_a_step(store, job_id, WAIT)


def test_a_bad_config_fails_before_a_job_starts(store, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: demo\noutput_dir: o\nsegformer_config: {}\nlerning_rate: 1\n")
    refused_before_a_job(store, ["segment", "train", "--config", str(bad), "--background"], "segment-train",
                         "lerning_rate")
