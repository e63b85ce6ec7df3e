"""Training speed: the workbench trainer at its defaults against diffusers' own ControlNet example.

    python bench/train.py --diffusers-example /path/to/examples/controlnet/train_controlnet.py
        [--repeats 3] [--steps 4,34] [--resolution 128] [--batch 4] [--images 64] [--threads N]
    python bench/train.py --gpu --diffusers-example PATH        (SD 1.5 architecture, 512 px, fp16 + bf16)

The baseline is what a user would run instead: diffusers' ``examples/controlnet/train_controlnet.py``,
unmodified, read from the path given (take it from the diffusers repository at the tag of the
installed diffusers: ``git show v<version>:examples/controlnet/train_controlnet.py``). Both train on

- the same model: the tiny Stable Diffusion of ``workbench/tiny/sd.py`` (random weights), or with
  ``--gpu`` Stable Diffusion 1.5's architecture from its configs (random weights, nothing downloaded);
- the same data: the demo dataset exported as a Hugging Face image folder at the resolution;
- the same batch, resolution and precision; each tool otherwise at its own defaults.

Each run is its own process, timed from start to exit. The time per step is the marginal one
between a short and a long run (start-up, caches, the final save and, for the workbench, its
end-of-run validation cancel out); what is left over is reported apart as the fixed cost. A first,
untimed run of each tool builds its caches (datasets' Arrow files; the workbench's latents), and
its time is printed as the first start. The runs are interleaved (short and long, both tools, the order alternating), repeated, and medians
are printed with the ratio. Each long run is also timed from inside, by the clock of its own
TensorBoard events (``in_run_step_s``: start-up, warm-up and the end left out); on a GPU, where a
step takes about 0.1 s and a process's start-up varies by seconds, that is the steadier figure.
Peak memory: the process's peak resident set on a CPU, PyTorch's peak allocation on a GPU (kept
across the workbench's own resets of the counter). ``--gpu`` also finds the largest batch that fits
(from the memory of two batch sizes, then checked) and reports its samples/s; ``--parts levers``
switches the workbench's CUDA levers from their defaults one at a time, ``--parts batches`` times
growing batches.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("diffusers", "workbench")
PEAK_ENV = "BENCH_PEAK_FILE"
GPU_RESOLUTION = 512  # --gpu: SD 1.5 at its own resolution


# -- the child: runs one tool unmodified and records its peak memory at exit ------------------------
def child(argv: list[str]) -> None:
    """Run ``argv`` (a script path, or ``-m module``) as ``__main__``; write the peak GPU memory at exit."""
    import atexit
    import runpy

    import torch  # both tools import it; first here, so that the peak outlives their own counter resets

    reset, peak = torch.cuda.reset_peak_memory_stats, [0]

    def keep_peak_then_reset(device=None) -> None:  # the workbench resets it to report each log window's peak
        peak[0] = max(peak[0], torch.cuda.max_memory_allocated(device))
        reset(device)

    torch.cuda.reset_peak_memory_stats = keep_peak_then_reset

    def record() -> None:
        gpu = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            gpu = max(peak[0], torch.cuda.max_memory_allocated()) / 2**20
        Path(os.environ[PEAK_ENV]).write_text(json.dumps({"gpu_peak_mib": gpu}))

    atexit.register(record)
    here = Path(__file__).resolve().parent  # bench/ holds a train.py that would shadow the train package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        sys.path.insert(0, str(Path(argv[0]).resolve().parent))
        runpy.run_path(argv[0], run_name="__main__")


# -- set-up -------------------------------------------------------------------------------------
def prepare_export(work: Path, images: int, resolution: int, env: dict[str, str]) -> Path:
    """The demo dataset exported as an image folder (built once per work folder)."""
    export = work / f"export-{resolution}"
    if not (export / "metadata.jsonl").is_file():
        for args in (["demo", "--images", str(images)],
                     ["export", "--dataset", "demo", "--format", "imagefolder", "--out", str(export),
                      "--resolution", str(resolution)]):
            done = subprocess.run([sys.executable, "-m", "workbench", *args], cwd=ROOT, env=env,
                                  capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"workbench {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return export


def prepare_model(work: Path, gpu: bool) -> Path:
    """The random-weight Stable Diffusion folder (tiny, or SD 1.5's architecture with ``gpu``)."""
    from workbench.tiny.sd import build_sd15_random, build_tiny_sd

    folder = work / ("sd15-random" if gpu else "sd-tiny")
    if not (folder / "model_index.json").is_file():
        (build_sd15_random if gpu else build_tiny_sd)(folder)
    return folder


# -- one run ------------------------------------------------------------------------------------
def command(tool: str, example: Path, sd: Path, export: Path, out: Path, steps: int, batch: int,
            resolution: int, precision: str, extra: dict | None = None) -> list[str]:
    """The argument list of one run: the example with its own flags, or ``workbench train run``."""
    if tool == "diffusers":
        return [str(example), "--pretrained_model_name_or_path", str(sd), "--train_data_dir", str(export),
                "--output_dir", str(out), "--resolution", str(resolution), "--train_batch_size", str(batch),
                "--max_train_steps", str(steps), "--mixed_precision", precision, "--seed", "0",
                "--image_column", "image", "--conditioning_image_column", "conditioning_image",
                "--caption_column", "text"]
    from train.config import load_config

    config = load_config(None, dict(pretrained_model_name_or_path=str(sd), train_data_dir=str(export),
                                    output_dir=str(out), resolution=resolution, train_batch_size=batch,
                                    max_train_steps=steps, mixed_precision=precision, seed=0, **(extra or {})))
    path = config.to_file(out.parent / f"{out.name}.yaml")
    return ["-m", "workbench", "train", "run", "--config", str(path)]


def run_once(argv: list[str], env: dict[str, str], log: Path) -> dict:
    """Wall time, peak memory and success of one run in its own process."""
    peak_file = log.with_suffix(".peak.json")
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, __file__, "--child", *argv], cwd=log.parent, stdout=out,
                                stderr=subprocess.STDOUT, env={**env, PEAK_ENV: str(peak_file)})
        _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    gpu = json.loads(peak_file.read_text())["gpu_peak_mib"] if peak_file.is_file() else None
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime, "ok": proc.returncode == 0,
            "peak_mib": gpu if gpu else usage.ru_maxrss / 1024, "log": str(log)}


def in_run_step_s(out: Path, max_steps: int, skip: int = 10) -> float | None:
    """Seconds per step inside one run, from its TensorBoard events, so that start-up, warm-up and the
    end (final validation, saving) are left out. diffusers' example logs every step, reading its loss
    each time; the workbench logs a group of steps at each flush of its metrics (every ``logging_steps``),
    its records a fraction of a millisecond apart. Writes closer together than a tenth of the mean time
    per step form one group, which marks the highest step in it at its first write; the group holding
    the last step is the end of the run and is dropped. The clock runs from the first mark at or after
    ``skip`` to the last one kept."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    written: dict[int, float] = {}  # step -> when it was first written
    for path in out.rglob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("summary") and event.step > 0:
                written[event.step] = min(event.wall_time, written.get(event.step, float("inf")))
    if len(written) < 2:
        return None
    order = sorted(written.items(), key=lambda item: item[1])
    close = 0.1 * (order[-1][1] - order[0][1]) / (len(order) - 1)
    groups: list[list[tuple[int, float]]] = []
    for step, when in order:
        if groups and when - groups[-1][-1][1] < close:
            groups[-1].append((step, when))
        else:
            groups.append([(step, when)])
    marks = [(max(step for step, _ in group), group[0][1]) for group in groups]
    points = [(step, when) for step, when in marks if skip <= step < max_steps]
    if len(points) < 2:
        return None
    (first, start), (last, stop) = points[0], points[-1]
    return (stop - start) / (last - first)


def _slug(tool: str) -> str:
    """A tool's name as a file name (``workbench[channels_last=false]`` -> ``workbench-channels_last-false``)."""
    return "-".join(filter(None, re.split(r"[^A-Za-z0-9_.]+", tool)))


def measure(tools: tuple[str, ...], make_argv, steps: tuple[int, int], repeats: int, env: dict[str, str],
            logs: Path, tag: str, cold_runs: tuple[str, ...] | None = None) -> dict[str, dict]:
    """Interleaved short/long runs of every tool; per tool the marginal s/step, fixed s and peak.
    ``cold_runs``: the tools that first get an untimed run (default: all), to build their caches."""
    short, long = steps
    times: dict[str, dict[int, list[float]]] = {t: {short: [], long: []} for t in tools}
    cpu: dict[str, dict[int, list[float]]] = {t: {short: [], long: []} for t in tools}
    peaks: dict[str, list[float]] = {t: [] for t in tools}
    in_run: dict[str, list[float]] = {t: [] for t in tools}
    cold: dict[str, float | None] = dict.fromkeys(tools)
    for tool in tools if cold_runs is None else cold_runs:  # untimed first runs: caches (Arrow files, latents) get built
        name = f"{tag}-{_slug(tool)}-cold"
        result = run_once(make_argv(tool, logs / name, short), env, logs / f"{name}.log")
        if not result["ok"]:
            raise RuntimeError(f"{tool} failed; log {result['log']}:\n{Path(result['log']).read_text()[-3000:]}")
        cold[tool] = result["seconds"]
        peaks[tool].append(result["peak_mib"])
        print(f"  {name}: {result['seconds']:.1f} s wall (first run, caches built; not in the figures)", flush=True)
    for repeat in range(repeats):
        order = tools if repeat % 2 == 0 else tuple(reversed(tools))
        for n in (short, long):
            for tool in order:
                name = f"{tag}-{_slug(tool)}-{n}-r{repeat}"
                result = run_once(make_argv(tool, logs / name, n), env, logs / f"{name}.log")
                if not result["ok"]:
                    tail = Path(result["log"]).read_text()[-3000:]
                    raise RuntimeError(f"{tool} ({n} steps) failed; log {result['log']}:\n{tail}")
                times[tool][n].append(result["seconds"])
                inside = in_run_step_s(logs / name, n) if n == long else None
                if inside is not None:
                    in_run[tool].append(inside)
                cpu[tool][n].append(result["cpu_seconds"])
                peaks[tool].append(result["peak_mib"])
                print(f"  {name}: {result['seconds']:.1f} s wall, {result['cpu_seconds']:.1f} s CPU, "
                      f"peak {result['peak_mib']:.0f} MiB"
                      + (f", {inside * 1000:.0f} ms/step inside the run" if inside is not None else ""), flush=True)
    summary = {}
    for tool in tools:
        marginal = [(b - a) / (long - short) for a, b in zip(times[tool][short], times[tool][long])]
        fixed = [a - short * m for a, m in zip(times[tool][short], marginal)]
        cpu_marginal = [(b - a) / (long - short) for a, b in zip(cpu[tool][short], cpu[tool][long])]
        summary[tool] = {"marginal_s": marginal, "step_s": statistics.median(marginal),
                         "fixed_s": statistics.median(fixed), "peak_mib": max(peaks[tool]),
                         "cpu_step_s": statistics.median(cpu_marginal), "cpu_marginal_s": cpu_marginal,
                         "cold_s": cold[tool], "in_run_s": statistics.median(in_run[tool]) if in_run[tool] else None}
    return summary


def report(title: str, summary: dict[str, dict], batch: int) -> float | None:
    """Print one table; returns diffusers' median time per step over the workbench's. A workbench run
    with other settings (``workbench[key=value]``, see ``--compare``) gets its own ratio line."""
    print(title)
    width = max(12, *(len(tool) + 2 for tool in summary))
    print(f"{'tool':<{width}}{'ms/step':>9}{'each repeat':>22}{'samples/s':>11}{'CPU ms/step':>13}{'each repeat':>22}"
          f"{'fixed s':>9}{'first s':>9}{'peak MiB':>10}")
    for tool, s in summary.items():
        first = "-" if s["cold_s"] is None else f"{s['cold_s']:.1f}"
        each = " ".join(f"{m * 1000:.0f}" for m in s["marginal_s"])
        each_cpu = " ".join(f"{m * 1000:.0f}" for m in s["cpu_marginal_s"])
        print(f"{tool:<{width}}{s['step_s'] * 1000:>9.1f}{each:>22}{batch / s['step_s']:>11.2f}"
              f"{s['cpu_step_s'] * 1000:>13.1f}{each_cpu:>22}{s['fixed_s']:>9.1f}{first:>9}{s['peak_mib']:>10.0f}")
    if "diffusers" not in summary or "workbench" not in summary:
        return None
    base = summary["diffusers"]
    for tool in (t for t in summary if t != "diffusers"):
        ours = summary[tool]
        ratio = base["step_s"] / ours["step_s"]
        print(f"speed-up of {tool} over diffusers' example (medians per step): {ratio:.2f}x wall-clock, "
              f"{base['cpu_step_s'] / ours['cpu_step_s']:.2f}x CPU time (wall-clock is the figure; CPU time is "
              "the check on a shared machine)")
        if base["in_run_s"] is not None and ours["in_run_s"] is not None:
            print(f"  inside the long runs (TensorBoard clock, start-up and the end left out): diffusers "
                  f"{base['in_run_s'] * 1000:.1f} ms/step, {tool} {ours['in_run_s'] * 1000:.1f} ms/step: "
                  f"{base['in_run_s'] / ours['in_run_s']:.2f}x")
    return base["step_s"] / summary["workbench"]["step_s"]


def variant(tool: str) -> tuple[str, dict]:
    """``workbench[key=value,...]`` -> ("workbench", its config overrides); other names as they are."""
    name, _, rest = tool.partition("[")
    if not rest:
        return tool, {}
    from train.config import parse_overrides

    return name, parse_overrides(rest.rstrip("]").split(","))


def _env(work: Path, threads: int | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "WORKBENCH_DATA_DIR": str(work / "data"), "WORKBENCH_DB_URL": f"sqlite:///{work / 'data' / 'bench.db'}",
           "HF_DATASETS_CACHE": str(work / "hf-datasets"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def largest_batch(peak_at: dict[int, float], total_mib: float, fraction: float = 0.9) -> int:
    """The largest batch (a multiple of 4) whose memory, extrapolated linearly from two measured
    batch sizes, stays under ``fraction`` of the device's memory."""
    (b1, m1), (b2, m2) = sorted(peak_at.items())[:2]
    per_sample = max((m2 - m1) / (b2 - b1), 1e-6)
    return max(4, int((total_mib * fraction - m1) / per_sample + b1) // 4 * 4)


GPU_PARTS = ("batch4", "largest", "precisions", "compile", "adam8", "levers", "batches")


def gpu_bench(args, work: Path, env: dict[str, str], logs: Path) -> int:
    """512 px, SD 1.5 architecture: both tools at batch 4 in the first precision, the workbench's largest
    batch, both tools at batch 4 in the other precisions, then torch.compile and 8-bit AdamW; each part
    only while ``--budget-s`` lasts (skips are printed). A part that fails is reported and the next one
    runs. Returns the number of failed parts."""
    import diffusers
    import torch

    if not torch.cuda.is_available():
        sys.exit("--gpu needs a CUDA device (torch.cuda.is_available() is False here)")
    deadline = time.monotonic() + args.budget_s
    res, steps, first = GPU_RESOLUTION, tuple(args.gpu_steps), args.precisions[0]
    export = prepare_export(work, args.gpu_images, res, env)
    train_images = sum(1 for line in (export / "metadata.jsonl").read_text().splitlines() if line.strip())
    sd = prepare_model(work, gpu=True)
    total_mib = torch.cuda.get_device_properties(0).total_memory / 2**20
    print(f"GPU: {torch.cuda.get_device_name(0)}, {total_mib / 1024:.0f} GiB; torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}), diffusers {diffusers.__version__}; SD 1.5 architecture (random weights), "
          f"{res} px, {train_images} images; marginal time per step between {steps[0]} and {steps[1]} steps",
          flush=True)
    batch4_peak: dict[str, float] = {}  # the workbench's peak at batch 4, per precision
    cap = max(4, train_images * 9 // 10 // 4 * 4)  # the largest batch the training split (90 %) fills

    def runs(tools, precision: str, batch: int, tag: str, repeats: int = 1, cold_runs=None,
             **extra) -> dict[str, dict]:
        return measure(tools, lambda tool, out, n: command(tool, args.diffusers_example, sd, export, out, n, batch,
                                                           res, precision, extra), steps, repeats, env, logs, tag,
                       cold_runs)

    def batch4(precision: str, cold_runs=None) -> None:
        summary = runs(TOOLS, precision, 4, f"gpu-{precision}-b4", args.gpu_repeats, cold_runs=cold_runs)
        report(f"{precision}, batch 4, {args.gpu_repeats} repeat(s)", summary, 4)
        batch4_peak[precision] = summary["workbench"]["peak_mib"]

    def one_run(tool: str, tag: str, batch: int, n: int, **extra) -> dict:
        """One run of ``n`` steps: ``run_once``'s figures and ``inside``, its time per step inside the
        run (None when it logged too few steps)."""
        argv = command(tool, args.diffusers_example, sd, export, logs / tag, n, batch, res, first, extra)
        result = run_once(argv, env, logs / f"{tag}.log")
        if not result["ok"]:
            raise RuntimeError(f"{tag} failed; log {result['log']}:\n{Path(result['log']).read_text()[-3000:]}")
        inside = in_run_step_s(logs / tag, n)
        shown = "too few logged steps" if inside is None else \
            f"{inside * 1000:.1f} ms/step, {batch / inside:.1f} samples/s inside the run"
        print(f"  {tag}: {result['seconds']:.1f} s wall, peak {result['peak_mib']:.0f} MiB; {shown}", flush=True)
        return {**result, "inside": inside}

    def largest() -> None:
        peaks = {4: batch4_peak[first]} if first in batch4_peak else {}
        for batch in (16,) if peaks else (8, 16):  # memory at two sizes, extrapolated, then measured
            peaks[batch] = one_run("workbench", f"probe-b{batch}", batch, 2)["peak_mib"]
        batch = largest_batch(peaks, total_mib)
        if batch > cap:
            print(f"largest batch: {batch} would fit, but the export's training split fills {cap}; "
                  "measuring that (raise --gpu-images for more)")
            batch = cap
        sizes = ", ".join(f"{b}" for b in sorted(peaks))
        for _attempt in range(2):  # one run, timed from inside (22 steps: two logged windows after the warm-up)
            try:
                inside = one_run("workbench", f"largest-{first}-b{batch}", batch, 22)["inside"]
            except RuntimeError as exc:
                print(f"batch {batch} failed ({str(exc).splitlines()[0]}); trying a smaller one")
                batch = max(4, int(batch * 0.85) // 4 * 4)
                continue
            if inside is not None:
                print(f"{first}, largest batch {batch} (memory extrapolated from batch {sizes}): "
                      f"{batch / inside:.1f} samples/s", flush=True)
            return
        raise RuntimeError("no batch above 4 ran")

    def other_precisions() -> None:
        for precision in args.precisions[1:]:  # datasets' Arrow files are shared; the latents are per precision
            batch4(precision, cold_runs=("workbench",))

    def compiled() -> None:
        report(f"{first}, batch 4, torch_compile=true (compile time is in the fixed cost)",
               runs(("workbench",), first, 4, f"gpu-{first}-b4-compile", torch_compile=True), 4)

    def adam8() -> None:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            print("8-bit AdamW: bitsandbytes is not installed; not measured")
            return
        peaks = {eight: one_run("workbench", f"adam-{'8bit' if eight else 'fp32'}", 4, steps[0],
                                use_8bit_adam=eight)["peak_mib"] for eight in (False, True)}
        print(f"AdamW peak memory at batch 4: {peaks[False]:.0f} MiB; 8-bit AdamW: {peaks[True]:.0f} MiB")

    def levers() -> None:
        """The workbench's CUDA levers, each switched from its default in turn, at batch 4 (one run each,
        in-run clock), against diffusers' example."""
        base = one_run("diffusers", f"lever-{first}-diffusers", 4, steps[1])["inside"]
        for label, extra in (("defaults", {}), ("channels_last-on", {"channels_last": True}),
                             ("fused_adam-off", {"fused_adam": False})):
            ours = one_run("workbench", f"lever-{first}-{label}", 4, steps[1], **extra)["inside"]
            if base and ours:
                print(f"    {label}: {base / ours:.2f}x diffusers' example", flush=True)

    def batches() -> None:
        """The workbench's samples/s at growing batch sizes (one run each, in-run clock)."""
        for batch in (b for b in args.batches if b <= cap):
            one_run("workbench", f"batch-{first}-b{batch}", batch, 22)

    parts = {"batch4": (f"{first} batch 4", lambda: batch4(first)), "largest": ("largest batch", largest),
             "levers": ("levers at batch 4", levers), "batches": ("batch sizes", batches),
             "precisions": (f"{','.join(args.precisions[1:])} batch 4", other_precisions),
             "compile": ("torch.compile", compiled), "adam8": ("8-bit AdamW memory", adam8)}
    failed = 0
    for key in args.parts:
        name, part = parts[key]
        if time.monotonic() >= deadline:
            print(f"{name}: skipped, past --budget-s {args.budget_s:.0f}", flush=True)
            continue
        started = time.monotonic()
        try:
            part()
        except Exception as exc:  # one broken part must not cost the others their figures
            failed += 1
            print(f"{name}: FAILED: {exc}", flush=True)
        print(f"({name}: {time.monotonic() - started:.0f} s)", flush=True)
    return failed


def cpu_bench(args, work: Path, env: dict[str, str], logs: Path) -> None:
    """The tiny model on the CPU: both tools (and each ``--compare`` variant) at the given batch,
    resolution and fp32."""
    export = prepare_export(work, args.images, args.resolution, env)
    sd = prepare_model(work, gpu=False)
    tools = TOOLS + tuple(f"workbench[{c}]" for c in args.compare)

    def argv(tool: str, out: Path, n: int) -> list[str]:
        name, extra = variant(tool)
        return command(name, args.diffusers_example, sd, export, out, n, args.batch, args.resolution, "no", extra)

    # the variants train on the same export: the workbench's cold run built the caches they share
    summary = measure(tools, argv, tuple(args.steps), args.repeats, env, logs, "cpu", cold_runs=TOOLS)
    threads = args.threads or "default"
    report(f"tiny SD, {args.resolution} px, batch {args.batch}, fp32, CPU ({os.cpu_count()} cores, threads: "
           f"{threads}); marginal time per step between {args.steps[0]} and {args.steps[1]} steps, "
           f"{args.repeats} interleaved repeats", summary, args.batch)


def _steps(text: str) -> list[int]:
    values = [int(v) for v in text.split(",")]
    if len(values) != 2 or not 0 < values[0] < values[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: give a short and a long step count, e.g. 4,34")
    return values


def _parts(text: str) -> list[str]:
    parts = [p for p in text.split(",") if p]
    unknown = [p for p in parts if p not in GPU_PARTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"{','.join(unknown)}: not a part; the parts are {','.join(GPU_PARTS)}")
    return parts


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diffusers-example", type=Path, required=True,
                        help="diffusers' examples/controlnet/train_controlnet.py (unmodified), at the installed version's tag")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=_steps, default=[4, 34], help="short,long step counts (default 4,34)")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--images", type=int, default=64, help="demo images to export")
    parser.add_argument("--threads", type=int, help="OMP/MKL threads of both tools (default: torch's own)")
    parser.add_argument("--workdir", type=Path, help="keep the export, model and logs here (reused when present)")
    parser.add_argument("--compare", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="CPU: also time the workbench with these config overrides, interleaved with the "
                             "others (repeatable), e.g. --compare channels_last=false")
    parser.add_argument("--gpu", action="store_true", help="SD 1.5 architecture at 512 px on the CUDA device")
    parser.add_argument("--prepare-only", action="store_true",
                        help="only build the export in --workdir (with --gpu: the 512 px one) and stop")
    parser.add_argument("--precisions", type=lambda t: t.split(","), default=["fp16", "bf16"])
    parser.add_argument("--gpu-steps", type=_steps, default=[4, 54])
    parser.add_argument("--gpu-images", type=int, default=192, help="--gpu: demo images to export (>= the largest batch)")
    parser.add_argument("--gpu-repeats", type=int, default=1)
    parser.add_argument("--batches", type=lambda t: [int(v) for v in t.split(",")], default=[16, 32, 64],
                        help="--gpu, part batches: the batch sizes to time")
    parser.add_argument("--parts", type=_parts, default=list(GPU_PARTS[:5]),
                        help=f"--gpu: the parts to run, in this order, of {','.join(GPU_PARTS)} (default: the first five)")
    parser.add_argument("--budget-s", type=float, default=300,
                        help="--gpu: start no further part after this many seconds (every figure fits in 8 minutes)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Prepare the model and data once, run both tools interleaved, print the figures."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1:])
        return
    args = build_parser().parse_args(argv)
    if not args.diffusers_example.is_file():
        sys.exit(f"--diffusers-example {args.diffusers_example}: no such file; get it with "
                 "`git -C <diffusers clone> show v<version>:examples/controlnet/train_controlnet.py > FILE`")
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = (args.workdir or Path(tmp)).resolve()  # each run's process starts in its own log folder
        args.diffusers_example = args.diffusers_example.resolve()
        work.mkdir(parents=True, exist_ok=True)
        env = _env(work, args.threads)
        if args.prepare_only:  # bench/gpu_prep.sh: the export, built where the GPU machine will read it
            export = prepare_export(work, args.gpu_images if args.gpu else args.images,
                                    GPU_RESOLUTION if args.gpu else args.resolution, env)
            print(f"prepared {export}")
            return
        logs = Path(tempfile.mkdtemp(prefix="runs-", dir=work))
        print("command: python bench/train.py " + " ".join(argv), flush=True)
        if args.gpu:
            failed = gpu_bench(args, work, env, logs)
            if failed:
                sys.exit(f"{failed} part(s) failed; see above")
        else:
            cpu_bench(args, work, env, logs)


if __name__ == "__main__":
    main()
