"""A trainer's background job driven through the CLI as a user drives it (cancelled with a
checkpoint, resumed to the end, killed, refused), with the checks both trainers' tests make."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
from sqlalchemy import Engine
from typer.testing import CliRunner

from db.engine import session_scope
from tests.job_waits import job_now, wait_job
from workbench.cli import app

ENDED = ("finished", "failed", "cancelled")


def logged_steps(run_dir: Path) -> list[int]:
    """The steps of a run's ``metrics.jsonl``, in file order."""
    return [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def cancel_with_a_checkpoint(engine: Engine, job_id: int, cancel: list[str], run_dir: Path, total: int) -> int:
    """Cancel the running job with ``cancel`` (a CLI command, given the id and a 60 s grace); checks it
    stopped early with a checkpoint at the last step it logged, and returns that step."""
    cancelled = CliRunner().invoke(app, [*cancel, str(job_id), "--grace", "60"])
    assert cancelled.exit_code == 0, cancelled.output
    job = job_now(engine, job_id)
    assert job["status"] == "cancelled", job
    stopped_at = job["details"]["global_step"]
    assert 2 <= stopped_at < total
    assert job["details"]["last_checkpoint"].endswith(f"checkpoint-{stopped_at}")
    assert logged_steps(run_dir) == list(range(1, stopped_at + 1))
    return stopped_at


def resume_to_the_end(engine: Engine, job_id: int, resume: list[str], run_dir: Path, stopped_at: int, total: int,
                      jobs_dir: Path, timeout: float) -> int:
    """Resume the cancelled job with ``resume`` (a CLI command, given the id); checks the new job
    finished from the checkpoint at ``stopped_at`` with every step logged once, and returns its id."""
    resumed = CliRunner().invoke(app, [*resume, str(job_id)])
    assert resumed.exit_code == 0, resumed.output
    again = int(resumed.output.strip())
    job = wait_job(engine, again, lambda j: j["status"] in ENDED, timeout)
    assert job["status"] == "finished", job
    assert job["resumed_from"] == job_id
    log = (jobs_dir / f"{again}.log").read_text()
    assert f"resumed from {run_dir / f'checkpoint-{stopped_at}'} at step {stopped_at}" in log
    assert logged_steps(run_dir) == list(range(1, total + 1))  # appended from the step after the checkpoint
    return again


def kill_after_a_step(engine: Engine, job_id: int, timeout: float) -> dict:
    """Kill the job's process once it has done a step; checks the store finds it dead, and returns the job."""
    job = wait_job(engine, job_id, lambda j: (j["done"] or 0) >= 1, timeout)
    psutil.Process(job["pid"]).kill()
    job = wait_job(engine, job_id, lambda j: j["status"] != "running", timeout)
    assert job["status"] == "failed" and "ended without reporting" in job["error"]
    return job


def refused_before_a_job(engine: Engine, argv: list[str], kind: str, bad_key: str) -> None:
    """Checks that the command ``argv`` with a config naming ``bad_key`` exits 2 naming it, and starts no job."""
    from workbench.jobs import list_jobs

    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2 and bad_key in result.output
    with session_scope(engine) as session:
        assert list_jobs(session, kind=kind) == []
