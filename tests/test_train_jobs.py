"""Training as background jobs: launched, watched, cancelled with a checkpoint, resumed, found dead."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from db.engine import dispose_engines, make_engine
from tests.job_waits import wait_job
from tests.trainer_jobs import cancel_with_a_checkpoint, kill_after_a_step, refused_before_a_job, resume_to_the_end
from train.config import load_config
from workbench.cli import app
from workbench.settings import get_settings

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DB_URL", f"sqlite:///{(tmp_path / 'jobs.db').as_posix()}")
    engine = make_engine(get_settings().database_url)
    yield engine
    dispose_engines()


WAIT = 120  # seconds


def _config_file(tiny_sd, tiny_export, tmp_path, steps: int):
    return load_config(None, dict(
        pretrained_model_name_or_path=str(tiny_sd), train_data_dir=str(tiny_export),
        output_dir=str(tmp_path / "run"), resolution=64, train_batch_size=2, max_train_steps=steps,
        checkpointing_steps=1000, validation_steps=1000, num_validation_images=0, validation_loss_samples=1,
        logging_steps=1, report_to="none")).to_file(tmp_path / "train.yaml")


@pytest.mark.timeout(240)
def test_a_training_job_is_watched_cancelled_with_a_checkpoint_and_resumed(store, tiny_sd, tiny_export, tmp_path):
    runner = CliRunner()
    path = _config_file(tiny_sd, tiny_export, tmp_path, steps=60)
    started = runner.invoke(app, ["train", "start", "--config", str(path)])
    assert started.exit_code == 0, started.output
    job_id = int(started.output.strip())
    job = wait_job(store, job_id, lambda j: (j["done"] or 0) >= 2, WAIT)
    assert job["status"] == "running" and job["total"] == 60
    assert job["details"]["metrics_path"].endswith("metrics.jsonl")

    run_dir = tmp_path / "run"
    stopped_at = cancel_with_a_checkpoint(store, job_id, ["train", "cancel"], run_dir, total=60)
    status = json.loads(runner.invoke(app, ["train", "status", str(job_id), "--json"]).output)
    assert status["status"] == "cancelled" and status["run"]["step"] == stopped_at

    again = resume_to_the_end(store, job_id, ["train", "resume"], run_dir, stopped_at, total=60,
                              jobs_dir=tmp_path / "data" / "jobs", timeout=WAIT)
    listed = json.loads(runner.invoke(app, ["train", "list", "--json"]).output)
    assert [j["id"] for j in listed] == [again, job_id]


@pytest.mark.timeout(240)
def test_a_killed_training_job_is_detected_as_dead(store, tiny_sd, tiny_export, tmp_path):
    runner = CliRunner()
    path = _config_file(tiny_sd, tiny_export, tmp_path, steps=500)
    job_id = int(runner.invoke(app, ["train", "start", "--config", str(path)]).output.strip())
    kill_after_a_step(store, job_id, WAIT)
    shown = runner.invoke(app, ["train", "status", str(job_id)])
    assert "failed" in shown.output


def test_bad_configs_fail_before_a_job_starts(store, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrained_model_name_or_path: x\ntrain_data_dir: d\noutput_dir: o\nlerning_rate: 1\n")
    refused_before_a_job(store, ["train", "start", "--config", str(bad)], "train", "lerning_rate")


@pytest.mark.timeout(400)
def test_a_job_that_fails_before_its_first_step_says_why_and_resume_says_it_starts_over(store, tiny_export, tmp_path):
    runner = CliRunner()
    missing = tmp_path / "no-such-model"
    path = load_config(None, dict(
        pretrained_model_name_or_path=str(missing), train_data_dir=str(tiny_export), output_dir=str(tmp_path / "run"),
        resolution=64, max_train_steps=2, report_to="none")).to_file(tmp_path / "train.yaml")
    job_id = int(runner.invoke(app, ["train", "start", "--config", str(path)]).output.strip())
    job = wait_job(store, job_id, lambda j: j["status"] not in ("queued", "running"), timeout=300)
    assert job["status"] == "failed"
    assert job["error"].startswith(f"pretrained_model_name_or_path={missing}: Stable Diffusion base")
    assert job["details"]["stage"] == f"loading the base model {missing}"  # where it was when it failed
    shown = runner.invoke(app, ["train", "status", str(job_id)]).output
    assert shown.startswith(f"job {job_id}: failed before its first step: pretrained_model_name_or_path={missing}")
    resumed = runner.invoke(app, ["train", "resume", str(job_id)])
    assert resumed.exit_code == 0, resumed.output
    assert f"note: job {job_id} saved no checkpoint; the new job starts from step 0" in resumed.output
    from workbench.jobs import cancel_job

    cancel_job(store, int(resumed.output.strip().splitlines()[-1]), grace_seconds=10)
