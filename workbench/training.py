"""Training runs as the Train page and the CLI see them: configs, metrics, checkpoints, grids.

The trainer itself (``train/controlnet.py``) runs in its own process; this module only reads
what it writes into its ``output_dir`` (``metrics.jsonl``, ``checkpoint-<step>/``,
``validation/step-<step>.png``) and builds the configs it takes. Nothing here imports torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train.config import TrainConfig, load_config
from train.suggest import Suggestion, suggest_settings

METRICS_FILE = "metrics.jsonl"
GRID_RE = re.compile(r"^step-(\d+)\.png$")
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class TrainingError(ValueError):
    """A training request that cannot be served; the message names the thing and the fix."""


# -- configs -------------------------------------------------------------------------------------
def export_resolution(export_dir: Path) -> int | None:
    """The resolution an export was written at (its manifest's recipe), if it says."""
    path = Path(export_dir) / "manifest.json"
    try:
        recipe = json.loads(path.read_text(encoding="utf-8")).get("recipe", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    value = recipe.get("resolution") if isinstance(recipe, dict) else None
    return int(value) if isinstance(value, int) else None


def is_export_folder(folder: Path) -> bool:
    """Whether ``folder`` looks like an export the trainer reads (either layout)."""
    folder = Path(folder)
    return (folder / "prompt.json").is_file() or (folder / "metadata.jsonl").is_file()


def base_is_tiny(base: str) -> bool:
    """Whether a base model (registry name, hub id or folder) is a tiny random-weight test model,
    so that its job and validation images are marked as such."""
    from workbench.models import is_tiny, resolve

    path = Path(resolve(base, "sd"))
    return path.exists() and is_tiny(path)


def config_for_export(export_dir: Path, base_model: str, output_dir: Path,
                      suggestion: Suggestion | None = None, **overrides: Any) -> TrainConfig:
    """A training config for an export folder: its resolution, suggested batch settings, overrides."""
    export_dir = Path(export_dir)
    if not is_export_folder(export_dir):
        raise TrainingError(f"{export_dir} is not an export folder (no prompt.json or metadata.jsonl); "
                            "export the dataset first (Export page or `python -m workbench export`)")
    values: dict[str, Any] = {"pretrained_model_name_or_path": base_model, "train_data_dir": str(export_dir),
                              "output_dir": str(output_dir)}
    resolution = export_resolution(export_dir)
    if resolution:
        values["resolution"] = resolution
    if suggestion is not None:
        values.update(suggestion.as_overrides())
    values.update({k: v for k, v in overrides.items() if v is not None})
    return load_config(None, values)


def write_config(config: TrainConfig, path: Path) -> Path:
    """Save ``config`` where a job can read it (YAML or JSON by suffix)."""
    return config.to_file(Path(path))


def train_argv(config_path: Path, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The ``python -m workbench`` arguments of a foreground training run (what a job runs)."""
    argv = ["train", "run", "--config", str(Path(config_path).resolve())]
    for item in overrides:
        argv += ["--set", item]
    return argv


def default_suggestion(target_effective_batch: int = 64, resolution: int = 512) -> Suggestion:
    """Suggested settings for this machine's first GPU (CPU-only settings when there is none)."""
    from train.suggest import detect_gpu_memory_gib

    return suggest_settings(detect_gpu_memory_gib(), target_effective_batch, resolution)


# -- metrics ---------------------------------------------------------------------------------------
@dataclass
class MetricsTail:
    """Reads a growing ``metrics.jsonl`` incrementally: only bytes after the last complete line."""

    path: Path
    offset: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)

    def poll(self) -> list[dict[str, Any]]:
        """New records since the last poll (a resumed run that rewrote the file is read again)."""
        path = Path(self.path)
        if not path.is_file():
            return []
        size = path.stat().st_size
        if size < self.offset:  # truncated by a resume: start over
            self.offset, self.records = 0, []
        with path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
        new = []
        for line in chunk[:end].splitlines():
            if line.strip():
                try:
                    new.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        self.offset += end
        by_step = {r["step"]: r for r in self.records}
        for record in new:
            by_step[record["step"]] = record
        self.records = [by_step[s] for s in sorted(by_step)]
        return new


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record of a ``metrics.jsonl`` (one per optimisation step), by step."""
    tail = MetricsTail(Path(path))
    tail.poll()
    return tail.records


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with TensorBoard's debiasing (``weight`` 0 = raw)."""
    out, last, norm = [], 0.0, 0.0
    for value in values:
        last = weight * last + (1 - weight) * value
        norm = weight * norm + (1 - weight)
        out.append(last / norm if norm else value)
    return out


def eta_seconds(records: list[dict[str, Any]], max_steps: int, window: int = 50) -> float | None:
    """Seconds left at the pace of the last ``window`` steps (None before two steps are known)."""
    timed = [r for r in records[-window:] if "time" in r]
    if len(timed) < 2 or not max_steps:
        return None
    steps = timed[-1]["step"] - timed[0]["step"]
    elapsed = timed[-1]["time"] - timed[0]["time"]
    if steps <= 0 or elapsed <= 0:
        return None
    return max(0.0, (max_steps - timed[-1]["step"]) * elapsed / steps)


def format_duration(seconds: float | None) -> str:
    """``3h 04m``, ``5m 12s``, ``42s``, or ``-``."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


# -- outputs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValidationGrid:
    """One validation grid: its step, image, prompts and validation loss."""

    step: int
    path: Path
    prompts: list[str]
    val_loss: float | None


def validation_grids(output_dir: Path) -> list[ValidationGrid]:
    """The run's validation grids, oldest first (columns: mask, generated, target)."""
    folder = Path(output_dir) / "validation"
    if not folder.is_dir():
        return []
    grids = []
    for path in folder.iterdir():
        match = GRID_RE.match(path.name)
        if not match:
            continue
        meta_path = path.with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        grids.append(ValidationGrid(int(match.group(1)), path, list(meta.get("prompts", [])), meta.get("val_loss")))
    return sorted(grids, key=lambda g: g.step)


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of the run's complete checkpoints, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if p.is_dir() and (m := CHECKPOINT_RE.match(p.name)) and (p / "train_state.json").is_file()]
    return sorted(found)


def run_summary(output_dir: Path, max_steps: int | None = None) -> dict[str, Any]:
    """Step, last loss, rate, memory, ETA and checkpoints of a run, from its files."""
    records = read_metrics(Path(output_dir) / METRICS_FILE)
    last = records[-1] if records else {}
    if max_steps is None:
        config_path = Path(output_dir) / "train_config.json"
        if config_path.is_file():
            max_steps = json.loads(config_path.read_text()).get("max_train_steps")
    val = [r for r in records if r.get("val_loss") is not None]
    return {
        "step": last.get("step", 0), "max_train_steps": max_steps, "loss": last.get("loss"),
        "samples_per_s": last.get("samples_per_s"), "memory_mib": last.get("memory_mib"),
        "val_loss": val[-1]["val_loss"] if val else None,
        "eta_s": eta_seconds(records, max_steps or 0),
        "checkpoints": [str(p) for _s, p in checkpoints(output_dir)],
    }
