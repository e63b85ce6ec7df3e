"""The ControlNet trainer on a tiny Stable Diffusion: checkpoints, exact resume, validation, conditioning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny_models import TINY_COLOURS, palette_png, write_export
from train.config import ConfigError, load_config
from train.controlnet import StopRequested, list_checkpoints, prompt_dropout, train
from train.data import ExportDataset, control_input, fit_mask, read_records, read_scheme

pytestmark = pytest.mark.usefixtures("single_thread")


def _config(tiny_sd: Path, export: Path, out: Path, **overrides):
    values = dict(pretrained_model_name_or_path=str(tiny_sd), train_data_dir=str(export), output_dir=str(out),
                  resolution=64, train_batch_size=2, max_train_steps=4, checkpointing_steps=2,
                  validation_steps=2, num_validation_images=2, validation_inference_steps=2,
                  validation_loss_samples=2, logging_steps=2, learning_rate=1e-4, report_to="none")
    values.update(overrides)
    return load_config(None, values)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_run_writes_checkpoints_metrics_validation_and_a_loadable_controlnet(tiny_sd, tiny_export, tmp_path):
    from diffusers import ControlNetModel

    out = tmp_path / "run"
    result = train(_config(tiny_sd, tiny_export, out, checkpoints_total_limit=1, report_to="tensorboard"))
    assert result.global_step == 4
    assert [s for s, _p in list_checkpoints(out)] == [4]  # checkpoint-2 removed: keep the last 1
    metrics = _metrics(out)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    for m in metrics:
        assert np.isfinite(m["loss"]) and m["lr"] == pytest.approx(1e-4)
        assert m["samples_per_s"] > 0 and m["memory_mib"] > 0
    assert [m["step"] for m in metrics if "val_loss" in m] == [2, 4]
    grids = sorted((out / "validation").glob("step-*.png"))
    assert [g.name for g in grids] == ["step-0000002.png", "step-0000004.png"]
    assert Image.open(grids[0]).size == (3 * 64, 2 * 64)  # mask | generated | target, per held-out image
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    controlnet = ControlNetModel.from_pretrained(out)
    assert controlnet.config.conditioning_channels == 3
    trained = ControlNetModel.from_pretrained(out / "checkpoint-4" / "controlnet")
    assert all(torch.equal(a, b) for a, b in zip(controlnet.state_dict().values(), trained.state_dict().values()))


def test_resume_continues_exactly_where_the_checkpoint_left_off(tiny_sd, tiny_export, tmp_path):
    common = dict(random_flip=True, record_sample_ids=True, checkpoints_total_limit=None, num_validation_images=0,
                  validation_steps=100)
    whole = tmp_path / "whole"
    train(_config(tiny_sd, tiny_export, whole, **common))
    cut = tmp_path / "cut"
    train(_config(tiny_sd, tiny_export, cut, max_train_steps=3, **common))
    # as if the process died after step 3 was logged but before its checkpoint was written
    shutil.rmtree(cut / "checkpoint-3")
    assert [m["step"] for m in _metrics(cut)] == [1, 2, 3]
    result = train(_config(tiny_sd, tiny_export, cut, resume_from_checkpoint="latest", **common))
    assert result.global_step == 4
    resumed, reference = _metrics(cut), _metrics(whole)
    assert [m["step"] for m in resumed] == [1, 2, 3, 4]  # step 3 again, once, then 4
    # same data order, same flips, same noise, same dropout, same weights: the same losses
    assert [m["loss"] for m in resumed] == pytest.approx([m["loss"] for m in reference], rel=1e-5)
    assert (cut / "sample_ids" / "rank-0.jsonl").read_text() == (whole / "sample_ids" / "rank-0.jsonl").read_text()


def test_a_stop_request_saves_a_checkpoint_and_stops(tiny_sd, tiny_export, tmp_path):
    out = tmp_path / "run"
    steps = []
    with pytest.raises(StopRequested, match="resume from"):
        train(_config(tiny_sd, tiny_export, out, max_train_steps=50, checkpointing_steps=100, validation_steps=100),
              progress=lambda done, total: steps.append((done, total)), should_stop=lambda: len(steps) >= 2)
    assert steps == [(1, 50), (2, 50)]
    assert [s for s, _p in list_checkpoints(out)] == [2]
    assert [m["step"] for m in _metrics(out)] == [1, 2]


@pytest.mark.parametrize("conditioning,channels", [("palette", 3), ("onehot", 4)])
def test_palette_or_onehot_conditioning(tiny_sd, tiny_export, tmp_path, conditioning, channels):
    from diffusers import ControlNetModel

    out = tmp_path / conditioning
    train(_config(tiny_sd, tiny_export, out, conditioning=conditioning, max_train_steps=1,
                  num_validation_images=int(conditioning == "onehot")))  # palette images: see the first test
    assert ControlNetModel.from_pretrained(out).config.conditioning_channels == channels  # onehot: the legend's 4
    assert len(_metrics(out)) == 1


def test_control_input_is_in_0_1_palette_or_onehot():
    mask = torch.tensor([[[0, 1], [2, 3]]])
    table = torch.zeros(256, 3, dtype=torch.int64)
    table[:4] = torch.tensor(TINY_COLOURS)
    rgb = control_input(mask, "palette", 3, table)
    assert rgb.shape == (1, 3, 2, 2) and rgb.min() >= 0 and rgb.max() <= 1
    assert rgb[0, :, 0, 1].tolist() == [1.0, 0.0, 0.0]  # class 1 is red
    onehot = control_input(mask, "onehot", 4, table)
    assert onehot.shape == (1, 4, 2, 2)
    assert onehot.sum(1).eq(1).all() and onehot[0, 3, 1, 1] == 1


def test_masks_are_never_interpolated(tmp_path, tiny_export):
    # a mask with thin stripes of two classes at a scale that a bilinear resize would blend
    mask = np.zeros((64, 64), np.uint8)
    mask[:, ::3] = 1
    mask[::5, :] = 3
    resized = fit_mask(mask, 40, flip=False)
    assert set(np.unique(resized)) <= {0, 1, 3}
    records = read_records(tiny_export)
    legend = {int(v) for v in json.loads((tiny_export / "manifest.json").read_text())["scheme"]["legend"]}
    dataset = ExportDataset(records, resolution=40)
    table = torch.tensor(np.array(TINY_COLOURS + [(0, 0, 0)] * 252), dtype=torch.int64)
    for item in (dataset[i] for i in range(len(dataset))):
        assert set(item["mask"].unique().tolist()) <= legend
        colours = control_input(item["mask"][None], "palette", 3, table)[0].mul(255).round().reshape(3, -1).T
        assert {tuple(c) for c in colours.long().tolist()} <= set(TINY_COLOURS)


def test_flip_is_applied_identically_to_photo_and_mask(tiny_export):
    records = read_records(tiny_export)
    plain = ExportDataset(records, resolution=64)
    flipping = ExportDataset(records, resolution=64, random_flip=True)
    seen = set()
    for epoch in range(4):
        flipping.set_epoch(epoch)
        for i in range(len(records)):
            a, b = plain[i], flipping[i]
            seen.add(b["flip"])
            expect = (lambda t: t.flip(-1)) if b["flip"] else (lambda t: t)
            assert torch.equal(b["mask"], expect(a["mask"]))
            assert torch.equal(b["pixel_values"], expect(a["pixel_values"]))
    assert seen == {False, True}


def test_prompt_dropout_is_drawn_per_sample_at_every_step():
    draws = torch.stack([prompt_dropout(0, step, 0, 16, 0.5) for step in range(20)])
    assert 0.3 < draws.float().mean() < 0.7
    assert len({tuple(row.tolist()) for row in draws}) > 15  # a new draw each step
    assert any(0 < row.sum() < 16 for row in draws)  # samples of one batch differ
    assert not torch.equal(prompt_dropout(0, 3, 0, 16, 0.5), prompt_dropout(0, 3, 1, 16, 0.5))  # per process
    assert torch.equal(prompt_dropout(0, 3, 0, 16, 0.5), prompt_dropout(0, 3, 0, 16, 0.5))  # resumable
    assert not prompt_dropout(0, 1, 0, 8, 0.0).any() and prompt_dropout(0, 1, 0, 8, 1.0).all()


def test_cached_latents_text_embeddings_and_masks(tiny_sd, tiny_export, tmp_path):
    from diffusers import AutoencoderKL

    out, cache = tmp_path / "cached", tmp_path / "cache"
    train(_config(tiny_sd, tiny_export, out, cache_dir=str(cache), max_train_steps=2, random_flip=True,
                  num_validation_images=0))  # the caches are on by default
    latents = np.load(next(cache.glob("latents-*-64x64.npy")))
    text = np.load(next(cache.glob("text-*.npy")))
    masks = np.load(next(cache.glob("masks-*-64x64.npy")))
    records = [r for r in read_records(tiny_export) if r.split == "train"]
    assert latents.shape == (len(records), 2, 2, 4, 8, 8)  # image, flip, (mean, std), latent
    assert text.shape[:2] == (len(records) + 1, 77)  # every prompt, then the empty one
    assert masks.shape == (len(records), 64, 64) and masks.dtype == np.uint8
    assert np.array_equal(masks[0], np.array(Image.open(records[0].mask)))
    vae = AutoencoderKL.from_pretrained(tiny_sd, subfolder="vae")
    pixels = torch.from_numpy(np.array(Image.open(records[0].photo).convert("RGB"))).permute(2, 0, 1)
    dist = vae.encode(pixels.float().div(127.5).sub(1)[None]).latent_dist
    assert np.allclose(latents[0, 0, 0], dist.mean[0].detach().numpy(), atol=2e-3)
    assert np.allclose(latents[0, 0, 1], dist.std[0].detach().numpy(), atol=2e-3)
    flipped = vae.encode(pixels.flip(-1).float().div(127.5).sub(1)[None]).latent_dist
    assert np.allclose(latents[0, 1, 0], flipped.mean[0].detach().numpy(), atol=2e-3)
    assert [m["step"] for m in _metrics(out)] == [1, 2]


def test_imagefolder_exports_train_too(tiny_sd, tmp_path):
    export = write_export(tmp_path / "hf", "imagefolder")
    records = read_records(export)
    assert [r.split for r in records].count("validation") == 2 and all(r.photo.is_file() for r in records)
    assert read_scheme(export).num_classes == 4
    out = tmp_path / "run"
    train(_config(tiny_sd, export, out, max_train_steps=1, num_validation_images=0))
    assert len(_metrics(out)) == 1


def test_config_files_overrides_and_errors(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("pretrained_model_name_or_path: sd\ntrain_data_dir: d\noutput_dir: o\nresolution: 256\n")
    config = load_config(yaml_file, ["learning_rate=2e-5", "cache_latents=true", "validation_prompt=[a, b]"])
    assert (config.resolution, config.learning_rate, config.cache_latents) == (256, 2e-5, True)
    assert config.validation_prompt == ["a", "b"]
    json_file = config.to_file(tmp_path / "c.json")
    assert load_config(json_file) == config
    with pytest.raises(ConfigError, match="learning_rat: .*not a known key"):
        load_config(yaml_file, ["learning_rat=1"])
    with pytest.raises(ConfigError, match="multiple of 8"):
        load_config(yaml_file, ["resolution=100"])
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(yaml_file, ["oops"])


def test_8bit_adam_without_bitsandbytes_says_how_to_fix(tiny_sd, tiny_export, tmp_path):
    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed here; the missing-package message cannot be shown")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match="pip install bitsandbytes"):
        train(_config(tiny_sd, tiny_export, tmp_path / "run", use_8bit_adam=True))


def test_a_mask_class_beyond_the_onehot_channels_is_named(tiny_sd, tmp_path):
    export = write_export(tmp_path / "e", "controlnet", n=4)
    palette_png(np.full((64, 64), 9, np.uint8)).save(export / "source" / "0.png")
    from train.data import DataError

    dataset = ExportDataset(read_records(export), 64, num_classes=4)
    with pytest.raises(DataError, match="0.png: holds class 9"):
        dataset[0]
