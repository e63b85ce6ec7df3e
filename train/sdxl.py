"""SDXL bases for the ControlNet trainer: detection, two text encoders, pooled embeddings, time ids.

An SDXL UNet takes, besides the token states, ``added_cond_kwargs``: the pooled projection of
its second text encoder and six "time ids" per sample (original height and width, crop top and
left, target height and width). Here:

- text conditioning travels as one packed tensor ``(B, T + 1, D1 + D2)``: the token states of
  both encoders (penultimate layer, as SDXL was trained) side by side, and one last row holding
  the pooled projection, zero-padded. The caches, the empty prompt used for dropout and the
  validation inputs are therefore the same code for SD and SDXL; :func:`unpack` splits it where
  the UNet and ControlNet are called;
- time ids are real per sample: the photo's size in the export, where the centre crop took its
  top-left corner in the resized photo, and the training size (diffusers' example passes
  constants). The validation loss and the pipeline use ``(size, 0, 0, size)``, as inference does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from train.config import ConfigError, TrainConfig

TIME_IDS = 6


def is_sdxl_base(base: str, revision: str | None = None) -> bool:
    """Whether the base's ``model_index.json`` names an SDXL pipeline (a hub id: its cached copy)."""
    index = Path(base) / "model_index.json"
    if not Path(base).exists():
        try:
            from huggingface_hub import hf_hub_download

            index = Path(hf_hub_download(base, "model_index.json", revision=revision))
        except Exception:  # offline, or no such file: the loader reports what is missing
            return False
    if not index.is_file():
        return (Path(base) / "text_encoder_2").is_dir()
    try:
        name = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")
    except (OSError, json.JSONDecodeError, AttributeError):
        return False
    return str(name).startswith("StableDiffusionXL")


def uses_sdxl(config: TrainConfig) -> bool:
    """The config's ``sdxl`` flag, or else what the base folder says."""
    if config.sdxl is not None:
        return config.sdxl
    return is_sdxl_base(config.pretrained_model_name_or_path, config.revision)


class SDXLTextEncoders(torch.nn.Module):
    """SDXL's two tokenizers and text encoders as one module: prompts in, packed embeddings out."""

    def __init__(self, tokenizers: list[Any], encoders: list[torch.nn.Module]):
        super().__init__()
        self.tokenizers = list(tokenizers)
        self.encoders = torch.nn.ModuleList(encoders)
        lengths = {t.model_max_length for t in self.tokenizers}
        if len(lengths) != 1:
            raise ConfigError(f"the SDXL base's tokenizers pad to different lengths {sorted(lengths)}; "
                              "both must give the same number of tokens (77 for CLIP)")
        self.tokens = lengths.pop()
        self.width = sum(e.config.hidden_size for e in self.encoders)
        self.pooled_dim = self.encoders[-1].config.projection_dim
        if self.pooled_dim > self.width:
            raise ConfigError(f"the SDXL base's pooled projection ({self.pooled_dim}) is wider than its token "
                              f"states ({self.width}); this trainer packs it as one row of them")

    @property
    def device(self) -> torch.device:
        """Where the encoders' weights are."""
        return next(self.parameters()).device

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, width) of one prompt's packed embedding."""
        return self.tokens + 1, self.width

    @torch.no_grad()
    def encode(self, prompts: list[str], device: torch.device | str) -> torch.Tensor:
        """Packed embeddings (B, T + 1, D1 + D2) of ``prompts``."""
        states, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.encoders):
            ids = tokenizer(prompts, max_length=self.tokens, padding="max_length", truncation=True,
                            return_tensors="pt").input_ids.to(device)
            out = encoder(ids, output_hidden_states=True)
            states.append(out.hidden_states[-2])
            pooled = out[0]  # the last encoder's (with projection) pooled output
        return pack(torch.cat(states, dim=-1), pooled)


def pack(hidden: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """Token states (B, T, D) and pooled (B, P <= D) as one (B, T + 1, D) tensor."""
    row = hidden.new_zeros(hidden.shape[0], 1, hidden.shape[-1])
    row[:, 0, : pooled.shape[-1]] = pooled.to(hidden.dtype)
    return torch.cat([hidden, row], dim=1)


def split(text: torch.Tensor, unet_config: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states (B, T, D) and pooled projection (B, P) of a packed tensor, P from the UNet's config."""
    pooled_dim = unet_config.projection_class_embeddings_input_dim - TIME_IDS * unet_config.addition_time_embed_dim
    return text[:, :-1], text[:, -1, :pooled_dim]


def unpack(text: torch.Tensor, time_ids: torch.Tensor | None, noisy: torch.Tensor,
           unet_config: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token states and the UNet's ``added_cond_kwargs`` (default time ids: the latents' own size)."""
    hidden, pooled = split(text, unet_config)
    if time_ids is None:
        time_ids = default_time_ids(noisy.shape[0], noisy.shape[-2] * 8, noisy.shape[-1] * 8, noisy.device)
    return hidden, {"text_embeds": pooled, "time_ids": time_ids.to(text.dtype)}


def default_time_ids(batch: int, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 6) time ids of an uncropped image generated at its own size (what inference passes)."""
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32, device=device).repeat(batch, 1)


def time_ids_table(records: list[Any], resolution: int, sizes: list[tuple[int, int]] | None = None) -> torch.Tensor:
    """(N, 6) time ids of the training records: photo size, crop top-left, training size.

    ``sizes`` gives each record's training size ``(width, height)`` (its aspect bucket); default the
    ``resolution`` square."""
    from PIL import Image

    from train.data import fit_geometry

    rows = []
    for i, record in enumerate(records):
        target = sizes[i] if sizes else (resolution, resolution)
        with Image.open(record.photo) as photo:  # reads the header only
            width, height = photo.size
        if (width, height) == tuple(target):
            top = left = 0
        else:
            _new, (left, top, _right, _bottom) = fit_geometry((width, height), target)
        rows.append((height, width, top, left, target[1], target[0]))
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, TIME_IDS)


def batch_time_ids(table: torch.Tensor | None, indices: list[int], device: torch.device) -> torch.Tensor | None:
    """The rows of ``table`` for a batch's record indices (None for an SD base)."""
    return None if table is None else table[indices].to(device, non_blocking=True)


def load_text_encoders(base: str, variant: str | None, **kw: Any) -> tuple[Any, SDXLTextEncoders]:
    """The first tokenizer (for code that wants one) and both text encoders of an SDXL base."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tokenizers = [CLIPTokenizer.from_pretrained(base, subfolder=sub, **kw) for sub in ("tokenizer", "tokenizer_2")]
    encoders = [CLIPTextModel.from_pretrained(base, subfolder="text_encoder", variant=variant, **kw),
                CLIPTextModelWithProjection.from_pretrained(base, subfolder="text_encoder_2", variant=variant, **kw)]
    for tokenizer, encoder in zip(tokenizers, encoders):
        tokenizer.model_max_length = min(tokenizer.model_max_length, encoder.config.max_position_embeddings)
    return tokenizers[0], SDXLTextEncoders(tokenizers, encoders)


def validation_pipeline(vae, unet, controlnet, scheduler):
    """An SDXL ControlNet pipeline that takes packed embeddings (no text encoders of its own)."""
    from diffusers import StableDiffusionXLControlNetPipeline

    return StableDiffusionXLControlNetPipeline(
        vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet,
        controlnet=controlnet, scheduler=scheduler, add_watermarker=False)


def prompt_arguments(text: torch.Tensor, empty: torch.Tensor, unet_config: Any) -> dict[str, torch.Tensor]:
    """The pipeline's prompt and negative-prompt arguments from packed embeddings (B, T+1, D), (T+1, D)."""
    hidden, pooled = split(text, unet_config)
    negative, negative_pooled = split(empty[None].expand_as(text), unet_config)
    return {"prompt_embeds": hidden, "pooled_prompt_embeds": pooled,
            "negative_prompt_embeds": negative, "negative_pooled_prompt_embeds": negative_pooled}
