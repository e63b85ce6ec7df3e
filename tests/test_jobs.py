"""Background jobs: launched as processes, watched, cancelled, resumed, and found dead."""

from __future__ import annotations

import json
import time

import psutil
import pytest
from typer.testing import CliRunner

from db.engine import dispose_engines, make_engine, session_scope
from workbench.cli import app
from db.jobs import Job
from db.models import utcnow
from workbench.cli.common import failure_lines
from workbench.jobs import (
    JobError, cancel_job, failure_from_log, get_job, job_summary, latest_active_job, refresh_jobs, restart_offer,
    resume_job, start_job,
)
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


def test_a_failing_command_ends_the_job_with_its_error_line_and_fix_as_the_reason(store):
    engine, settings = store
    job_id = start_job(engine, settings, kind="stats", argv=["stats", "--dataset", "nope"])
    job = _wait(engine, job_id, _ended)
    assert job["status"] == "failed"
    assert job["error"].startswith("no dataset named 'nope'")  # the CLI's words, not "exit code 2"
    assert job["ending"] == f"failed before its first step: {job['error']}"
    assert "`python -m workbench datasets`" in job["fix"]
    assert job["restart"] is None  # running `stats` again would not continue anything
    log = (settings.data_dir / "jobs" / f"{job_id}.log").read_text()
    assert f"error: {job['error']}\nfix: {job['fix']}\n" in log


def test_the_reason_is_the_last_error_line_else_the_traceback_s_last_line():
    log = ("job 3: python -m workbench x\nerror: first\nfix: for the first\nsome output\n"
           "error: line 3: bad (strict mode)\njob 3: failed\n")
    assert failure_lines(log) == ("line 3: bad (strict mode)", None)  # a fix belongs to its own error
    assert failure_from_log("error: no model\nfix: hf download some/model\n") == ("no model", "hf download some/model")
    traceback_log = """loading
Traceback (most recent call last):
  File "x.py", line 1, in <module>
    load()
KeyError: 'a'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "x.py", line 3, in <module>
    raise OSError("cannot load base: no such folder")
    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
OSError: cannot load base: no such folder
accelerate: process 0 exited with 1
"""
    assert failure_from_log(traceback_log) == ("OSError: cannot load base: no such folder", None)
    assert failure_from_log("job 3: finished\n") == (None, None)


def test_resume_is_offered_only_where_the_job_would_continue(tmp_path):
    out = tmp_path / "run"
    train = Job(kind="train", status="failed", done=0, details={"output_dir": str(out)})
    assert restart_offer(train) == "run again"  # no checkpoint: it would start from step 0
    (out / "checkpoint-2").mkdir(parents=True)
    assert restart_offer(train) == "run again"  # an unfinished checkpoint (no train_state.json) does not count
    (out / "checkpoint-2" / "train_state.json").write_text("{}")
    assert restart_offer(train) == "resume"
    assert restart_offer(Job(kind="train", status="running", done=0, details={"output_dir": str(out)})) is None
    assert restart_offer(Job(kind="captions", status="cancelled", done=5, details={})) == "resume"
    assert restart_offer(Job(kind="captions", status="failed", done=0, details={})) == "run again"
    assert restart_offer(Job(kind="import", status="failed", done=0, details={})) is None


def test_the_latest_active_job_is_the_newest_unfinished_one_of_its_kind_and_dataset(store):
    engine, _settings = store
    rows = [  # oldest first
        Job(kind="embed", dataset="a", argv=[], status="queued"),
        Job(kind="embed", dataset="a", argv=[], status="running", host="another-machine", heartbeat_at=utcnow()),
        Job(kind="embed", dataset="b", argv=[], status="queued"),
        Job(kind="embed", dataset="a", argv=[], status="finished"),
        Job(kind="embed", dataset="a", argv=[], status="running"),  # no process here: dead
        Job(kind="generate", argv=[], status="cancelling", host="another-machine", heartbeat_at=utcnow()),
        Job(kind="generate", argv=[], status="cancelled"),
    ]
    with session_scope(engine) as session:
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
    assert latest_active_job(engine, "embed", "a") == ids[1]  # running on another machine sharing the store
    assert latest_active_job(engine, "embed", "b") == ids[2]
    assert latest_active_job(engine, "embed") == ids[2]  # any dataset
    assert latest_active_job(engine, "generate") == ids[5]
    assert latest_active_job(engine, "embed", "c") is None and latest_active_job(engine, "train") is None
    assert _job(engine, ids[4])["status"] == "failed"  # found dead on the way, so never offered

    with session_scope(engine) as session:  # several runs' evaluations: a page follows its own run's
        ours, theirs = (Job(kind="evaluate", argv=[], status="running", host="another-machine",
                            heartbeat_at=utcnow(), details={"output_dir": run}) for run in ("/runs/a", "/runs/b"))
        session.add_all([ours, theirs])
        session.flush()
        ours_id, theirs_id = ours.id, theirs.id
    assert latest_active_job(engine, "evaluate") == theirs_id
    assert latest_active_job(engine, "evaluate", matching=lambda d: d.get("output_dir") == "/runs/a") == ours_id
    assert latest_active_job(engine, "evaluate", matching=lambda d: d.get("output_dir") == "/runs/c") is None


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
