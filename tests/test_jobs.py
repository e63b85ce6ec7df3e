"""Background jobs: launched as processes, watched, cancelled, resumed, and found dead."""

from __future__ import annotations

import json
import time

import psutil
import pytest
from typer.testing import CliRunner

from db.engine import dispose_engines, make_engine, session_scope
from workbench.cli import app
from workbench.jobs import JobError, cancel_job, get_job, job_summary, refresh_jobs, resume_job, start_job
from workbench.settings import get_settings


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DB_URL", f"sqlite:///{(tmp_path / 'jobs.db').as_posix()}")
    settings = get_settings()
    engine = make_engine(settings.database_url)
    yield engine, settings
    dispose_engines()


def _job(engine, job_id: int) -> dict:
    with session_scope(engine) as session:
        return job_summary(get_job(session, job_id))


def _wait(engine, job_id: int, until, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        refresh_jobs(engine)
        job = _job(engine, job_id)
        if until(job):
            return job
        time.sleep(0.2)
    pytest.fail(f"job {job_id} did not get there in {timeout} s: {job}")


def _ended(job: dict) -> bool:
    return job["status"] in ("finished", "failed", "cancelled")


def test_a_job_runs_the_command_in_its_own_process_and_reports_progress(store):
    engine, settings = store
    job_id = start_job(engine, settings, kind="demo", argv=["demo", "--images", "3"], dataset="demo")
    job = _wait(engine, job_id, _ended)
    assert job["status"] == "finished", job
    # The demo's last stage counts the CSV rows stored: all of them, every one an annotation.
    assert job["message"] == "importing rows" and job["done"] == job["total"] > 0
    try:
        psutil.Process(job["pid"]).wait(timeout=15)  # the process itself ends too
    except psutil.NoSuchProcess:
        pass
    log = (settings.data_dir / "jobs" / f"{job_id}.log").read_text()
    assert f"job {job_id}: finished" in log
    stats = CliRunner().invoke(app, ["stats", "--dataset", "demo", "--json"])
    assert json.loads(stats.output)["images"] == 3  # the job's work is in the store
    assert json.loads(stats.output)["annotations"] == job["total"]


def test_a_failing_command_ends_the_job_as_failed_with_its_message_in_the_log(store):
    engine, settings = store
    job_id = start_job(engine, settings, kind="stats", argv=["stats", "--dataset", "nope"])
    job = _wait(engine, job_id, _ended)
    assert (job["status"], job["error"]) == ("failed", "exit code 2")
    assert "no dataset named 'nope'" in (settings.data_dir / "jobs" / f"{job_id}.log").read_text()


def test_cancel_stops_a_job_gracefully_and_resume_starts_it_again(store):
    engine, settings = store
    job_id = start_job(engine, settings, kind="demo", argv=["demo", "--images", "400"])
    _wait(engine, job_id, lambda j: j["status"] == "running" and j["done"] > 0)
    started = time.monotonic()
    cancel_job(engine, job_id, grace_seconds=30)
    assert time.monotonic() - started < 25  # it stopped by itself, long before being killed
    job = _job(engine, job_id)
    assert job["status"] == "cancelled" and 0 < job["done"] < 100
    assert f"job {job_id}: cancelled" in (settings.data_dir / "jobs" / f"{job_id}.log").read_text()

    again = resume_job(engine, settings, job_id)
    resumed = _job(engine, again)
    assert resumed["resumed_from"] == job_id and resumed["argv"] == job["argv"]
    cancel_job(engine, again, grace_seconds=30)
    assert _job(engine, again)["status"] == "cancelled"


def test_a_killed_job_is_detected_as_dead(store):
    engine, settings = store
    job_id = start_job(engine, settings, kind="demo", argv=["demo", "--images", "400"])
    job = _wait(engine, job_id, lambda j: j["status"] == "running")
    psutil.Process(job["pid"]).kill()
    job = _wait(engine, job_id, _ended)
    assert job["status"] == "failed"
    assert "ended without reporting" in job["error"]
    with pytest.raises(JobError, match="no job 999"):
        resume_job(engine, settings, 999)


def test_jobs_cli_lists_and_shows_jobs(store):
    engine, settings = store
    job_id = start_job(engine, settings, kind="stats", argv=["stats", "--dataset", "nope"])
    _wait(engine, job_id, _ended)
    listed = CliRunner().invoke(app, ["jobs", "list", "--json"])
    assert [j["id"] for j in json.loads(listed.output)] == [job_id]
    shown = CliRunner().invoke(app, ["jobs", "status", str(job_id), "--json"])
    assert json.loads(shown.output)["status"] == "failed"
    log = CliRunner().invoke(app, ["jobs", "log", str(job_id)])
    assert "no dataset named 'nope'" in log.output
