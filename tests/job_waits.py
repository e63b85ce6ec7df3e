"""Watching background jobs from tests: a job's row as data, and waiting until it gets somewhere
(the store polled as the pages poll it)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from db.engine import session_scope
from workbench.jobs import ACTIVE, get_job, job_summary, refresh_jobs


def job_now(engine: Engine, job_id: int) -> dict:
    """The job as plain data, dead processes found first."""
    refresh_jobs(engine)
    with session_scope(engine) as session:
        return job_summary(get_job(session, job_id))


def wait_job(engine: Engine, job_id: int, until: Callable[[dict], bool], timeout: float = 120) -> dict:
    """Poll the job until ``until(job)`` holds (the test fails after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    job = job_now(engine, job_id)
    while time.monotonic() < deadline:
        job = job_now(engine, job_id)
        if until(job):
            return job
        time.sleep(0.3)
    pytest.fail(f"job {job_id} did not get there in {timeout} s: {job}")


def wait_job_ended(engine: Engine, job_id: int, timeout: float = 120) -> dict:
    """The job as plain data once it has ended; a failure after ``timeout``."""
    return wait_job(engine, job_id, lambda job: job["status"] not in ACTIVE, timeout)
