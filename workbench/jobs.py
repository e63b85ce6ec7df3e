"""Background jobs: long work run as a separate process, recorded and watched in the store.

A job is a foreground CLI command (``python -m workbench <argv>``) run by this module's
runner (``python -m workbench.jobs <id>``) in a process of its own: launched with an argument
list (never a shell string), in its own process group, its output in a log file. The runner
keeps the job's row current (status, progress, heartbeat) and ends it as finished, failed or
cancelled. Pages and the CLI only read the rows, so a restart of the app loses nothing, and a
process that died is found by its missing process (pid, create time and host recorded:
``workbench.processes``) or, on another machine sharing the store, by its stale heartbeat.

Cancelling is graceful first (the job sees ``should_stop()``, saves what it has and returns),
then forced once the grace period has passed.

A failed job's ``error`` is its reason in the command's words: the last ``error: ...`` line it
printed (``workbench.cli.common.fail``), else the last line of a traceback, else its exit code;
a ``fix: ...`` line printed with the error is kept as ``details["fix"]``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from db.engine import make_engine, session_scope
from db.jobs import Job
from db.models import utcnow
from workbench.audit import record
from workbench.processes import host_name, owner_state
from workbench.progress import Cancelled, ProgressFn
from workbench.settings import PROJECT_ROOT, Settings, get_settings

ACTIVE = ("queued", "running", "cancelling")
JOB_ID_ENV = "WORKBENCH_JOB_ID"
HEARTBEAT_SECONDS = 2.0
# A running job whose heartbeat is older than this is taken for dead (e.g. its machine died).
HEARTBEAT_TIMEOUT = timedelta(seconds=60)
PROGRESS_WRITE_SECONDS = 1.0
# Kinds whose command skips the work a stopped run already did, so running it again continues.
SKIPS_DONE_WORK = ("captions", "people-detect", "embed")

_children: dict[int, subprocess.Popen] = {}  # launched here; polled so they never linger as zombies
_current: JobReporter | None = None


class JobError(RuntimeError):
    """A job operation that cannot be done (unknown job, resume of a running job ...)."""


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their UTC zone; put it back."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


# -- launching and controlling ---------------------------------------------------------------
def start_job(
    engine: Engine,
    settings: Settings,
    *,
    kind: str,
    argv: list[str],
    dataset: str | None = None,
    details: dict[str, Any] | None = None,
    resumed_from: int | None = None,
    user: str | None = None,
    audit: str | None = None,
) -> int:
    """Record a job and launch ``python -m workbench <argv>`` for it; returns the job id.

    ``user`` (who launched it) is kept in its details and is who the command acts as
    (``WORKBENCH_USER``), so that its writes carry their name and their role is checked.
    ``audit`` names the write the job makes (``import``, ``export``, ``train.start`` ...): the
    launch is recorded in the audit log under it, with the command.
    """
    details = {**(details or {}), **({"user": user} if user else {})}
    jobs_dir = Path(settings.data_dir) / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    with session_scope(engine) as session:
        job = Job(kind=kind, dataset=dataset, argv=[str(a) for a in argv], details=details,
                  resumed_from=resumed_from)
        session.add(job)
        session.flush()
        job_id = job.id
        if audit:
            record(session, user, audit, "job", job_id, dataset=dataset, after={"argv": job.argv, **details})
        job.log_path = str(jobs_dir / f"{job_id}.log")
    env = {
        **os.environ,
        JOB_ID_ENV: str(job_id),
        "WORKBENCH_DB_URL": settings.database_url,
        "WORKBENCH_DATA_DIR": str(settings.data_dir),
        "PYTHONUNBUFFERED": "1",
        **({"WORKBENCH_USER": user} if user else {}),
    }
    popen_kwargs: dict[str, Any] = {}
    if os.name == "nt":
        popen_kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        popen_kwargs["start_new_session"] = True
    with open(jobs_dir / f"{job_id}.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "workbench.jobs", str(job_id)],
            cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, **popen_kwargs,
        )
    _children[process.pid] = process
    try:
        created = psutil.Process(process.pid).create_time()
    except psutil.NoSuchProcess:  # it already ended; the runner has written its status
        created = None
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        job.pid, job.pid_started, job.host = process.pid, created, host_name()
    return job_id


def _elsewhere(job: Job) -> bool:
    """Whether the job runs on another machine (a shared store): its pid means nothing here."""
    return owner_state(job.pid, job.pid_started, job.host) == "unknown"


def _process_of(job: Job) -> psutil.Process | None:
    """The job's live process, if this machine runs it (a reused pid is not it)."""
    if job.pid is None or _elsewhere(job):
        return None
    child = _children.get(job.pid)
    if child is not None and child.poll() is not None:
        _children.pop(job.pid, None)
        return None
    if owner_state(job.pid, job.pid_started) != "alive":
        return None
    try:
        return psutil.Process(job.pid)
    except psutil.NoSuchProcess:
        return None


def kill_tree(process: psutil.Process) -> None:
    """Kill ``process`` and every descendant (a launched training's ranks included)."""
    try:
        procs = [*process.children(recursive=True), process]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)


def cancel_job(engine: Engine, job_id: int, grace_seconds: float = 10, *, wait: bool = True) -> None:
    """Ask a job to stop; kill it (and its children) if it has not stopped after the grace period.

    With ``wait=False`` this returns at once; :func:`refresh_jobs` enforces the deadline later.
    """
    with session_scope(engine) as session:
        job = _get(session, job_id)
        if job.status not in ACTIVE:
            return
        job.status = "cancelling"
        deadline = utcnow() + timedelta(seconds=grace_seconds)
        job.details = {**job.details, "cancel_deadline": deadline.isoformat()}
        process = _process_of(job)
    if process is not None and os.name != "nt":
        # SIGTERM reaches the runner's handler; on Windows terminate() would kill outright,
        # so there the job sees the request through its row instead.
        try:
            process.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    if not wait:
        return
    if process is not None:
        try:
            process.wait(timeout=grace_seconds)
        except psutil.TimeoutExpired:
            kill_tree(process)
        except psutil.NoSuchProcess:
            pass
        _children.pop(process.pid, None)
    _settle_dead(engine, job_id, "cancelled")


def _settle_dead(engine: Engine, job_id: int, status: str, error: str | None = None) -> None:
    """End a job whose process is gone without having written its end itself."""
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        if job is not None and job.status in ACTIVE:
            job.status = status
            job.finished_at = utcnow()
            if error:
                job.error = error


def refresh_jobs(engine: Engine) -> None:
    """Find active jobs whose process died or whose cancel deadline passed, and end them."""
    now = utcnow()
    with session_scope(engine) as session:
        active = session.scalars(select(Job).where(Job.status.in_(ACTIVE))).all()
        checks = [(job.id, job.status, _process_of(job), _elsewhere(job), _aware(job.heartbeat_at or job.created_at),
                   job.details.get("cancel_deadline"), job.log_path) for job in active]
    for job_id, status, process, elsewhere, beat, deadline, log_path in checks:
        if status == "cancelling" and deadline and now > datetime.fromisoformat(deadline) and not elsewhere:
            if process is not None:
                kill_tree(process)
            _settle_dead(engine, job_id, "cancelled")
        elif process is None and not elsewhere and (status != "queued" or now - beat > HEARTBEAT_TIMEOUT):
            reason, _fix = failure_from_log(_tail(log_path, 200))
            _settle_dead(engine, job_id, "cancelled" if status == "cancelling" else "failed",
                         "the job's process ended without reporting (killed, or crashed)"
                         + (f"; its log ends with: {reason}" if reason else "; see its log"))
        elif beat is not None and now - beat > HEARTBEAT_TIMEOUT:
            _settle_dead(engine, job_id, "failed",
                         f"no heartbeat for {int((now - beat).total_seconds())} s; the process is taken for dead")


def resume_job(engine: Engine, settings: Settings, job_id: int, extra_argv: list[str] | tuple[str, ...] = (),
               user: str | None = None, audit: str | None = None) -> int:
    """Launch a job again with the same command (plus ``extra_argv``), as ``user`` (default: who
    launched it first); returns the new id."""
    refresh_jobs(engine)
    with session_scope(engine) as session:
        job = _get(session, job_id)
        if job.status in ACTIVE:
            raise JobError(f"job {job_id} is still {job.status}; cancel it before resuming")
        kind, dataset, argv, details = job.kind, job.dataset, list(job.argv), dict(job.details)
    for stale in ("cancel_deadline", "fix", "stage"):  # they described the old run
        details.pop(stale, None)
    return start_job(engine, settings, kind=kind, argv=argv + [a for a in extra_argv if a not in argv],
                     dataset=dataset, details=details, resumed_from=job_id, user=user or details.get("user"),
                     audit=audit)


def _get(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise JobError(f"no job {job_id}")
    return job


def get_job(session: Session, job_id: int) -> Job:
    """The job with this id (:class:`JobError` if there is none)."""
    return _get(session, job_id)


def list_jobs(session: Session, kind: str | None = None, dataset: str | None = None) -> list[Job]:
    """Jobs, newest first, optionally of one kind or dataset."""
    query = select(Job).order_by(Job.id.desc())
    if kind is not None:
        query = query.where(Job.kind == kind)
    if dataset is not None:
        query = query.where(Job.dataset == dataset)
    return list(session.scalars(query))


def latest_active_job(engine: Engine, kind: str | tuple[str, ...], dataset: str | None = None,
                      matching: Callable[[dict[str, Any]], bool] | None = None) -> int | None:
    """The id of the newest job of ``kind`` (or of any of several kinds; of ``dataset``, when given;
    whose details ``matching`` accepts, when given) still queued, running or cancelling, dead
    processes found first; ``None`` when there is none. It is how a page finds the job it watches
    after a reload, or one another curator started."""
    refresh_jobs(engine)
    kinds = (kind,) if isinstance(kind, str) else kind
    query = select(Job.id, Job.details).where(Job.kind.in_(kinds), Job.status.in_(ACTIVE)).order_by(Job.id.desc())
    if dataset is not None:
        query = query.where(Job.dataset == dataset)
    with session_scope(engine) as session:
        for job_id, details in session.execute(query):
            if matching is None or matching(details or {}):
                return job_id
    return None


def _tail(log_path: str | None, lines: int) -> str:
    if not log_path or not Path(log_path).is_file():
        return ""
    with Path(log_path).open("r", encoding="utf-8", errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines))


def read_log_tail(job: Job, lines: int = 200) -> str:
    """The last ``lines`` lines of the job's log ("" before it has written any)."""
    return _tail(job.log_path, lines)


def failure_from_log(log: str) -> tuple[str | None, str | None]:
    """``(reason, fix)`` a failed command left in its log: its last ``error: ...`` line and the
    ``fix: ...`` printed with it, else the ``Type: message`` line that ends its last traceback."""
    from workbench.cli.common import failure_lines

    error, fix = failure_lines(log)
    if error:
        return error, fix
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:
        # the first unindented line after the frames (their source lines and ^^^ marks are indented)
        for line in lines[starts[-1] + 1:]:
            if line.strip() and not line[0].isspace():
                return line.strip(), None
    return None, None


def restart_offer(job: Job) -> str | None:
    """What a stopped job's page can offer: ``"resume"`` where running it again continues where
    it stopped (a training run with a checkpoint; a kind that skips done work, once it did some),
    ``"run again"`` where it would start over, ``None`` where the page's form is the way back."""
    if job.status not in ("failed", "cancelled"):
        return None
    if job.kind == "train":
        from workbench.training import checkpoints

        output_dir = (job.details or {}).get("output_dir")
        return "resume" if output_dir and checkpoints(Path(output_dir)) else "run again"
    if job.kind in SKIPS_DONE_WORK:
        return "resume" if job.done else "run again"
    return None


def ending(job: Job) -> str | None:
    """How a job that did not finish ended, in words: ``"failed before its first step: <reason>"``,
    ``"failed: <reason>"`` or ``"cancelled"``; ``None`` for a job that finished or is active."""
    reason = job.error or "no reason recorded; see its log"
    if job.status == "failed":
        return f"failed before its first step: {reason}" if not job.done else f"failed: {reason}"
    if job.status == "cancelled":
        return f"cancelled: {job.error}" if job.error else "cancelled"
    return None


def job_summary(job: Job) -> dict[str, Any]:
    """A job as plain data (for ``--json`` and tables)."""
    return {
        "id": job.id, "kind": job.kind, "dataset": job.dataset, "status": job.status,
        "done": job.done, "total": job.total, "message": job.message, "pid": job.pid,
        "argv": job.argv, "created_at": job.created_at, "started_at": job.started_at,
        "finished_at": job.finished_at, "heartbeat_at": job.heartbeat_at, "error": job.error,
        "log_path": job.log_path, "details": job.details, "resumed_from": job.resumed_from,
        "ending": ending(job), "fix": (job.details or {}).get("fix"), "restart": restart_offer(job),
    }


# -- inside the job's process ------------------------------------------------------------------
class JobReporter:
    """The running job's link to its row: progress, heartbeat, details, and stop requests."""

    def __init__(self, engine: Engine, job_id: int):
        self.engine = engine
        self.job_id = job_id
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._last_write = 0.0
        self._beating = threading.Event()

    def progress(self, done: int, total: int | None, message: str = "") -> None:
        """Record progress; written at most once a second (and always at the end)."""
        with self._lock:
            self._pending.update(done=int(done), total=total, **({"message": message} if message else {}))
        if time.monotonic() - self._last_write >= PROGRESS_WRITE_SECONDS or (total and done >= total):
            self._flush()

    def as_progress(self) -> ProgressFn:
        """This reporter as a plain ``ProgressFn``."""
        return lambda done, total: self.progress(done, total)

    def should_stop(self) -> bool:
        """Whether a cancel was requested."""
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Ask the job to stop (signal handler, or the heartbeat seeing a cancel)."""
        self._stop.set()

    def update_details(self, **values: Any) -> None:
        """Merge kind-specific values into the job's details (written at once)."""
        with session_scope(self.engine) as session:
            job = session.get(Job, self.job_id)
            job.details = {**job.details, **values}

    def _flush(self) -> None:
        with self._lock:
            values, self._pending = self._pending, {}
        with session_scope(self.engine) as session:
            job = session.get(Job, self.job_id)
            for key, value in values.items():
                setattr(job, key, value)
            job.heartbeat_at = utcnow()
            if job.status == "cancelling":
                self._stop.set()
        self._last_write = time.monotonic()

    def _heartbeat(self) -> None:
        while not self._beating.wait(HEARTBEAT_SECONDS):
            try:
                self._flush()
            except Exception:  # a busy store must not kill the job; the next beat retries
                pass

    def start_heartbeat(self) -> None:
        """Beat (and pick up cancel requests) in a daemon thread until :meth:`stop_heartbeat`."""
        threading.Thread(target=self._heartbeat, name=f"job-{self.job_id}-heartbeat", daemon=True).start()

    def stop_heartbeat(self) -> None:
        """End the heartbeat thread."""
        self._beating.set()


def current_job() -> JobReporter | None:
    """The reporter of the job this process runs; ``None`` in a foreground command."""
    return _current


def current_job_id() -> int | None:
    """The id of the job this process runs (what its results record); ``None`` in a foreground command."""
    return _current.job_id if _current is not None else None


def run_job(job_id: int) -> int:
    """Run job ``job_id`` in this process (the runner's body); returns the exit code."""
    global _current
    from workbench.cli import app

    settings = get_settings()
    engine = make_engine(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    with session_scope(engine) as session:
        job = _get(session, job_id)
        if job.status == "cancelling":
            job.status, job.finished_at = "cancelled", utcnow()
            return 0
        job.status, job.started_at, job.heartbeat_at = "running", utcnow(), utcnow()
        argv, log_path = list(job.argv), job.log_path
    reporter = JobReporter(engine, job_id)
    _current = reporter
    if os.name != "nt":
        signal.signal(signal.SIGTERM, lambda *_: reporter.request_stop())
    reporter.start_heartbeat()
    print(f"job {job_id}: python -m workbench {' '.join(argv)}", flush=True)
    status, error, fix, code = "finished", None, None, 0
    try:
        # Without standalone mode click returns the exit code of typer.Exit instead of exiting.
        code = app(args=argv, prog_name="python -m workbench", standalone_mode=False) or 0
    except Cancelled:
        status = "cancelled"
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        from click import ClickException

        if isinstance(exc, ClickException):  # a usage error: bad option or argument
            exc.show()
            status, error, code = "failed", exc.format_message(), exc.exit_code
        else:
            traceback.print_exc()
            status, error, code = "failed", f"{type(exc).__name__}: {exc}", 1
    finally:
        reporter.stop_heartbeat()
    if status == "finished" and code:  # the command exited with an error: find its words in the log
        sys.stdout.flush()
        sys.stderr.flush()
        reason, fix = failure_from_log(_tail(log_path, 200))
        status, error = "failed", reason or f"exit code {code}"
    if status == "finished" and reporter.should_stop():
        status = "cancelled"
    reporter._flush()
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        job.status, job.finished_at, job.error = status, utcnow(), error
        if fix:
            job.details = {**job.details, "fix": fix}
    print(f"job {job_id}: {status}" + (f" ({error})" if error else ""), flush=True)
    return code


if __name__ == "__main__":
    # Run through the imported module, not this ``__main__`` copy, so that ``current_job()``
    # called by the command sees the reporter.
    from workbench import jobs

    sys.exit(jobs.run_job(int(sys.argv[1])))
