"""workbench/training.py and train/suggest.py: what the Train page reads and proposes."""

from __future__ import annotations


import pytest

from train.suggest import MAX_EFFECTIVE_BATCH, suggest_settings
from workbench.training import (
    MetricsTail, TrainingError, config_for_export, eta_seconds, format_duration, smooth, train_argv,
)


def test_metrics_are_read_incrementally_and_a_half_written_line_waits(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.poll() == []
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.9}\n{"step": 3, "lo')
    assert [r["step"] for r in tail.poll()] == [1, 2]
    with path.open("a") as out:
        out.write('ss": 0.8}\n')
    assert [r["step"] for r in tail.poll()] == [3]
    assert [r["step"] for r in tail.records] == [1, 2, 3]
    path.write_text('{"step": 1, "loss": 1.0}\n')  # a resume rewrote the file shorter
    tail.poll()
    assert [r["step"] for r in tail.records] == [1]


def test_smoothing_and_eta():
    assert smooth([1.0, 1.0, 1.0], 0.9) == pytest.approx([1.0, 1.0, 1.0])  # debiased: no start at 0
    assert smooth([1.0, 0.0], 0.0) == [1.0, 0.0]
    values = smooth([1.0, 0.0] * 50, 0.9)
    assert max(values[-10:]) - min(values[-10:]) < 0.2
    records = [{"step": s, "time": 100.0 + 2 * s} for s in range(1, 11)]
    assert eta_seconds(records, 20) == pytest.approx(20.0)  # 10 steps left at 2 s each
    assert eta_seconds(records[:1], 20) is None
    assert format_duration(3725) == "1h 02m" and format_duration(65) == "1m 05s" and format_duration(None) == "-"


def test_config_from_an_export_folder(tiny_export, tmp_path):
    suggestion = suggest_settings(24, 64)
    config = config_for_export(tiny_export, "sd", tmp_path / "out", suggestion, learning_rate=2e-5)
    assert config.resolution == 64  # the export's own resolution
    assert (config.train_batch_size, config.gradient_accumulation_steps) == (4, 16)
    assert config.learning_rate == 2e-5
    assert train_argv(tmp_path / "c.yaml", ["seed=3"])[:3] == ["train", "run", "--config"]
    with pytest.raises(TrainingError, match="not an export folder"):
        config_for_export(tmp_path, "sd", tmp_path / "out")


@pytest.mark.parametrize("memory", [12, 24, 48, 80])
def test_suggestions_fit_the_gpu_and_reach_the_target_batch(memory):
    s = suggest_settings(memory, 64)
    assert s.estimated_memory_gib <= memory
    assert s.effective_batch == s.train_batch_size * s.gradient_accumulation_steps == 64
    assert 3000 <= s.max_train_steps
    bigger = suggest_settings(memory, 1000)
    assert bigger.effective_batch <= MAX_EFFECTIVE_BATCH
    assert "converge" in s.note


def test_sdxl_at_1024_px_on_24_gb_needs_cached_latents_checkpointing_and_8bit_adam():
    s = suggest_settings(24, sdxl=True)
    assert s.estimated_memory_gib <= 0.9 * 24 and s.train_batch_size >= 1
    assert s.gradient_checkpointing and s.use_8bit_adam and s.mixed_precision == "bf16"
    assert s.as_overrides()["cache_latents"] is True and s.as_overrides()["cache_text_embeddings"] is True
    assert s.effective_batch == 64
    assert "bitsandbytes" in suggest_settings(24, have_bitsandbytes=False, sdxl=True).note
    assert "bitsandbytes" not in suggest_settings(24, have_bitsandbytes=True, sdxl=True).note
    roomy = suggest_settings(80, sdxl=True)
    assert not roomy.use_8bit_adam and not roomy.gradient_checkpointing and roomy.train_batch_size >= 2
    assert "does not fit" in suggest_settings(12, sdxl=True).note
    assert "cache_latents" not in suggest_settings(24).as_overrides()  # SD: the config's own default stands


def test_train_suggest_sdxl_on_the_command_line():
    import json

    from typer.testing import CliRunner

    from workbench.cli import app

    result = CliRunner().invoke(app, ["train", "suggest", "--sdxl", "--gpu-memory", "24", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["use_8bit_adam"] and data["gradient_checkpointing"] and data["cache_latents"]
    assert "1024 px" in data["note"]
