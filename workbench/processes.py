"""The processes long work runs in: who owns a run, whether it still lives, and worker pools that
never outlive their parent.

A run (an import, an export, a job) records its owner when it starts: pid, the process's create
time (a pid reused by another process is not the owner) and the host name (a store shared by
several machines cannot judge another machine's pids). :func:`owner_state` answers "alive",
"gone" or "unknown" for such a record; readers turn a "running" record whose owner is gone into
a failed one.

Worker processes (spawned, so the same on Linux, macOS and Windows) get a parent watch: a daemon
thread that checks every :data:`WATCH_SECONDS` whether the process that started the pool is still
the same process, and ends the worker (``os._exit``) when it is not. Killing an export's main
process outright (SIGKILL, Task Manager's "End task") thus ends its workers within about a
second. On Linux ``PR_SET_PDEATHSIG`` ends them at once as well; the watch alone suffices.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import socket
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Literal

import psutil

WATCH_SECONDS = 0.5
# Create times are boot time (whole seconds, which the kernel recomputes as the clock is adjusted)
# plus start ticks: two readings of one process may differ by a second.
CREATE_TIME_TOLERANCE = 2.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
OwnerState = Literal["alive", "gone", "unknown"]


@dataclass(frozen=True)
class Owner:
    """A process, identified across pid reuse: pid, create time (epoch seconds) and host name."""

    pid: int
    started: float | None
    host: str


def host_name() -> str:
    """This machine's name as runs record it."""
    return socket.gethostname()


def this_process() -> Owner:
    """The calling process as an :class:`Owner`."""
    pid = os.getpid()
    return Owner(pid, psutil.Process(pid).create_time(), host_name())


def owner_state(pid: int | None, started: float | None = None, host: str | None = None) -> OwnerState:
    """Whether the recorded owner of a run still runs: ``"alive"``, ``"gone"``, or ``"unknown"``
    when it ran on another host (its pid means nothing here).

    A record without a pid is taken for gone (nothing can still be working on it); a record
    without a create time (older stores) is judged by its pid alone.
    """
    if host and host != host_name():
        return "unknown"
    if pid is None:
        return "gone"
    try:
        process = psutil.Process(pid)
        if started is not None and abs(process.create_time() - started) > CREATE_TIME_TOLERANCE:
            return "gone"  # the pid now belongs to another process
        if process.status() == psutil.STATUS_ZOMBIE:
            return "gone"
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return "gone"
    except psutil.AccessDenied:  # another user's process: it exists
        return "alive"
    return "alive"


def is_gone(pid: int | None, started: float | None = None, host: str | None = None) -> bool:
    """Whether a run's recorded owner has surely ended (not for a run on another host)."""
    return owner_state(pid, started, host) == "gone"


# -- the parent watch -----------------------------------------------------------------------------
def watch_parent(parent: Owner, interval: float = WATCH_SECONDS, *, death_signal: bool = True) -> threading.Thread:
    """End this process (``os._exit``) as soon as ``parent`` is gone; returns the watching thread.

    ``death_signal``: also ask Linux to kill this process with its parent (only where ``parent``
    is the parent, not a further ancestor).
    """
    if death_signal:
        _linux_death_signal(parent.pid)

    def watch() -> None:
        while True:
            if owner_state(parent.pid, parent.started) == "gone":
                os._exit(1)  # no clean-up: there is nobody left to deliver results to
            threading.Event().wait(interval)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


def _linux_death_signal(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent ends (a fast path; the watch is the rule)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    # The parent may have died before the request was made: then nothing would signal us.
    if os.getppid() != parent_pid:
        os._exit(1)


def _start_watched_worker(parent: Owner, initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    watch_parent(parent)
    if initializer is not None:
        initializer(*initargs)


def watched_process_pool(workers: int, initializer: Callable[..., Any] | None = None,
                         initargs: tuple = ()) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes that end when this process ends, however it ends.

    ``initializer(*initargs)`` runs in each worker after its parent watch has started (it must be
    importable by name, as spawned workers import it).
    """
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_watched_worker,
                               initargs=(this_process(), initializer, initargs))


PARENT_ENV = "WORKBENCH_PARENT_PROCESS"


def parent_env() -> dict[str, str]:
    """Environment that lets a process started further down (e.g. a trainer rank under accelerate's
    launcher) watch this process with :func:`watch_parent_from_env`."""
    owner = this_process()
    return {PARENT_ENV: f"{owner.pid}:{owner.started!r}"}


def watch_parent_from_env() -> threading.Thread | None:
    """Start :func:`watch_parent` on the process named by :data:`PARENT_ENV`, if set (no death
    signal: that process is an ancestor, not necessarily the parent)."""
    value = os.environ.pop(PARENT_ENV, None)  # this process's own children (e.g. jobs) are not bound to it
    if not value:
        return None
    pid, started = value.split(":", 1)
    return watch_parent(Owner(int(pid), float(started), host_name()), death_signal=False)


# -- records of runs ------------------------------------------------------------------------------
ORPHANED = "process ended before it finished (killed, or its machine stopped)"


def record_owner(row: Any, owner: Owner | None = None) -> None:
    """Set a run record's ``pid``, ``pid_started`` and ``host`` to ``owner`` (default: this process)."""
    owner = owner or this_process()
    row.pid, row.pid_started, row.host = owner.pid, owner.started, owner.host


def settle_orphans(rows: Any, status: str = "failed", error: str = f"its {ORPHANED}") -> list[Any]:
    """Mark every ``running`` record among ``rows`` whose owner is gone as ``status`` (with
    ``error`` and ``finished_at``); returns those. The caller's transaction writes them."""
    from db.models import utcnow

    settled = []
    for row in rows:
        if row.status == "running" and is_gone(row.pid, row.pid_started, row.host):
            row.status, row.error, row.finished_at = status, error, utcnow()
            settled.append(row)
    return settled
