"""Bookkeeping shared by the trainers: checkpoints (save, prune), the per-step metrics log, the
steps of the training loop, the job details and the script entry point.

A run's ``output_dir`` holds ``checkpoint-<step>/`` folders (accelerate's state plus
``train_state.json``, which marks the folder complete) and ``metrics.jsonl`` (one line per
optimisation step). Losses stay on the device until :meth:`MetricsLog.flush`, the one host sync.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch


class StopRequested(Exception):
    """Training stopped on request after saving a checkpoint (the job runner's ``Cancelled``)."""


def save_checkpoint(accelerator, output_dir: Path, step: int, limit: int | None, state: dict[str, Any],
                    save_extra: Callable[[Path], None] | None = None) -> Path:
    """Save ``checkpoint-<step>`` (all processes take part), keeping at most ``limit`` checkpoints.

    ``save_extra(folder)`` writes what the main process adds (e.g. a loadable model folder);
    ``train_state.json`` (``global_step`` plus ``state``) is written last, as the completion mark.
    """
    from train.controlnet import list_checkpoints

    output_dir = Path(output_dir)
    folder = output_dir / f"checkpoint-{step}"
    main = accelerator.is_main_process
    if main and limit is not None:
        existing = [p for s, p in list_checkpoints(output_dir) if s != step]
        for old in existing[: max(0, len(existing) - limit + 1)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(folder))
    if main:
        if save_extra is not None:
            save_extra(folder)
        (folder / "train_state.json").write_text(json.dumps({"global_step": step, **state}, indent=2))
    accelerator.wait_for_everyone()
    return folder


def memory_mib(device: torch.device) -> float:
    """Peak GPU memory since the last call (reset), or this process's resident memory on a CPU."""
    if device.type == "cuda":
        value = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
        return round(value, 1)
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


class MetricsLog:
    """Per-step records whose losses are read back from the device in one sync per flush.

    Each step names the samples this process trained on in it, so that ``samples_per_s`` counts
    the samples really trained on (a bucket's or an epoch's smaller last batch as what it holds),
    summed over the processes.
    """

    def __init__(self, accelerator, path: Path, to_trackers: bool = False):
        self.accelerator, self.path = accelerator, Path(path)
        self.to_trackers = to_trackers
        self.pending: list[dict[str, Any]] = []
        self.losses: list[torch.Tensor] = []
        self.samples: list[int] = []
        self.window = time.perf_counter()

    def add(self, record: dict[str, Any], loss: torch.Tensor, samples: int) -> dict[str, Any]:
        """Queue one step's record (returned, so that later values can join it), its loss and the
        samples this process trained on in it."""
        self.pending.append(record)
        self.losses.append(loss)
        self.samples.append(samples)
        return record

    def flush(self) -> None:
        """Average the losses over processes, add rate and memory, append the records (main process)."""
        if not self.pending:
            return
        accelerator = self.accelerator
        n = len(self.losses)
        # one collective for both: the losses' mean, and the sample counts' mean times the processes (their sum)
        counts = torch.tensor(self.samples, dtype=torch.float32, device=self.losses[0].device)
        reduced = accelerator.reduce(torch.cat([torch.stack(self.losses).float(), counts]), reduction="mean")
        values = reduced.tolist()
        losses, samples = values[:n], round(sum(values[n:]) * accelerator.num_processes)
        elapsed = time.perf_counter() - self.window
        rate = samples / max(elapsed, 1e-9)
        memory = memory_mib(accelerator.device)
        if accelerator.is_main_process:
            with self.path.open("a", encoding="utf-8") as out:
                for record, loss in zip(self.pending, losses):
                    record.update(loss=loss, samples_per_s=round(rate, 3), memory_mib=memory)
                    out.write(json.dumps(record) + "\n")
            if self.to_trackers:
                for record in self.pending:
                    accelerator.log({k: v for k, v in record.items() if k not in ("step", "time")},
                                    step=record["step"])
        self.pending.clear()
        self.losses.clear()
        self.samples.clear()
        self.window = time.perf_counter()


def resume_state(accelerator, config: Any, metrics_path: Path, log: Callable[[str], None]) -> int:
    """Load the checkpoint ``config.resume_from_checkpoint`` names (if any); returns its global step.

    The metrics log loses what a stopped run wrote after that checkpoint, so it continues cleanly.
    """
    from train.controlnet import _truncate_jsonl, resolve_resume

    output_dir = Path(config.output_dir)
    step = 0
    resume = resolve_resume(config)
    if config.resume_from_checkpoint and resume is None:
        log(f"resume_from_checkpoint={config.resume_from_checkpoint}: no checkpoint in {output_dir}; starting fresh")
    if resume is not None:
        accelerator.load_state(str(resume))
        step = json.loads((resume / "train_state.json").read_text())["global_step"]
        log(f"resumed from {resume} at step {step}")
    if accelerator.is_main_process:
        _truncate_jsonl(Path(metrics_path), step)
    return step


def start_run(accelerator, config: Any, config_file: str) -> Callable[[str], None]:
    """Create ``output_dir``, save the config in it as ``config_file`` and print it (main process);
    returns ``log``, a print that only the main process does."""

    def log(message: str) -> None:
        if accelerator.is_main_process:
            print(message, flush=True)

    if accelerator.is_main_process:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        config.to_file(Path(config.output_dir) / config_file)
    log("config: " + json.dumps(config.model_dump(mode="json"), sort_keys=True))
    return log


class Steps:
    """Where a run is (optimisation step, micro-batch) and the loop over the data from there.

    The batch order is a seeded function of the epoch, so positioning the sampler at the
    micro-batch a checkpoint recorded makes a resumed run see what an uninterrupted one would.
    """

    def __init__(self, accelerator, config: Any, global_step: int,
                 progress: Callable[[int, int | None], None] | None = None,
                 should_stop: Callable[[], bool] | None = None):
        self.accelerator, self.config = accelerator, config
        self.progress, self.should_stop = progress, should_stop
        self.global_step = global_step
        self.micro = global_step * config.gradient_accumulation_steps  # micro-batches done
        self.stopped = False  # a stop request ended the run before its last step

    def batches(self, sampler, dataset, loader) -> Iterator[tuple[int, Any]]:
        """``(epoch, batch)`` from the run's position on, epoch after epoch, until the caller ends the loop."""
        while self.global_step < self.config.max_train_steps and not self.stopped:
            epoch, start = divmod(self.micro, sampler.batches_per_epoch)
            sampler.set_position(epoch, start)
            dataset.set_epoch(epoch)
            for batch in loader:
                yield epoch, batch

    def stepped(self) -> bool:
        """Count the micro-batch just run; True when it completed an optimisation step (``global_step``)."""
        self.micro += 1
        if not self.accelerator.sync_gradients:
            return False
        self.global_step += 1
        return True

    def report(self) -> bool:
        """Report the step to ``progress`` (main process); returns whether a stop is requested."""
        if self.progress is not None and self.accelerator.is_main_process:
            self.progress(self.global_step, self.config.max_train_steps)
        return bool(self.should_stop and self.should_stop())

    @property
    def last(self) -> bool:
        """Whether the run's last step is done."""
        return self.global_step >= self.config.max_train_steps

    def end(self, stop: bool, flush: Callable[[], None], checkpoint: Callable[[], Any]) -> bool:
        """After the step: flush the metrics and checkpoint when the schedule (or a stop) says; returns
        whether the run ends here: its last step, or a stop request (``stopped`` when before the last)."""
        step, config, last = self.global_step, self.config, self.last
        if step % config.logging_steps == 0 or last or stop or step % config.checkpointing_steps == 0:
            flush()
        if step % config.checkpointing_steps == 0 or last or stop:
            checkpoint()
        self.stopped = stop and not last
        return last or stop


def run_details(output_dir: Path, metrics_path: Path, last_checkpoint: Path | None, global_step: int,
                config: Any) -> dict[str, Any]:
    """What a job shows of its run: where it writes, its last checkpoint and how far it is."""
    return {"output_dir": str(output_dir), "metrics_path": str(metrics_path),
            "last_checkpoint": str(last_checkpoint) if last_checkpoint else None,
            "global_step": global_step, "max_train_steps": config.max_train_steps}


def build_parser(description: str, keys: str) -> argparse.ArgumentParser:
    """A trainer's command-line options: a config file (keys in ``keys``) and ``--set key=value`` overrides."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, help=f"YAML or JSON config (keys: {keys}).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Override a config key (repeatable), e.g. --set max_train_steps=100.")
    parser.add_argument("--resume_from_checkpoint", "--resume-from-checkpoint", default=None,
                        help="'latest' or a checkpoint folder (same as --set resume_from_checkpoint=...).")
    return parser


def run_script(argv: list[str] | None, description: str, keys: str, load: Callable[[Path | None, list[str]], Any],
               train: Callable[[Any], Any]) -> int:
    """A trainer's command line (:func:`build_parser`): ``load(config_file, overrides)``, then ``train(config)``;
    returns the exit code: 2 (``error: ...`` on stderr) for a bad config or data, 0 when trained or stopped."""
    from train.config import ConfigError
    from train.data import DataError

    args = build_parser(description, keys).parse_args(argv)
    overrides = list(args.overrides)
    if args.resume_from_checkpoint:
        overrides.append(f"resume_from_checkpoint={args.resume_from_checkpoint}")
    try:
        train(load(args.config, overrides))
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StopRequested as exc:
        print(str(exc), file=sys.stderr)
    return 0
