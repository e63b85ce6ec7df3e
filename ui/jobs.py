"""Watching a background job on a page: live progress, cancel, its end, its error and log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st
from sqlalchemy import Engine

from db.engine import session_scope
from workbench.jobs import ACTIVE, cancel_job, get_job, job_summary, read_log_tail, refresh_jobs

JobInfo = dict[str, Any]  # a job as plain data: workbench.jobs.job_summary


def job_now(engine: Engine, job_id: int) -> JobInfo:
    """The job's row as plain data, dead processes found first."""
    refresh_jobs(engine)
    with session_scope(engine) as session:
        return job_summary(get_job(session, job_id))


def job_log(engine: Engine, job_id: int, lines: int = 40) -> str:
    """The end of the job's log."""
    with session_scope(engine) as session:
        return read_log_tail(get_job(session, job_id), lines=lines)


def cli_error(log: str) -> str | None:
    """The last ``error: ...`` line a CLI command printed (``workbench.cli.common.fail``), without
    its prefix; ``None`` if it printed none."""
    lines = [line.strip() for line in log.splitlines() if line.startswith("error: ")]
    return lines[-1].removeprefix("error: ") if lines else None


def progress_text(job: JobInfo, label: str, unit: str | None) -> tuple[float, str]:
    """The bar's fraction and text: "<label> <id>: <status> — <done>/<total> <unit> — <message>"."""
    total, done = job["total"] or 0, job["done"] or 0
    text = f"{label} {job['id']}: {job['status']}"
    if total:
        text += f" — {100 * done // total}%" if unit is None else f" — {done}/{total} {unit}".rstrip()
    if job["message"]:
        text += f" — {job['message']}"
    return (min(done / total, 1.0) if total else 0.0), text


def watch_job(
    engine: Engine,
    job_id: int,
    *,
    label: str = "Job",
    unit: str | None = "",
    finished: Callable[[JobInfo], str | None] | None = None,
    failed: Callable[[JobInfo, str], str] | None = None,
    cancellable: bool = False,
    every: float = 1.0,
    log_lines: int = 40,
) -> JobInfo:
    """Show a job's live progress, refreshed every ``every`` seconds while it is active; its end
    message, or its error and log tail when it failed or was cancelled; optionally a Cancel button.
    The whole page reruns once when the job ends. Returns the job as of this run of the page.

    ``label`` starts the bar's text ("Export job 3: running — 5/12 images"); ``unit`` names what
    done/total count (``None``: show a percentage, e.g. for bytes read). ``finished(job)`` gives the
    success message (none by default); ``failed(job, log_tail)`` the error message (by default
    "<label> <id> <status>: <error>").
    """
    job = job_now(engine, job_id)
    was_active = job["status"] in ACTIVE

    def show() -> None:
        now = job_now(engine, job_id)
        fraction, text = progress_text(now, label, unit)
        st.progress(fraction, text=text)
        status = now["status"]
        if status == "finished":
            message = finished(now) if finished is not None else None
            if message:
                st.success(message)
        elif status in ("failed", "cancelled"):
            log = job_log(engine, job_id, log_lines)
            st.error(failed(now, log) if failed is not None
                     else f"{label} {job_id} {status}: {now['error'] or ''}")
            st.code(log or "(empty log)", language=None)
        elif cancellable and status != "cancelling":
            # A callback, so the rerun that the click causes already sees "cancelling".
            st.button("Cancel", key=f"job_cancel_{job_id}", on_click=cancel_job, args=(engine, job_id),
                      kwargs={"wait": False})
        if was_active and status not in ACTIVE:
            st.rerun()

    st.fragment(run_every=every if was_active else None)(show)()
    return job
