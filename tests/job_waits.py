"""Waiting in tests for a background job to end (the store polled as the pages poll it)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine

from db.engine import session_scope
from workbench.jobs import ACTIVE, get_job, job_summary, refresh_jobs


def wait_job_ended(engine: Engine, job_id: int, timeout: float = 120) -> dict:
    """The job as plain data once it has ended (dead processes found on the way); a failure after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        refresh_jobs(engine)
        with session_scope(engine) as session:
            job = job_summary(get_job(session, job_id))
        if job["status"] not in ACTIVE:
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {job['status']} after {timeout} s")
        time.sleep(0.3)
