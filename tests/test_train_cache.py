"""The trainer's caches: the same training signal as without them, and reused by later runs on the same export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.tiny_models import write_export
from train.config import load_config
from train.controlnet import train

pytestmark = pytest.mark.usefixtures("single_thread")


def _config(tiny_sd: Path, export: Path, out: Path, **overrides):
    values = dict(pretrained_model_name_or_path=str(tiny_sd), train_data_dir=str(export), output_dir=str(out),
                  resolution=64, train_batch_size=2, max_train_steps=3, checkpointing_steps=100,
                  validation_steps=100, num_validation_images=0, validation_loss_samples=0, logging_steps=1,
                  learning_rate=1e-4, report_to="none", random_flip=True, seed=5)
    values.update(overrides)
    return load_config(None, values)


def _losses(out: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_caches_give_the_same_losses_as_encoding_every_step(tiny_sd, tiny_export, tmp_path):
    off = dict(cache_latents=False, cache_text_embeddings=False, cache_masks=False)
    train(_config(tiny_sd, tiny_export, tmp_path / "plain", **off))
    train(_config(tiny_sd, tiny_export, tmp_path / "cached", cache_dir=str(tmp_path / "cache")))
    plain, cached = _losses(tmp_path / "plain"), _losses(tmp_path / "cached")
    assert len(plain) == 3
    # same photos, flips, latent noise, timesteps and empty prompts; the cache holds float16
    assert cached == pytest.approx(plain, rel=2e-3)
    assert cached != pytest.approx([plain[0]] * 3, rel=1e-3)  # the steps differ from each other


def test_a_second_run_on_the_same_export_reuses_the_caches_and_a_changed_photo_is_encoded_again(tiny_sd, tmp_path):
    export = write_export(tmp_path / "export", "controlnet")
    train(_config(tiny_sd, export, tmp_path / "first", max_train_steps=1))
    cache = export / ".cache"  # the default: beside the export, for every run on it
    built = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npy")}
    assert {name.split("-")[0] for name in built} == {"latents", "text", "masks"}
    train(_config(tiny_sd, export, tmp_path / "second", max_train_steps=1))
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npy")} == built  # nothing rebuilt
    photo = export / "target" / "0.png"
    Image.fromarray(255 - np.array(Image.open(photo))).save(photo)
    train(_config(tiny_sd, export, tmp_path / "third", max_train_steps=1))
    now = {p.name for p in cache.glob("latents-*.npy")}
    assert len(now - set(built)) == 1  # the photo changed: its latents are new; masks and text are reused
    assert {p.name for p in cache.glob("masks-*.npy")} | {p.name for p in cache.glob("text-*.npy")} == {
        n for n in built if not n.startswith("latents")}
