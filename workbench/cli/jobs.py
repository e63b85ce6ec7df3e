"""Job commands: list, watch, cancel and resume background jobs (``jobs ...``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Callable, Optional

import typer

from workbench.cli.common import MAX_ID, engine_of, fail, print_json, settings_of

if TYPE_CHECKING:
    from db.jobs import Job

app = typer.Typer()
jobs_app = typer.Typer(help="Background jobs: list, status, log, cancel, resume.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

JobArg = Annotated[int, typer.Argument(min=1, max=MAX_ID, help="Job id (see `jobs list`).")]


@jobs_app.command("list")
def list_cmd(
    ctx: typer.Context,
    kind: Annotated[Optional[str], typer.Option(help="Only jobs of this kind.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List jobs, newest first (dead processes are detected first)."""
    rows = job_rows(ctx, kind)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        total = row["total"] if row["total"] is not None else "?"
        typer.echo(f"{row['id']:5d}  {row['kind']:10s}  {row['status']:10s}  {row['done']}/{total}  "
                   f"{' '.join(row['argv'])}")


@jobs_app.command("status")
def status_cmd(
    ctx: typer.Context,
    job_id: JobArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one job."""
    row = job_row(ctx, job_id)
    if as_json:
        print_json(row)
    else:
        for key, value in row.items():
            typer.echo(f"{key:13s} {value}")


@jobs_app.command("log")
def log_cmd(
    ctx: typer.Context,
    job_id: JobArg,
    lines: Annotated[int, typer.Option(min=1, max=1_000_000, help="How many lines from the end.")] = 50,
) -> None:
    """Print the end of a job's log."""
    from db.engine import session_scope
    from workbench.jobs import JobError, get_job, read_log_tail

    try:
        with session_scope(engine_of(ctx)) as session:
            typer.echo(read_log_tail(get_job(session, job_id), lines), nl=False)
    except JobError as exc:
        fail(str(exc))


@jobs_app.command("cancel")
def cancel_cmd(
    ctx: typer.Context,
    job_id: JobArg,
    grace: Annotated[float, typer.Option(min=0, max=86_400, help="Seconds to wait for a graceful stop before killing.")] = 10.0,
) -> None:
    """Stop a job: gracefully, then forcibly after --grace seconds."""
    cancel_or_fail(ctx, job_id, grace)
    typer.echo(f"job {job_id} stopped")


@jobs_app.command("resume")
def resume_cmd(ctx: typer.Context, job_id: JobArg) -> None:
    """Launch a stopped or failed job again with the same command; prints the new job's id."""
    typer.echo(resume_or_fail(ctx, job_id))


Summarise = Callable[["Job"], dict]  # a job of the store -> what a command shows of it


def job_rows(ctx: typer.Context, kind: Optional[str], summarise: Optional[Summarise] = None) -> list[dict]:
    """The jobs (of ``kind``, else all), newest first, each as ``summarise`` (default
    :func:`workbench.jobs.job_summary`) sees it; dead processes are detected first."""
    from db.engine import session_scope
    from workbench.jobs import job_summary, list_jobs, refresh_jobs

    engine = engine_of(ctx)
    refresh_jobs(engine)
    with session_scope(engine) as session:
        return [(summarise or job_summary)(job) for job in list_jobs(session, kind=kind)]


def job_row(ctx: typer.Context, job_id: int, summarise: Optional[Summarise] = None, kind: Optional[str] = None,
            kind_name: Optional[str] = None) -> dict:
    """One job as ``summarise`` (default :func:`workbench.jobs.job_summary`) sees it, dead processes
    detected first; an unknown job, or one not of ``kind`` (called ``kind_name``), is a clear error."""
    from db.engine import session_scope
    from workbench.jobs import JobError, get_job, job_summary, refresh_jobs

    engine = engine_of(ctx)
    refresh_jobs(engine)
    try:
        with session_scope(engine) as session:
            job = get_job(session, job_id)
            if kind is not None and job.kind != kind:
                fail(f"job {job_id} is a {job.kind} job, not a {kind_name or kind} job; "
                     f"see `python -m workbench jobs status {job_id}`")
            return (summarise or job_summary)(job)
    except JobError as exc:
        fail(str(exc))


def cancel_or_fail(ctx: typer.Context, job_id: int, grace: float) -> None:
    """Cancel a job (graceful, then forced after ``grace`` s); an unknown job is a clear error."""
    from workbench.jobs import JobError, cancel_job

    try:
        cancel_job(engine_of(ctx), job_id, grace_seconds=grace)
    except JobError as exc:
        fail(str(exc))


def resume_or_fail(ctx: typer.Context, job_id: int, extra_argv: tuple[str, ...] = (), user: str | None = None,
                   audit: str | None = None) -> int:
    """Resume a job with its command plus ``extra_argv`` (as ``user``, default its first launcher);
    returns the new id (clear error if it can't)."""
    from workbench.jobs import JobError, resume_job

    try:
        return resume_job(engine_of(ctx), settings_of(ctx), job_id, extra_argv=extra_argv, user=user, audit=audit)
    except JobError as exc:
        fail(str(exc))


def run_trainer(train_fn, config):
    """Run a trainer (``train/controlnet.py`` or ``train/segmenter.py``) in this command: wired to the
    job's progress, cancel and details when it runs as a job; a bad config or data is a usage error,
    a stop on request ends the job as cancelled."""
    from train.config import ConfigError
    from train.runs import StopRequested
    from train.data import DataError
    from workbench.jobs import current_job
    from workbench.progress import Cancelled

    job = current_job()
    try:
        if job is None:
            return train_fn(config)
        return train_fn(config, progress=lambda done, total: job.progress(done, total, f"step {done}/{total}"),
                        should_stop=job.should_stop, on_details=lambda d: job.update_details(**d))
    except (ConfigError, DataError) as exc:
        fail(str(exc))
    except StopRequested as exc:
        typer.echo(str(exc))
        raise Cancelled(str(exc)) from None
