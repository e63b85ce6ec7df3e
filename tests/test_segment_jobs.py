"""Segmenter training as a background job: watched, cancelled with a checkpoint, resumed, found dead."""

from __future__ import annotations

import json

import psutil
import pytest
from typer.testing import CliRunner

from db.engine import dispose_engines, session_scope
from tests.job_waits import job_now, wait_job
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


_job = job_now


def _wait(engine, job_id, until, timeout=180) -> dict:
    return wait_job(engine, job_id, until, timeout)


def _config_file(tmp_path, steps: int):
    return load_segmenter_config(None, dict(
        segformer_config=tiny_segformer_config(4).to_dict(), dataset="demo", scheme="cloth-seg",
        output_dir=str(tmp_path / "run"), resolution=32, train_batch_size=2, max_train_steps=steps,
        checkpointing_steps=1000, validation_steps=1000, logging_steps=1, max_validation_images=2,
    )).to_file(tmp_path / "segment.yaml")


def _steps(tmp_path) -> list[int]:
    return [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.timeout(400)
def test_a_segmenter_job_is_cancelled_with_a_checkpoint_and_resumed(store, tmp_path):
    runner = CliRunner()
    started = runner.invoke(app, ["segment", "train", "--config", str(_config_file(tmp_path, 80)), "--background"])
    assert started.exit_code == 0, started.output
    job_id = int(started.output.strip())
    job = _wait(store, job_id, lambda j: (j["done"] or 0) >= 2)
    assert job["kind"] == "segment-train" and job["status"] == "running" and job["total"] == 80

    cancelled = runner.invoke(app, ["jobs", "cancel", str(job_id), "--grace", "60"])
    assert cancelled.exit_code == 0, cancelled.output
    job = _job(store, job_id)
    assert job["status"] == "cancelled", job
    stopped_at = job["details"]["global_step"]
    assert 2 <= stopped_at < 80
    assert job["details"]["last_checkpoint"].endswith(f"checkpoint-{stopped_at}")
    assert _steps(tmp_path) == list(range(1, stopped_at + 1))

    resumed = runner.invoke(app, ["segment", "resume", str(job_id)])
    assert resumed.exit_code == 0, resumed.output
    again = int(resumed.output.strip())
    job = _wait(store, again, lambda j: j["status"] in ("finished", "failed", "cancelled"))
    assert job["status"] == "finished", job
    assert job["resumed_from"] == job_id
    log = (tmp_path / "data" / "jobs" / f"{again}.log").read_text()
    assert f"resumed from {tmp_path / 'run' / f'checkpoint-{stopped_at}'} at step {stopped_at}" in log
    assert _steps(tmp_path) == list(range(1, 81))
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(last["val_iou"]) == {"background", "upper body", "lower body", "full body"}


@pytest.mark.timeout(300)
def test_a_killed_segmenter_job_is_detected_as_dead(store, tmp_path):
    runner = CliRunner()
    job_id = int(runner.invoke(app, ["segment", "train", "--config", str(_config_file(tmp_path, 5000)),
                                     "--background"]).output.strip())
    job = _wait(store, job_id, lambda j: (j["done"] or 0) >= 1)
    psutil.Process(job["pid"]).kill()
    job = _wait(store, job_id, lambda j: j["status"] != "running")
    assert job["status"] == "failed" and "ended without reporting" in job["error"]


def test_a_bad_config_fails_before_a_job_starts(store, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: demo\noutput_dir: o\nsegformer_config: {}\nlerning_rate: 1\n")
    result = CliRunner().invoke(app, ["segment", "train", "--config", str(bad), "--background"])
    assert result.exit_code == 2 and "lerning_rate" in result.output
    with session_scope(store) as session:
        from workbench.jobs import list_jobs

        assert list_jobs(session, kind="segment-train") == []
