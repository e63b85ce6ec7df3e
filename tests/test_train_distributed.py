"""A real distributed run: two CPU processes under ``accelerate launch`` (DDP over gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train.config import load_config

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.timeout(240)
def test_two_processes_train_on_different_samples_into_one_output(tiny_sd, tiny_export, tmp_path):
    out = tmp_path / "run"
    config = load_config(None, dict(
        pretrained_model_name_or_path=str(tiny_sd), train_data_dir=str(tiny_export), output_dir=str(out),
        resolution=64, train_batch_size=1, max_train_steps=2, checkpointing_steps=2, validation_steps=2,
        num_validation_images=1, validation_inference_steps=1, validation_loss_samples=2,
        record_sample_ids=True, report_to="none"))
    path = config.to_file(tmp_path / "train.yaml")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        # accelerate's `--cpu` starts several processes only through mpirun; its torchrun launcher
        # (`--multi_gpu`) starts two, and the trainer turns to DDP over gloo when there is no GPU
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
         str(ROOT / "train" / "controlnet.py"), "--config", str(path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=220)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seen = {}
    for rank in (0, 1):
        lines = [json.loads(x) for x in (out / "sample_ids" / f"rank-{rank}.jsonl").read_text().splitlines()]
        assert [x["step"] for x in lines] == [1, 2]
        seen[rank] = [i for x in lines for i in x["ids"]]
    assert not set(seen[0]) & set(seen[1])  # each process trained on its own samples
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert sorted(p.name for p in (out / "checkpoint-2").glob("random_states_*.pkl")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]  # one log, written by the main process only
    assert metrics[0]["samples_per_s"] > 0
    assert (out / "diffusion_pytorch_model.safetensors").is_file()


# -- launched from the Train page and `train start`: every rank watched, cancelled, failed -----------
from tests.job_waits import wait_job  # noqa: E402
from tests.test_train_jobs import WAIT, _config_file, store  # noqa: E402,F401
from tests.test_train_page import run_page, start_from_page, wait_ended  # noqa: E402
from workbench.train_launch import TRAINER_SCRIPT, default_processes, launch_argv  # noqa: E402


def test_the_launcher_is_an_argument_list_of_accelerates_own_launch(tmp_path):
    argv = launch_argv(tmp_path / "c.yaml", ["seed=3"], 4, None, "bf16")
    assert argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert argv[argv.index("--num_processes") + 1] == "4" and argv[argv.index("--mixed_precision") + 1] == "bf16"
    assert argv[-5:] == [str(TRAINER_SCRIPT), "--config", str((tmp_path / "c.yaml").resolve()), "--set", "seed=3"]
    accelerate = tmp_path / "multi-node.yaml"
    with_file = launch_argv(tmp_path / "c.yaml", [], None, accelerate)
    assert with_file[3:5] == ["--config_file", str(accelerate.resolve())] and "--num_processes" not in with_file


@pytest.mark.timeout(600)
def test_two_processes_from_the_train_page(app_store, tiny_sd, tiny_export):
    app = run_page()
    assert app.number_input(key="train_processes").value == default_processes()  # every GPU; 1 without one
    app.number_input(key="train_processes").set_value(2)
    app = start_from_page(app, tiny_export, str(tiny_sd), app_store / "out")
    assert not app.error, [e.value for e in app.error]
    job = wait_ended(1, timeout=540)
    log = (app_store / "data" / "jobs" / "1.log").read_text()
    assert job["status"] == "finished", log[-3000:]
    assert "accelerate.commands.launch" in log and job["argv"][-2:] == ["--num-processes", "2"]
    assert " ended; waiting" not in log  # ranks that finish together are not reported as left behind
    assert len(job["details"]["rank_pids"]) == 2 and job["details"]["global_step"] == 2
    out = app_store / "out"
    assert sorted(p.name for p in (out / "checkpoint-2").glob("random_states_*.pkl")) == [
        "random_states_0.pkl", "random_states_1.pkl"]  # both ranks took part
    app = run_page()
    assert {m.label: m.value for m in app.metric}["Step"] == "2 / 2"


@pytest.mark.timeout(900)
def test_cancel_stops_every_rank_and_a_dead_rank_fails_the_job(store, tiny_sd, tiny_export, tmp_path):
    import psutil
    from typer.testing import CliRunner

    from workbench.cli import app

    runner = CliRunner()

    def start(folder):
        path = _config_file(tiny_sd, tiny_export, folder, steps=500)
        started = runner.invoke(app, ["train", "start", "--config", str(path), "--num-processes", "2"])
        assert started.exit_code == 0, started.output
        job_id = int(started.output.strip())
        job = wait_job(store, job_id, lambda j: (j["done"] or 0) >= 2 and len(j["details"].get("rank_pids", [])) == 2
                       or j["status"] not in ("queued", "running"), timeout=400)
        assert job["status"] == "running", job
        return job_id, [psutil.Process(pid) for pid in job["details"]["rank_pids"]]

    job_id, ranks = start(tmp_path / "a")
    cancelled = runner.invoke(app, ["train", "cancel", str(job_id), "--grace", "120"])
    assert cancelled.exit_code == 0, cancelled.output
    job = wait_job(store, job_id, lambda j: j["status"] != "cancelling", WAIT)
    assert job["status"] == "cancelled", job
    _gone, alive = psutil.wait_procs(ranks, timeout=30)
    assert not alive
    stopped_at = job["details"]["global_step"]
    checkpoint = tmp_path / "a" / "run" / f"checkpoint-{stopped_at}"
    assert job["details"]["last_checkpoint"] == str(checkpoint)  # both ranks stopped at the same step
    assert sorted(p.name for p in checkpoint.glob("random_states_*.pkl")) == ["random_states_0.pkl",
                                                                               "random_states_1.pkl"]

    job_id, ranks = start(tmp_path / "b")
    ranks[1].kill()
    job = wait_job(store, job_id, lambda j: j["status"] not in ("queued", "running"), timeout=200)
    assert job["status"] == "failed" and "a training process failed" in job["error"], job
    assert f"(pid {ranks[1].pid})" in job["error"] and "ended first" in job["error"]  # the dead rank is named
    _gone, alive = psutil.wait_procs(ranks, timeout=30)
    assert not alive
