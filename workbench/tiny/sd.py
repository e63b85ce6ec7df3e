"""A Stable Diffusion with random weights built from tiny configs (tests, benchmarks, trying the app offline).

Nothing is downloaded: every part is built from a small config (see ``/work/shared/OFFLINE-MODELS.md``)
and saved as an ordinary diffusers folder, so the trainer, ``add_control`` and the pipelines load it
through their real ``from_pretrained`` paths. The VAE keeps four down blocks so that it downsamples
by 8 as Stable Diffusion's does (``ControlNetModel.from_unet`` assumes that factor).
"""

from __future__ import annotations

from pathlib import Path

from workbench.tiny.tokenizer import write_tiny_tokenizer


def build_tiny_sd(folder: Path) -> Path:
    """A randomly initialised tiny Stable Diffusion saved as a diffusers folder at ``folder``."""
    tiny_sd_pipeline(folder.parent / "_tokenizer_src").save_pretrained(str(folder))
    return folder


def tiny_sd_pipeline(tokenizer_dir: Path):
    """A randomly initialised tiny ``StableDiffusionPipeline`` in memory (tokenizer files go to ``tokenizer_dir``)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
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
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                              beta_start=0.00085, beta_end=0.012)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def save_tiny_controlnet(folder: Path, sd_folder: Path) -> Path:
    """A ControlNet initialised from the tiny Stable Diffusion's UNet (``ControlNetModel.from_unet``)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(sd_folder), subfolder="unet")
    ControlNetModel.from_unet(unet, conditioning_channels=3).save_pretrained(str(folder))
    return folder
