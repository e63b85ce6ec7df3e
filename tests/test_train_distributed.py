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
