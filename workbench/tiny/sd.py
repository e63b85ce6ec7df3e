"""Stable Diffusions with random weights built from configs (a tiny one, and SD 1.5's architecture for
GPU benchmarks), and export folders to train them on: for tests, benchmarks and trying the app offline.

Nothing is downloaded: every part is built from a config (see ``shared/OFFLINE-MODELS.md``) and saved
as an ordinary diffusers folder, so the trainer, ``add_control`` and the pipelines load it through
their real ``from_pretrained`` paths. The tiny VAE keeps four down blocks so that it downsamples by 8
as Stable Diffusion's does (``ControlNetModel.from_unet`` assumes that factor). The export folders
follow the two documented layouts (ControlNet reference and Hugging Face image folder) with
single-channel palette PNG masks and a ``manifest.json`` naming the scheme.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from workbench.tiny.tokenizer import write_tiny_tokenizer

TINY_CLASSES = {"0": "background", "1": "upper body", "2": "lower body", "3": "full body"}
TINY_COLOURS = [(0, 0, 0), (255, 0, 0), (0, 0, 255), (0, 255, 0)]


def build_tiny_sd(folder: Path) -> Path:
    """A randomly initialised tiny Stable Diffusion saved as a diffusers folder at ``folder``."""
    tiny_sd_pipeline(folder.parent / "_tokenizer_src").save_pretrained(str(folder))
    return folder


def sd15_scheduler():
    """SD 1.5's noise schedule as its ``scheduler_config.json`` has it (scaled-linear betas
    0.00085-0.012, ``steps_offset`` 1, no sample clipping), as a DDPM scheduler: what the random
    stand-ins ship, so that they load and sample like the real base."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, steps_offset=1, clip_sample=False)


def tiny_sd_pipeline(tokenizer_dir: Path):
    """A randomly initialised tiny ``StableDiffusionPipeline`` in memory (tokenizer files go to ``tokenizer_dir``)."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(str(write_tiny_tokenizer(tokenizer_dir)),
                                              model_max_length=77)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=8, cross_attention_dim=32, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(16, 16, 32, 32), sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=len(tokenizer), max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=sd15_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def save_tiny_controlnet(folder: Path, sd_folder: Path) -> Path:
    """A ControlNet initialised from the tiny Stable Diffusion's UNet (``ControlNetModel.from_unet``)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(sd_folder), subfolder="unet")
    ControlNetModel.from_unet(unet, conditioning_channels=3).save_pretrained(str(folder))
    return folder


def _figure(rng: np.random.Generator, size: int, height: int | None = None) -> np.ndarray:
    """A class-id map (``height`` x ``size``): a 'person' with an upper and a lower garment or a full-body one."""
    height = height or size
    mask = np.zeros((height, size), np.uint8)
    left = int(rng.integers(size // 8, size // 2))
    width = int(rng.integers(size // 4, size // 2))
    top = int(rng.integers(2, height // 4))
    mid = int(rng.integers(height // 3, height // 2)) + top
    bottom = min(height - 2, mid + int(rng.integers(height // 4, height // 2)))
    if rng.random() < 0.5:
        mask[top:mid, left:left + width] = 1
        mask[mid:bottom, left:left + width] = 2
    else:
        mask[top:bottom, left:left + width] = 3
    return mask


def palette_png(mask: np.ndarray, colours=TINY_COLOURS) -> Image.Image:
    """A single-channel palette PNG image of a class-id map."""
    image = Image.fromarray(mask, mode="P")
    flat = [c for colour in colours for c in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    return image


def write_export(root: Path, fmt: str = "controlnet", n: int = 8, size: int = 64, seed: int = 0,
                 validation: int = 2, sizes: list[tuple[int, int]] | None = None) -> Path:
    """A tiny export folder in ``fmt`` (``controlnet`` or ``imagefolder``) with a manifest.

    The manifest marks the last ``validation`` images as the validation split; photos are drawn from
    their masks (a colour per class plus noise) so that there is something to learn. ``sizes``
    (``(width, height)``, used in turn) makes an aspect-bucketed export; default ``size`` squares.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    garment = {1: "a red top", 2: "blue trousers", 3: "a green dress"}
    lines, items = [], []
    for i in range(n):
        width, height = sizes[i % len(sizes)] if sizes else (size, size)
        mask = _figure(rng, width, height)
        photo = np.full((height, width, 3), 200, np.uint8)
        for value, colour in enumerate(TINY_COLOURS[1:], start=1):
            photo[mask == value] = colour
        photo = np.clip(photo.astype(int) + rng.integers(-20, 20, photo.shape), 0, 255).astype(np.uint8)
        prompt = "a person wearing " + " and ".join(garment[v] for v in sorted(set(mask.flat) - {0}))
        split = "validation" if i >= n - validation else "train"
        if fmt == "controlnet":
            (root / "source").mkdir(exist_ok=True)
            (root / "target").mkdir(exist_ok=True)
            palette_png(mask).save(root / "source" / f"{i}.png")
            Image.fromarray(photo).save(root / "target" / f"{i}.png")
            lines.append({"source": f"source/{i}.png", "target": f"target/{i}.png", "prompt": prompt})
        elif fmt == "imagefolder":
            (root / "images").mkdir(exist_ok=True)
            (root / "conditioning").mkdir(exist_ok=True)
            palette_png(mask).save(root / "conditioning" / f"{i}.png")
            Image.fromarray(photo).save(root / "images" / f"{i}.png")
            lines.append({"file_name": f"images/{i}.png", "conditioning_image_file_name": f"conditioning/{i}.png",
                          "text": prompt})
        else:
            raise ValueError(fmt)
        items.append({"index": i, "file_name": f"{i}.png", "split": split, "size": [width, height]})
    name = "prompt.json" if fmt == "controlnet" else "metadata.jsonl"
    (root / name).write_text("".join(json.dumps(line) + "\n" for line in lines))
    # the layout workbench/export.py writes: the scheme (with its legend) and the split per line index
    manifest = {"format": fmt, "recipe": {"scheme": "cloth-seg", "resolution": size},
                "scheme": {"name": "cloth-seg", "version": 1, "legend": TINY_CLASSES},
                "counts": {"images": n}, "items": items}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


# Stable Diffusion 1.5's architecture (the published configs' values), for GPU benchmarks: real sizes,
# random weights, nothing downloaded. Parameter counts: UNet 859.5 M, VAE 83.7 M, text encoder 123.1 M.
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4)
SD15_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 vocab_size=49408, max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu")


def sd15_models():
    """UNet, VAE and text encoder with Stable Diffusion 1.5's architecture and random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    return (UNet2DConditionModel(**SD15_UNET), AutoencoderKL(**SD15_VAE),
            CLIPTextModel(CLIPTextConfig(**SD15_TEXT, bos_token_id=0, eos_token_id=2, pad_token_id=1)))


def build_sd15_random(folder: Path) -> Path:
    """Stable Diffusion 1.5's architecture with random weights, saved as a diffusers folder at ``folder``.

    The tokenizer is the tiny character one (ids fit the 49408-entry vocabulary); speed and memory
    do not depend on which tokens a prompt becomes.
    """
    import torch
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(str(write_tiny_tokenizer(folder.parent / "_tokenizer_src")),
                                              model_max_length=77)
    unet, vae, text_encoder = sd15_models()
    text_encoder.config.update(dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                    pad_token_id=tokenizer.pad_token_id))
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sd15_scheduler(),
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(str(folder))
    return folder
