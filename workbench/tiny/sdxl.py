"""A tiny Stable Diffusion XL built from configs, saved as an ordinary diffusers folder.

It has SDXL's shape where the trainer and the pipelines look: two text encoders (a
``CLIPTextModel`` and a ``CLIPTextModelWithProjection``) with their tokenizers, a UNet with
``addition_embed_type="text_time"`` whose added embedding takes the second encoder's pooled
projection plus six time ids (original size, crop top-left, target size), and
``model_index.json`` naming ``StableDiffusionXLPipeline``. Weights are random; nothing is
downloaded. About 5 MB of weights; a 64 px image generates in under a second on one CPU thread.
"""

from __future__ import annotations

from pathlib import Path

from workbench.tiny.tokenizer import write_tiny_tokenizer

TEXT_WIDTHS = (32, 32)  # hidden sizes of the two text encoders; the UNet attends to their concatenation
POOLED_DIM = 32  # the second encoder's projection (SDXL: 1280)
TIME_EMBED_DIM = 8  # per time id (SDXL: 256)


def build_tiny_sdxl(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny SDXL saved as a diffusers folder at ``folder``; returns ``folder``."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    source = write_tiny_tokenizer(folder.parent / f"_{folder.name}_tokenizer_src")
    tokenizer = CLIPTokenizer.from_pretrained(str(source), model_max_length=77)
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(source), model_max_length=77)

    def clip_config(hidden: int) -> CLIPTextConfig:
        return CLIPTextConfig(
            hidden_size=hidden, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            vocab_size=len(tokenizer), max_position_embeddings=77, projection_dim=POOLED_DIM, hidden_act="gelu",
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id)

    text_encoder = CLIPTextModel(clip_config(TEXT_WIDTHS[0]))
    text_encoder_2 = CLIPTextModelWithProjection(clip_config(TEXT_WIDTHS[1]))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=8, attention_head_dim=(2, 4), use_linear_projection=True,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=sum(TEXT_WIDTHS), transformer_layers_per_block=(1, 1),
        addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=POOLED_DIM + 6 * TIME_EMBED_DIM,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(16, 16, 32, 32), sample_size=64, scaling_factor=0.13025,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                       beta_end=0.012, steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
                                     add_watermarker=False)
    pipe.save_pretrained(str(folder))
    return folder
