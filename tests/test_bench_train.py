"""bench/train.py's parts that run without a GPU: the child runner, the run commands, the batch search, SD 1.5's shape."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "bench" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bench_and_its_model_builders_import_without_pytest_or_tests():
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('b', 'bench/train.py'); "
            "spec.loader.exec_module(importlib.util.module_from_spec(spec)); import workbench.tiny.sd; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('pytest', 'tests', '_pytest')]; "
            "sys.exit(str(bad) if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_script_runs_unmodified_as_main_in_its_own_timed_process(bench, tmp_path):
    script = tmp_path / "example.py"
    script.write_text("import sys\nif __name__ == '__main__':\n"
                      "    open(sys.argv[2], 'w').write(' '.join(sys.argv[1:]))\n    sys.exit(0)\n")
    result = bench.run_once([str(script), "--flag", str(tmp_path / "seen.txt")], dict(os.environ),
                            tmp_path / "run.log")
    assert result["ok"] and result["seconds"] > 0 and result["peak_mib"] > 1
    assert (tmp_path / "seen.txt").read_text() == f"--flag {tmp_path / 'seen.txt'}"
    script.write_text("import sys\nsys.exit(3)\n")
    assert not bench.run_once([str(script)], dict(os.environ), tmp_path / "fail.log")["ok"]


def test_both_tools_get_the_same_model_data_batch_resolution_and_precision(bench, tmp_path):
    from train.config import load_config

    common = (Path("ex.py"), tmp_path / "sd", tmp_path / "export", tmp_path / "out", 34, 4, 128, "fp16")
    example = bench.command("diffusers", *common)
    flags = dict(zip(example[1::2], example[2::2]))
    assert example[0] == "ex.py" and flags["--train_batch_size"] == "4" and flags["--resolution"] == "128"
    assert flags["--max_train_steps"] == "34" and flags["--mixed_precision"] == "fp16"
    assert flags["--train_data_dir"] == str(tmp_path / "export")
    ours = bench.command("workbench", *common)
    assert ours[:5] == ["-m", "workbench", "train", "run", "--config"]
    config = load_config(Path(ours[5]))
    assert (config.train_batch_size, config.resolution, config.max_train_steps, config.mixed_precision) == (
        4, 128, 34, "fp16")
    assert config.cache_latents and config.cache_text_embeddings and config.cache_masks  # the defaults


def test_the_largest_batch_is_extrapolated_from_two_sizes_under_the_memory(bench):
    # 10 GiB at batch 8, 18 GiB at batch 16: 1 GiB a sample; 90 % of 80 GiB = 72 GiB -> batch 70 -> 68
    assert bench.largest_batch({8: 10 * 1024, 16: 18 * 1024}, 80 * 1024) == 68
    assert bench.largest_batch({8: 76 * 1024, 16: 78 * 1024}, 80 * 1024) == 4  # past 90 % already: the floor


def test_the_gpu_model_has_stable_diffusion_1_5s_architecture():
    import torch
    from diffusers import ControlNetModel

    from workbench.tiny.sd import sd15_models

    with torch.device("meta"):  # shapes only: no memory, no time
        unet, vae, text = sd15_models()
        controlnet = ControlNetModel.from_unet(unet)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert (count(unet), count(vae), count(text)) == (859_520_964, 83_653_863, 123_060_480)  # SD 1.5's own
    assert 360e6 < count(controlnet) < 362e6


def _events(folder: Path, written: list[tuple[int, float]]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for step, when in written:
        writer.add_scalar("loss", 0.1, global_step=step, walltime=when)
    writer.close()


def test_time_per_step_inside_a_run_leaves_out_warm_up_and_the_end(bench, tmp_path):
    # diffusers' example: every step written as it ends, 0.2 s apart; the last step 9 s later (saving)
    every_step = [(s, 100 + 0.2 * s) for s in range(1, 54)] + [(54, 100 + 0.2 * 53 + 9)]
    _events(tmp_path / "example", every_step)
    assert bench.in_run_step_s(tmp_path / "example", 54) == pytest.approx(0.2)
    # the workbench: ten steps written at each flush, 0.1 ms apart, flushes 1.5 s apart; the last
    # group (51-54) only after the final validation and save, 20 s later
    flushes = [(s, 100 + 1.5 * ((s - 1) // 10 + 1) + 1e-4 * ((s - 1) % 10)) for s in range(1, 51)]
    flushes += [(s, 200 + 1e-4 * (s - 51)) for s in range(51, 55)]
    _events(tmp_path / "workbench", flushes)
    assert bench.in_run_step_s(tmp_path / "workbench", 54) == pytest.approx(0.15)
    _events(tmp_path / "short", flushes[:14])  # one flush after the warm-up window: nothing to time
    assert bench.in_run_step_s(tmp_path / "short", 14) is None
