"""The ControlNet trainer on a tiny SDXL: detection, text encoding, time ids, training, exact resume, validation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_train_controlnet import _config as train_config
from tests.test_train_controlnet import _metrics
from tests.tiny_models import write_export
from train import sdxl
from train.config import load_config
from train.controlnet import list_checkpoints, train
from train.data import read_records

pytestmark = pytest.mark.usefixtures("single_thread")


def _config(base: Path, export: Path, out: Path, **overrides):
    return train_config(base, export, out, **{"validation_steps": 100, "num_validation_images": 0, **overrides})


def test_sdxl_is_read_from_the_base_folder_or_the_config_flag(tiny_sd, tiny_sdxl, tmp_path):
    assert sdxl.is_sdxl_base(str(tiny_sdxl)) and not sdxl.is_sdxl_base(str(tiny_sd))
    assert sdxl.uses_sdxl(_config(tiny_sdxl, tmp_path, tmp_path))
    assert not sdxl.uses_sdxl(_config(tiny_sdxl, tmp_path, tmp_path, sdxl=False))
    assert sdxl.uses_sdxl(_config(tiny_sd, tmp_path, tmp_path, sdxl=True))


def test_packed_text_embeddings_are_what_the_sdxl_pipeline_encodes(tiny_sdxl):
    from diffusers import StableDiffusionXLPipeline

    _tokenizer, encoders = sdxl.load_text_encoders(str(tiny_sdxl), None)
    prompts = ["a person wearing a red top", ""]
    packed = encoders.encode(prompts, "cpu")
    assert packed.shape == (2, 78, 64)  # 77 token rows of both encoders (32 + 32) and the pooled row
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl))
    embeds, _neg, pooled, _neg_pooled = pipe.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
    hidden, ours_pooled = sdxl.split(packed, pipe.unet.config)
    assert torch.allclose(hidden, embeds, atol=1e-6) and torch.allclose(ours_pooled, pooled, atol=1e-6)


def test_time_ids_hold_the_photo_size_the_crop_corner_and_the_training_size(tmp_path):
    export = write_export(tmp_path / "export", n=2, size=64, validation=0)
    records = read_records(export)
    Image.new("RGB", (96, 64)).save(records[1].photo)  # a landscape photo: resized to 48x32, cropped at left 8
    table = sdxl.time_ids_table(records, 32)
    assert table.tolist() == [[64, 64, 0, 0, 32, 32], [64, 96, 0, 8, 32, 32]]
    assert sdxl.default_time_ids(2, 64, 48).tolist() == [[64, 48, 0, 0, 64, 48]] * 2


def test_time_ids_follow_each_samples_aspect_bucket(tmp_path):
    export = write_export(tmp_path / "export", n=2, size=64, validation=0)
    records = read_records(export)
    Image.new("RGB", (96, 64)).save(records[1].photo)  # landscape, trained in a 48x32 bucket: no crop
    table = sdxl.time_ids_table(records, 32, sizes=[(32, 32), (48, 32)])
    assert table.tolist() == [[64, 64, 0, 0, 32, 32], [64, 96, 0, 0, 32, 48]]


@pytest.mark.timeout(600)
def test_sdxl_trains_resumes_exactly_and_writes_a_validation_grid(tiny_sdxl, tiny_export, tmp_path):
    from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline

    common = dict(random_flip=True, record_sample_ids=True, checkpoints_total_limit=None,
                  cache_latents=True, cache_text_embeddings=True, cache_dir=tmp_path / "cache")
    whole = tmp_path / "whole"
    result = train(_config(tiny_sdxl, tiny_export, whole, validation_steps=4, num_validation_images=1, **common))
    assert result.global_step == 4
    grids = sorted((whole / "validation").glob("step-*.png"))
    assert [g.name for g in grids] == ["step-0000004.png"]
    assert Image.open(grids[0]).size == (3 * 64, 64)  # mask | generated | target
    assert [m["step"] for m in _metrics(whole) if "val_loss" in m] == [4]
    text = np.load(next((tmp_path / "cache").glob("text-*.npy")))
    assert text.shape[1:] == (78, 64)  # the cache holds the packed SDXL embeddings

    cut = tmp_path / "cut"
    train(_config(tiny_sdxl, tiny_export, cut, max_train_steps=3, **common))
    shutil.rmtree(cut / "checkpoint-3")  # as if the process died after logging step 3
    resumed = train(_config(tiny_sdxl, tiny_export, cut, resume_from_checkpoint="latest", **common))
    assert resumed.global_step == 4 and [s for s, _p in list_checkpoints(cut)] == [2, 4]
    assert [m["step"] for m in _metrics(cut)] == [1, 2, 3, 4]
    assert [m["loss"] for m in _metrics(cut)] == pytest.approx([m["loss"] for m in _metrics(whole)], rel=1e-5)
    assert (cut / "sample_ids" / "rank-0.jsonl").read_text() == (whole / "sample_ids" / "rank-0.jsonl").read_text()

    # the result is an SDXL ControlNet that diffusers' SDXL pipeline runs
    controlnet = ControlNetModel.from_pretrained(whole)
    assert controlnet.config.addition_embed_type == "text_time"
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(str(tiny_sdxl), controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a person wearing a green dress", image=Image.new("RGB", (64, 64)), height=64, width=64,
                 num_inference_steps=2).images[0]
    assert image.size == (64, 64)


@pytest.mark.timeout(900)
@pytest.mark.skipif(not os.environ.get("DIFFUSERS_CONTROLNET_SDXL_EXAMPLE"),
                    reason="set DIFFUSERS_CONTROLNET_SDXL_EXAMPLE to diffusers' examples/controlnet/"
                           "train_controlnet_sdxl.py to run it on an imagefolder export")
def test_the_imagefolder_export_trains_with_diffusers_sdxl_example(tiny_sdxl, demo_engine, tmp_path):
    from workbench.export import ExportRecipe, export_dataset
    from workbench.settings import get_settings

    export = tmp_path / "hf"  # the demo dataset as the Export page writes it
    export_dataset(demo_engine, get_settings(data_dir=tmp_path / "data"),
                   ExportRecipe(dataset="demo", resolution=64, format="imagefolder"), export)
    out = tmp_path / "diffusers-run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf-home")}
    done = subprocess.run(
        [sys.executable, os.environ["DIFFUSERS_CONTROLNET_SDXL_EXAMPLE"],
         "--pretrained_model_name_or_path", str(tiny_sdxl), "--train_data_dir", str(export),
         "--conditioning_image_column", "conditioning_image", "--image_column", "image", "--caption_column", "text",
         "--output_dir", str(out), "--resolution", "64", "--train_batch_size", "2", "--max_train_steps", "2",
         "--checkpointing_steps", "100", "--seed", "0", "--mixed_precision", "no"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=880)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "diffusion_pytorch_model.safetensors").is_file()
