"""Watching a background job on a page: live progress, cancel, its end; when it stopped, its
reason, the fix when known, its log (wrapped) and Resume / Run again where that is honest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st
from sqlalchemy import Engine

from db.engine import session_scope
from ui.auth import can, current_user
from workbench.jobs import (
    ACTIVE, JobError, cancel_job, get_job, job_summary, latest_active_job, read_log_tail, refresh_jobs, resume_job,
)
from workbench.settings import get_settings

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


def page_job(engine: Engine, key: str, kind: str | tuple[str, ...], dataset: str | None = None,
             matching: Callable[[dict[str, Any]], bool] | None = None) -> int | None:
    """The id of the job a page watches: the one it started (``st.session_state[key]``), else the
    newest unfinished job of ``kind`` (or kinds; of ``dataset``; whose details ``matching`` accepts)
    in the store, which the page then keeps watching: a reload, a second tab or another curator's
    start does not lose sight of it."""
    if st.session_state.get(key) is None and (
            found := latest_active_job(engine, kind, dataset, matching)) is not None:
        st.session_state[key] = found
    return st.session_state.get(key)


RESTART_LABELS = {"resume": "Resume", "run again": "Run again"}


def show_ending(job: JobInfo, log: str, headline: str) -> None:
    """A stopped job's reason (``headline``: an error box when it failed, a warning when it was
    cancelled), the fix when one is known, and the tail of its log with long lines wrapped."""
    (st.error if job["status"] == "failed" else st.warning)(headline)
    if job.get("fix"):
        st.info(f"Fix: {job['fix']}")
    st.code(log or "(empty log)", language=None, wrap_lines=True)


def restart_button(engine: Engine, job: JobInfo, *, key: str, resume_argv: tuple[str, ...] = (),
                   action: str = "run_jobs", audit: str | None = None) -> int | None:
    """"Resume" or "Run again" for a stopped job, as ``workbench.jobs.restart_offer`` allows
    (nothing where neither is honest); the new job's id on the run where it was pressed.
    ``resume_argv`` is added to the command when it resumes (e.g. from the latest checkpoint).
    Only a user whose role may ``action`` can press it; the new job runs as them (``audit``: the
    write it is recorded as)."""
    offer = job.get("restart")
    user = current_user()
    allowed = user is not None and user.can(action)
    if offer is None or not st.button(RESTART_LABELS[offer], key=key, disabled=not allowed) or not allowed:
        return None
    try:
        return resume_job(engine, get_settings(), job["id"], extra_argv=resume_argv if offer == "resume" else (),
                          user=user.name, audit=audit)
    except JobError as exc:
        st.error(str(exc))
        return None


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
    label: str | Callable[[JobInfo], str] = "Job",
    unit: str | None = "",
    finished: Callable[[JobInfo], str | None] | None = None,
    failed: Callable[[JobInfo, str], str] | None = None,
    cancellable: bool = False,
    restart_key: str | None = None,
    every: float = 1.0,
    log_lines: int = 40,
) -> JobInfo:
    """Show a job's live progress, refreshed every ``every`` seconds while it is active; its end
    message, or its error and log tail when it failed or was cancelled; optionally a Cancel button.
    The whole page reruns once when the job ends. Returns the job as of this run of the page.

    ``label`` starts the bar's text ("Export job 3: running — 5/12 images"; a function of the job
    where it depends on the job's kind); ``unit`` names what
    done/total count (``None``: show a percentage, e.g. for bytes read). ``finished(job)`` gives the
    success message (none by default); ``failed(job, log_tail)`` the error message (by default
    "<label> <id> failed[ before its first step]: <reason>"). With ``restart_key`` (the session
    state key holding the page's job id), a stopped job that can go on gets a Resume / Run again
    button that starts it and points the key at the new job.
    """
    job = job_now(engine, job_id)
    was_active = job["status"] in ACTIVE
    label = label(job) if callable(label) else label

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
            show_ending(now, log, failed(now, log) if failed is not None else f"{label} {job_id} {now['ending']}")
            if restart_key and (new_id := restart_button(engine, now, key=f"job_restart_{job_id}")) is not None:
                st.session_state[restart_key] = new_id
                st.rerun(scope="app")
        elif cancellable and status != "cancelling":
            # A callback, so the rerun that the click causes already sees "cancelling".
            st.button("Cancel", key=f"job_cancel_{job_id}", on_click=cancel_job, args=(engine, job_id),
                      disabled=not can("run_jobs"),
                      kwargs={"wait": False})
        if was_active and status not in ACTIVE:
            st.rerun()

    st.fragment(run_every=every if was_active else None)(show)()
    return job
