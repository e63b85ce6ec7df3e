"""Training commands: run, start, watch, cancel and resume ControlNet training (``train ...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from workbench.cli.common import MAX_SIDE, actor_of, audit_launch, engine_of, fail, print_json, settings_of
from workbench.cli.jobs import JobArg, cancel_or_fail, job_row, job_rows, resume_or_fail, run_trainer

app = typer.Typer()
train_app = typer.Typer(help="Train a ControlNet on an export: in the foreground or as a background job.",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")

KIND = "train"
ConfigOpt = Annotated[Path, typer.Option("--config", help="YAML or JSON training config (keys: train/config.py).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: key=value (repeatable).")]
ResumeOpt = Annotated[Optional[str], typer.Option("--resume-from-checkpoint",
                                                  help="'latest' or a checkpoint folder.")]
ProcessesOpt = Annotated[Optional[int], typer.Option(
    "--num-processes", min=1, max=1024, help="Training processes, one per GPU (run: default 1; start: every visible GPU, 1 on CPU). "
                            "More than 1 launches through `accelerate launch`.")]
AccelerateOpt = Annotated[Optional[Path], typer.Option(
    "--accelerate-config", help="An accelerate config file (multi-node and the like); launches through it.")]


def _overrides(values: Optional[list[str]], resume: Optional[str]) -> list[str]:
    items = list(values or [])
    if resume:
        items.append(f"resume_from_checkpoint={resume}")
    return items


@train_app.command("run")
def run(ctx: typer.Context, config: ConfigOpt, set_: SetOpt = None, resume_from_checkpoint: ResumeOpt = None,
        num_processes: ProcessesOpt = None, accelerate_config: AccelerateOpt = None) -> None:
    """Train in this process, or launch and watch several (what a background job runs); a job cancel stops it."""
    from train.config import ConfigError, load_config
    from workbench.train_launch import is_launched

    actor = actor_of(ctx, "train")
    overrides = _overrides(set_, resume_from_checkpoint)
    try:
        cfg = load_config(config, overrides)
    except ConfigError as exc:
        fail(str(exc))
    audit_launch(ctx, actor.name, "train.start", "config", Path(config).resolve(),
                 after={"overrides": overrides, "output_dir": str(cfg.output_dir), "foreground": True})
    if is_launched(num_processes, accelerate_config):
        _run_launched(cfg, config, overrides, num_processes, accelerate_config)
        return
    from train.controlnet import train

    result = run_trainer(train, cfg)
    typer.echo(f"trained {result.global_step} steps; ControlNet in {result.output_dir}; "
               f"last checkpoint {result.last_checkpoint}")


def _run_launched(cfg, config: Path, overrides: list[str], num_processes: Optional[int],
                  accelerate_config: Optional[Path]) -> None:
    """Several processes through accelerate's launcher, watched from here (train/controlnet.py's ranks)."""
    from workbench.jobs import current_job
    from workbench.progress import Cancelled
    from workbench.train_launch import run_launched
    from workbench.training import TrainingError

    job = current_job()
    try:
        result = run_launched(
            cfg, config, overrides, num_processes, accelerate_config,
            progress=(lambda done, total: job.progress(done, total, f"step {done}/{total}")) if job else None,
            should_stop=job.should_stop if job else None,
            on_details=(lambda d: job.update_details(**d)) if job else None)
    except TrainingError as exc:
        fail(str(exc))
    if result.error:
        raise TrainingError(result.error)  # the job's error; the ranks' tracebacks are in its log
    if result.stopped:
        typer.echo(f"stopped at step {result.global_step} on request; resume from {result.last_checkpoint}")
        raise Cancelled(f"stopped at step {result.global_step}")
    typer.echo(f"trained {result.global_step} steps on {num_processes or 'the configured'} processes; "
               f"ControlNet in {cfg.output_dir}; last checkpoint {result.last_checkpoint}")


@train_app.command("start")
def start(ctx: typer.Context, config: ConfigOpt, set_: SetOpt = None, resume_from_checkpoint: ResumeOpt = None,
          num_processes: ProcessesOpt = None, accelerate_config: AccelerateOpt = None) -> None:
    """Start training as a background job; prints the job id."""
    from train.config import ConfigError, load_config
    from workbench.train_launch import start_training
    from workbench.training import TrainingError

    overrides = _overrides(set_, resume_from_checkpoint)
    actor = actor_of(ctx, "train")
    try:
        cfg = load_config(config, overrides)  # fail here, not in the job's log
        job_id = start_training(engine_of(ctx), settings_of(ctx), cfg, config, overrides, num_processes,
                                accelerate_config, user=actor.name)
    except (ConfigError, TrainingError) as exc:
        fail(str(exc))
    typer.echo(job_id)


def _summary(job) -> dict:
    from workbench.jobs import job_summary
    from workbench.training import run_summary

    data = job_summary(job)
    output_dir = (job.details or {}).get("output_dir")
    if output_dir:
        data["run"] = run_summary(Path(output_dir), (job.details or {}).get("max_train_steps"))
    return data


@train_app.command("list")
def list_(ctx: typer.Context, json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Training jobs, newest first."""
    rows = job_rows(ctx, KIND, _summary)
    if json_:
        print_json(rows)
        return
    if not rows:
        typer.echo("no training jobs")
    for row in rows:
        run_info = row.get("run") or {}
        typer.echo(f"{row['id']:>5}  {row['status']:<10}  step {run_info.get('step', 0)}/"
                   f"{run_info.get('max_train_steps') or '?'}  {(row['details'] or {}).get('output_dir', '')}")


@train_app.command("status")
def status(ctx: typer.Context, job_id: JobArg,
           json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """One training job: status, step, loss, ETA, checkpoints."""
    from workbench.training import format_duration

    data = job_row(ctx, job_id, _summary, kind=KIND, kind_name="training")
    if json_:
        print_json(data)
        return
    run_info = data.get("run") or {}
    typer.echo(f"job {job_id}: {data['ending'] or data['status']}")
    if data["fix"]:
        typer.echo(f"fix: {data['fix']}")
    typer.echo(f"step {run_info.get('step', 0)}/{run_info.get('max_train_steps') or '?'}  loss {run_info.get('loss')}  "
               f"val_loss {run_info.get('val_loss')}  {run_info.get('samples_per_s')} samples/s  "
               f"ETA {format_duration(run_info.get('eta_s'))}")
    for path in run_info.get("checkpoints", []):
        typer.echo(f"checkpoint: {path}")


@train_app.command("cancel")
def cancel(ctx: typer.Context, job_id: JobArg,
           grace: Annotated[float, typer.Option(min=0, max=86_400, help="Seconds to wait for a checkpoint before killing.")] = 60) -> None:
    """Stop a training job: it saves a checkpoint and exits (killed after the grace period)."""
    cancel_or_fail(ctx, job_id, grace)
    typer.echo(f"job {job_id} cancelled")


@train_app.command("resume")
def resume(ctx: typer.Context, job_id: JobArg) -> None:
    """Start a stopped or failed training job again from its latest checkpoint (from step 0 when it
    saved none); prints the new id."""
    from db.engine import session_scope
    from workbench.jobs import JobError, get_job, restart_offer

    actor = actor_of(ctx, "train")
    try:
        with session_scope(engine_of(ctx)) as session:
            offer = restart_offer(get_job(session, job_id))
    except JobError as exc:
        fail(str(exc))
    if offer == "run again":
        typer.echo(f"note: job {job_id} saved no checkpoint; the new job starts from step 0", err=True)
    typer.echo(resume_or_fail(ctx, job_id, ("--resume-from-checkpoint=latest",), user=actor.name,
                              audit="train.resume"))


@train_app.command("suggest")
def suggest(gpu_memory: Annotated[Optional[float], typer.Option(min=0.1, max=100_000, help="GiB per GPU (default: this machine's).")] = None,
            target_batch: Annotated[int, typer.Option(min=1, max=256, help="Target effective batch (up to 256).")] = 64,
            resolution: Annotated[Optional[int], typer.Option(min=8, max=MAX_SIDE, help="Training resolution (default 512; SDXL 1024).")] = None,
            processes: Annotated[int, typer.Option(min=1, max=1024, help="GPUs.")] = 1,
            sdxl: Annotated[bool, typer.Option("--sdxl", help="For an SDXL base (two text encoders, 1024 px).")] = False,
            json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Suggested batch size, accumulation and steps for a GPU (see train/suggest.py for why)."""
    import importlib.util
    from dataclasses import asdict

    from train.suggest import detect_gpu_memory_gib, suggest_settings

    if resolution is not None and resolution % 8:
        raise typer.BadParameter(f"{resolution} is not a multiple of 8 (the VAE downsamples by 8); "
                                 f"try {resolution // 8 * 8 or 8}", param_hint="--resolution")
    memory = detect_gpu_memory_gib() if gpu_memory is None else gpu_memory
    suggestion = suggest_settings(memory, target_batch, resolution, processes, sdxl=sdxl,
                                  have_bitsandbytes=importlib.util.find_spec("bitsandbytes") is not None)
    if json_:
        print_json(asdict(suggestion))
        return
    for key, value in suggestion.as_overrides().items():
        typer.echo(f"{key}: {value}")
    typer.echo(suggestion.note)
