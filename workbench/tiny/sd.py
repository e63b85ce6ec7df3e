"""A tiny Stable Diffusion (and a ControlNet made from it), randomly initialised from small configs.

Saved as ordinary diffusers folders, so the trainer, ``add_control`` and the pipelines load them
through their real ``from_pretrained`` paths (see ``shared/OFFLINE-MODELS.md`` for why these sizes).
"""

from __future__ import annotations

import json
import string
from pathlib import Path


def write_tiny_tokenizer(folder: Path) -> Path:
    """A working CLIPTokenizer: single characters (and their end-of-word forms), no merges."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab: dict[str, int] = {}
    for char in chars:
        vocab[char] = len(vocab)
        vocab[f"{char}</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def build_tiny_sd(folder: Path) -> Path:
    """A randomly initialised tiny Stable Diffusion saved as a diffusers folder at ``folder``."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(str(write_tiny_tokenizer(folder.parent / "_tokenizer_src")),
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
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                              beta_start=0.00085, beta_end=0.012)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
    return folder


def save_tiny_controlnet(folder: Path, sd_folder: Path) -> Path:
    """A ControlNet initialised from the tiny Stable Diffusion's UNet (``ControlNetModel.from_unet``)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(sd_folder), subfolder="unet")
    ControlNetModel.from_unet(unet, conditioning_channels=3).save_pretrained(str(folder))
    return folder
