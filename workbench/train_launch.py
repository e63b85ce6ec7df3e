"""Training on several processes: accelerate's own launcher, started as an argument list, every rank watched.

``train start`` and the Train page record ``train run --config F --num-processes N
[--accelerate-config C]`` as the job's command (N defaults to every visible GPU, 1 without one).
One process and no accelerate config: the job trains in its own process, as before. Otherwise
:func:`run_launched` starts ``python -m accelerate.commands.launch ... train/controlnet.py`` from
the job's process and watches it:

- progress and the run's details (step, last checkpoint) come from the files the main rank writes;
- the ranks are the launcher's descendants that run the trainer; their pids are in the job's details;
- cancel creates the run's stop file (``train/distributed.py``): the ranks agree on a step, save a
  checkpoint and exit; after the job's grace period the job's whole process tree is killed;
- a rank that dies fails the job: torch's launcher then ends the other ranks and exits non-zero;
  should it not within ``RANK_GRACE_SECONDS`` of a rank vanishing, the tree is killed here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from train.config import TrainConfig
from train.distributed import stop_file
from workbench.processes import parent_env
from workbench.settings import PROJECT_ROOT
from workbench.training import METRICS_FILE, MetricsTail, TrainingError, base_is_tiny, checkpoints, train_argv

TRAINER_SCRIPT = PROJECT_ROOT / "train" / "controlnet.py"
RANK_GRACE_SECONDS = 60.0
# How often a rank's end is looked for between polls: well under the 0.1 s in which the launcher
# notices a dead rank and stops the others, so that the one that died first is the one named.
RANK_WATCH_SECONDS = 0.05
# Ranks of a run that ends well finish within a second of each other: only a rank left alone this
# long is reported in the log while the watcher waits.
RANK_NOTICE_SECONDS = 5.0
KIND = "train"


def default_processes() -> int:
    """Every visible GPU; 1 on a machine without one."""
    from train.suggest import count_gpus

    return max(1, count_gpus())


def is_launched(num_processes: int | None, accelerate_config: Path | None) -> bool:
    """Whether a run with these settings goes through accelerate's launcher (else: in the job's process)."""
    return (num_processes or 1) > 1 or accelerate_config is not None


def check_launch(num_processes: int | None, accelerate_config: Path | None) -> None:
    """Refuse a process count below 1 or an accelerate config that is not a file (TrainingError)."""
    if num_processes is not None and num_processes < 1:
        raise TrainingError(f"process count {num_processes} is below 1; use 1 for one process (or one GPU)")
    if accelerate_config is not None and not Path(accelerate_config).is_file():
        raise TrainingError(f"accelerate config {accelerate_config} is not a file; write one with "
                            "`accelerate config --config_file PATH` or leave it empty")


def launch_argv(config_path: Path, overrides: list[str] | tuple[str, ...], num_processes: int | None,
                accelerate_config: Path | None, mixed_precision: str = "no") -> list[str]:
    """The launcher's command line: ``python -m accelerate.commands.launch ... train/controlnet.py --config F``."""
    argv = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config is not None:  # multi-node and the rest are the file's business
        argv += ["--config_file", str(Path(accelerate_config).resolve())]
        if num_processes:
            argv += ["--num_processes", str(num_processes)]
    else:
        # `--multi_gpu` is torch's launcher; on a machine without GPUs the trainer turns to gloo
        # (accelerate's `--cpu` starts several processes only through mpirun)
        argv += ["--multi_gpu", "--num_processes", str(num_processes or 1), "--num_machines", "1",
                 "--mixed_precision", mixed_precision, "--dynamo_backend", "no", "--main_process_port", "0"]
    argv += [str(TRAINER_SCRIPT), "--config", str(Path(config_path).resolve())]
    for item in overrides:
        argv += ["--set", item]
    return argv


def start_training(engine, settings, config: TrainConfig, config_path: Path,
                   overrides: list[str] | tuple[str, ...] = (), num_processes: int | None = None,
                   accelerate_config: Path | None = None, user: str | None = None) -> int:
    """Start a training job as ``user`` (the Train page's and ``train start``'s one way, recorded in
    the audit log); returns the job id."""
    from workbench.jobs import start_job

    processes = num_processes if num_processes is not None else default_processes()
    check_launch(processes, accelerate_config)
    argv = train_argv(config_path, overrides) + ["--num-processes", str(processes)]
    if accelerate_config is not None:
        argv += ["--accelerate-config", str(Path(accelerate_config).resolve())]
    return start_job(engine, settings, kind=KIND, argv=argv, user=user, audit="train.start", details={
        "config": str(Path(config_path).resolve()), "output_dir": str(config.output_dir),
        "metrics_path": str(Path(config.output_dir) / METRICS_FILE), "max_train_steps": config.max_train_steps,
        "processes": processes, "random_weights": base_is_tiny(config.pretrained_model_name_or_path)})


@dataclass
class LaunchResult:
    """How a launched run ended."""

    returncode: int
    stopped: bool
    global_step: int
    last_checkpoint: Path | None
    error: str | None = None


def rank_processes(launcher: psutil.Process) -> list[psutil.Process]:
    """The launcher's descendants that run the trainer script (one per rank on this machine)."""
    found = []
    try:
        children = launcher.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    for child in children:
        try:
            if str(TRAINER_SCRIPT) in child.cmdline():
                found.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _rank_name(process: psutil.Process) -> str:
    """``rank R (pid P)``, the rank read from the process's environment where it can be."""
    try:
        rank = process.environ().get("RANK")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        rank = None
    return f"rank {rank} (pid {process.pid})" if rank is not None else f"pid {process.pid}"


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _sleep_until_a_rank_ends(launcher: subprocess.Popen, ranks: list[psutil.Process], seconds: float) -> None:
    """Sleep up to ``seconds``, waking as soon as one of ``ranks`` or the launcher ends."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and launcher.poll() is None and all(_alive(p) for p in ranks):
        time.sleep(RANK_WATCH_SECONDS)


def run_launched(config: TrainConfig, config_path: Path, overrides: list[str] | tuple[str, ...],
                 num_processes: int | None, accelerate_config: Path | None,
                 progress: Callable[[int, int | None], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 on_details: Callable[[dict[str, Any]], None] | None = None, poll_seconds: float = 1.0) -> LaunchResult:
    """Run the trainer under accelerate's launcher and watch every rank until the run ends."""
    from workbench.jobs import kill_tree

    check_launch(num_processes, accelerate_config)
    output_dir = Path(config.output_dir)
    stop = stop_file(output_dir)
    stop.unlink(missing_ok=True)  # a request left by an earlier run is not this run's
    # parent_env: the ranks end when this process is killed (they watch it; workbench.processes)
    env = {**os.environ, **parent_env(),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    argv = launch_argv(config_path, overrides, num_processes, accelerate_config, config.mixed_precision)
    print("launching: " + " ".join(argv), flush=True)
    launcher = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL)
    watched = psutil.Process(launcher.pid)
    tail = MetricsTail(output_dir / METRICS_FILE)
    ranks: dict[int, psutil.Process] = {}
    names: dict[int, str] = {}
    shown: dict[str, Any] = {}
    stop_sent, vanished_at, first_gone, error, noticed = False, None, [], None, False

    def report() -> tuple[int, Path | None]:
        tail.poll()
        step = tail.records[-1]["step"] if tail.records else 0
        found = checkpoints(output_dir)
        last = found[-1][1] if found else None
        details = {"output_dir": str(output_dir), "metrics_path": str(output_dir / METRICS_FILE),
                   "global_step": step, "last_checkpoint": str(last) if last else None,
                   "max_train_steps": config.max_train_steps, "validation_dir": str(output_dir / "validation"),
                   "rank_pids": sorted(ranks)}
        if details != shown and on_details is not None:
            on_details(details)
            shown.update(details)
        if progress is not None and step:
            progress(step, config.max_train_steps)
        return step, last

    try:
        while True:
            for process in rank_processes(watched):
                if process.pid not in ranks:
                    ranks[process.pid], names[process.pid] = process, _rank_name(process)
            gone = [names[pid] for pid, process in ranks.items() if not _alive(process)]
            launcher_ended = launcher.poll() is not None
            # a rank gone while the launcher runs, or before the others: the one that ended first
            if gone and vanished_at is None and not (launcher_ended and len(gone) == len(ranks)):
                vanished_at, first_gone = time.monotonic(), gone
            if launcher_ended:
                break
            if vanished_at is not None and not noticed and time.monotonic() - vanished_at > RANK_NOTICE_SECONDS:
                print(f"{', '.join(first_gone)} ended; waiting up to {RANK_GRACE_SECONDS:.0f} s for the others",
                      flush=True)
                noticed = True
            if vanished_at is not None and time.monotonic() - vanished_at > RANK_GRACE_SECONDS:
                error = (f"{', '.join(first_gone)} ended and the other ranks did not follow within "
                         f"{RANK_GRACE_SECONDS:.0f} s; all were stopped")
                kill_tree(watched)
                break
            if should_stop is not None and should_stop() and not stop_sent:
                stop.parent.mkdir(parents=True, exist_ok=True)
                stop.touch()
                stop_sent = True
                print("stop requested: the ranks save a checkpoint and end", flush=True)
            report()
            _sleep_until_a_rank_ends(launcher, [p for p in ranks.values() if _alive(p)], poll_seconds)
    except BaseException:
        kill_tree(watched)  # the watcher itself was interrupted: leave no rank behind
        raise
    code = launcher.wait()
    step, last = report()
    stop.unlink(missing_ok=True)
    if code and error is None:
        first = f"{', '.join(first_gone)} ended first; " if first_gone else ""
        error = (f"a training process failed: {first}accelerate's launcher exited with code {code}; "
                 "see the job's log for the rank's traceback")
    return LaunchResult(code, stop_sent and not code, step, last, error)
