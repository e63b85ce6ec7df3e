"""Helpers shared by the CLI's command modules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Callable, NoReturn, Optional, TypeVar

import typer
from sqlalchemy import Engine

from workbench.guard import InputRefused
from workbench.progress import ProgressFn, StageFn, StopFn, tqdm_progress, tqdm_stages
from workbench.settings import Settings


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the root command built from ``--db`` and the environment."""
    return ctx.find_root().obj["settings"]


def engine_of(ctx: typer.Context) -> Engine:
    """The store's engine (schema brought up to date)."""
    from sqlalchemy.exc import SQLAlchemyError

    from db.engine import make_engine

    settings = settings_of(ctx)
    try:
        return make_engine(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    except (SQLAlchemyError, ImportError) as exc:
        fail(f"cannot open the store {settings.database_url!r}: {str(exc).splitlines()[0]}",
             fix="give --db (or WORKBENCH_DB_URL) a SQLAlchemy URL of a store you can open, "
                 "e.g. sqlite:///data/workbench.db")


# A failing command tells why on one line, and how to fix it on the next when that is known:
#   error: pretrained_model_name_or_path=runwayml/stable-diffusion-v1-5: cannot load ...
#   fix: hf download runwayml/stable-diffusion-v1-5
# The job runner (workbench.jobs) records these as a failed job's error and fix, which the
# pages show; `fail` prints them, `failure_lines` reads them back from a log.
ERROR_PREFIX = "error: "
FIX_PREFIX = "fix: "


def fail(message: str, code: int = 2, *, fix: str | None = None) -> NoReturn:
    """Print ``error: message`` (then ``fix: fix`` when given) on stderr, each on one line (a
    library's multi-line text is joined), and exit with ``code``."""
    typer.echo(f"{ERROR_PREFIX}{_one_line(message)}", err=True)
    if fix:
        typer.echo(f"{FIX_PREFIX}{_one_line(fix)}", err=True)
    raise typer.Exit(code)


def fail_with_fix(exc: BaseException) -> NoReturn:
    """:func:`fail` with a library error whose cause knows its fix (a model that is not ready,
    ``ModelNotReady.fix``): the reason on the error line, the fix on its own line."""
    fix = getattr(exc.__cause__, "fix", None)
    message = str(exc.args[0]) if exc.args else str(exc)
    fail(message.split(" Fix: ")[0] if fix else message, fix=fix)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def failure_lines(log: str) -> tuple[str | None, str | None]:
    """``(error, fix)`` of the last ``error: ...`` line in ``log`` and the ``fix: ...`` line
    printed right after it by :func:`fail`; ``None`` for what is not there."""
    lines = log.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith(ERROR_PREFIX):
            following = lines[index + 1] if index + 1 < len(lines) else ""
            fix = following.removeprefix(FIX_PREFIX).strip() if following.startswith(FIX_PREFIX) else None
            return lines[index].removeprefix(ERROR_PREFIX).strip(), fix or None
    return None, None


T = TypeVar("T")
# Bounds shared by options: ids and seeds fit the store's 64-bit integers; a picture side past
# this would take gigabytes (the export's largest resolution too).
MAX_ID = 2**63 - 1
MAX_SIDE = 8192


def guarded(check: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one of :mod:`workbench.guard`'s checks; a refusal is a usage error (exit 2)."""
    try:
        return check(*args, **kwargs)
    except InputRefused as exc:
        fail(str(exc))


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON (dates and paths as strings)."""
    typer.echo(json.dumps(data, indent=2, default=str))


def parse_size(size: Optional[str]) -> Optional[tuple[int, int]]:
    """``"512x768"`` -> ``(512, 768)`` (width, height), each side 1 to ``MAX_SIDE``; ``None`` stays ``None``."""
    if size is None:
        return None
    try:
        if len(size) > 20:
            raise ValueError
        w, h = (int(v) for v in size.lower().split("x"))
        if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"--size must look like 512x768 (width x height, each 1 to {MAX_SIDE}), "
                                 f"not {size[:40]!r}") from None
    return (w, h)


@contextmanager
def progress_hooks(desc: str, unit: str = "it") -> Iterator[tuple[ProgressFn, StopFn | None]]:
    """``(progress, should_stop)`` for a long command: the job's own when it runs as a
    background job, a tqdm bar (and no stop hook: Ctrl+C) in the foreground."""
    from workbench.jobs import current_job

    job = current_job()
    if job is not None:
        yield job.as_progress(), job.should_stop
        return
    with tqdm_progress(desc, unit=unit) as progress:
        yield progress, None


def run_with_progress(desc: str, unit: str, work: Callable[..., T], *args: Any,
                      errors: type[Exception] | tuple[type[Exception], ...], **kwargs: Any) -> T:
    """``work(*args, **kwargs)`` with :func:`progress_hooks`' ``progress`` and ``should_stop`` and the
    background job's id (``job_id``, None in the foreground) that it records; ``errors`` exit 2."""
    from workbench.jobs import current_job_id

    with progress_hooks(desc, unit=unit) as (progress, should_stop):
        try:
            return work(*args, progress=progress, should_stop=should_stop, job_id=current_job_id(), **kwargs)
        except errors as exc:
            fail(str(exc))


@contextmanager
def stage_hooks(desc: str) -> Iterator[tuple[StageFn, StopFn | None]]:
    """``(stage, should_stop)`` for a command whose work comes in stages: the job's progress
    with the stage as its message in a background job, one tqdm bar per stage in the foreground."""
    from workbench.jobs import current_job

    job = current_job()
    if job is not None:
        yield (lambda what, unit: lambda done, total: job.progress(done, total, message=what)), job.should_stop
        return
    with tqdm_stages(desc) as stage:
        yield stage, None


BackgroundOpt = Annotated[bool, typer.Option("--background", help="Run as a background job; print its id.")]
RequestJsonOpt = Annotated[Optional[str], typer.Option(help="The whole request as JSON (what a job runs).")]

CuratorOpt = Annotated[Optional[str], typer.Option(
    "--curator", help="Who acts (recorded on the decision and in the audit log); default: WORKBENCH_USER or "
                      "the OS login. A user of the store when sign-in is on.")]


def actor_of(ctx: typer.Context, action: str, name: Optional[str] = None):
    """Who this command acts as (``name``, e.g. ``--curator``, else ``WORKBENCH_USER``, else the OS
    login; the local admin while sign-in is off), refused with exit 2 unless their role may ``action``."""
    from db.engine import session_scope
    from workbench.users import UserError, acting_user, require

    try:
        with session_scope(engine_of(ctx)) as session:
            actor = acting_user(session, settings_of(ctx), name)
        require(actor, action)
    except UserError as exc:
        fail(str(exc))
    return actor


def audit_launch(ctx: typer.Context, user: str, action: str, entity: str, entity_id: object, *,
                 dataset: Optional[str] = None, after: Any = None) -> None:
    """Record a write this command made (an import, an export, a launch ...) in the audit log,
    unless it runs as a background job: whoever launched the job recorded it then."""
    from db.engine import session_scope
    from workbench.audit import record
    from workbench.jobs import current_job

    if current_job() is not None:
        return
    with session_scope(engine_of(ctx)) as session:
        record(session, user, action, entity, entity_id, dataset=dataset, after=after)
