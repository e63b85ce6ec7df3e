"""Tiny random-weight models of the people-repair tools: a SAM and a Stable Diffusion inpainting pipeline.

Both are built from configs (nothing is downloaded) and saved as the folders their real loaders read
(``SamModel`` + ``SamProcessor``; a diffusers ``StableDiffusionInpaintPipeline`` folder), so the repair
code runs its real loading and prediction paths on them. Their masks and pixels are noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SAM_SIZE = 64  # the tiny SAM's input side (its processor pads every photo to this square)


def tiny_sam() -> tuple[Any, Any]:
    """A ~40k-parameter ``SamModel`` (64 px input, 8 px patches) and a ``SamProcessor`` for it."""
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    torch.manual_seed(0)
    patch = 8
    config = SamConfig(
        vision_config=dict(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
                           image_size=SAM_SIZE, patch_size=patch, window_size=4, global_attn_indexes=[1],
                           mlp_dim=64, num_pos_feats=8),
        prompt_encoder_config=dict(hidden_size=16, image_size=SAM_SIZE, patch_size=patch, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_hidden_layers=2, num_attention_heads=2,
                                 iou_head_hidden_dim=16),
    )
    images = SamImageProcessor(size={"longest_edge": SAM_SIZE}, pad_size={"height": SAM_SIZE, "width": SAM_SIZE},
                               mask_size={"longest_edge": SAM_SIZE // 4},
                               mask_pad_size={"height": SAM_SIZE // 4, "width": SAM_SIZE // 4})
    return SamModel(config).eval(), SamProcessor(image_processor=images)


def save_tiny_sam(folder: Path) -> Path:
    """Write a tiny SAM and its processor as a local model folder."""
    model, processor = tiny_sam()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_inpaint_pipeline(tokenizer_dir: Path):
    """A tiny ``StableDiffusionInpaintPipeline`` in memory: the tiny SD's VAE, text encoder and tokenizer
    with a UNet of 9 input channels (latents, mask, masked-image latents), as inpainting UNets have."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    from workbench.tiny.sd import tiny_sd_pipeline

    base = tiny_sd_pipeline(tokenizer_dir)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{**dict(base.unet.config), "in_channels": 9})
    return StableDiffusionInpaintPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                          unet=unet, scheduler=base.scheduler, safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)


def build_tiny_inpaint(folder: Path) -> Path:
    """A tiny random-weight inpainting pipeline saved as a diffusers folder at ``folder``."""
    tiny_inpaint_pipeline(folder.parent / "_tokenizer_src").save_pretrained(str(folder))
    return folder
