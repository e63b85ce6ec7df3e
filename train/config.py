"""The ControlNet trainer's settings: one pydantic model, loaded from YAML or JSON plus overrides.

Keys carry the names of diffusers' ``examples/controlnet/train_controlnet.py`` where that
script has one (``pretrained_model_name_or_path``, ``train_batch_size``, ``learning_rate`` ...),
so a config written for it reads the same here. ``--set key=value`` overrides are parsed as
YAML scalars (``--set learning_rate=1e-5``, ``--set cache_latents=true``,
``--set validation_prompt=[a,b]``).

Defaults and why (the "sudden convergence" notes): a ControlNet learns to follow its control
abruptly, typically somewhere around 3k-7k optimisation steps at batch 4. A larger effective
batch (``train_batch_size * gradient_accumulation_steps * processes``) makes that happen in
fewer steps and more reliably, so prefer accumulating up to an effective batch of about 256
over running many more small steps; ``train/suggest.py`` picks the accumulation for a GPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


# A config is a page of keys; anything far larger is not one (and is not read whole).
CONFIG_MAX_BYTES = 1 * 2**20


class ConfigError(ValueError):
    """A training config that cannot be used; the message names the key and the fix."""


class TrainConfig(BaseModel):
    """Everything one ControlNet training run needs."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # -- models and data
    pretrained_model_name_or_path: str = Field(description="Stable Diffusion: hub id or diffusers folder.")
    controlnet_model_name_or_path: str | None = Field(
        None, description="Initial ControlNet (e.g. from train/add_control.py); default: copied from the UNet.")
    revision: str | None = None
    variant: str | None = None
    sdxl: bool | None = Field(
        None, description="An SDXL base (two text encoders, pooled embeddings, time ids); default: what the "
                          "base's model_index.json names (StableDiffusionXLPipeline).")
    train_data_dir: Path = Field(description="An export folder: prompt.json (ControlNet layout) or metadata.jsonl.")
    output_dir: Path = Field(description="Receives checkpoint-<step>/, metrics.jsonl, validation/, the final model.")
    resolution: int = Field(512, ge=8, description="Training side (multiple of 8): squares, or buckets of about resolution² pixels.")
    validation_split: float = Field(
        0.05, ge=0, lt=1, description="Fraction held out when the export marks no split.")

    # -- conditioning
    conditioning: Literal["palette", "onehot"] = Field(
        "palette", description="palette: the mask's colours as RGB in [0,1]; onehot: K channels, one per class.")
    conditioning_channels: int | None = Field(
        None, ge=1, description="Channels of the control input; default 3 (palette) or the scheme's class count.")
    random_flip: bool = Field(False, description="Flip photo and mask together, half of the time.")
    proportion_empty_prompts: float = Field(
        0.5, ge=0, le=1, description="Chance, per sample and step, that its prompt is replaced by the empty one.")

    # -- optimisation
    train_batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(1e-5, gt=0)
    scale_lr: bool = False
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine",
                          "cosine_with_restarts", "polynomial"] = "constant"
    lr_warmup_steps: int = Field(0, ge=0)
    lr_num_cycles: int = 1
    lr_power: float = 1.0
    max_train_steps: int = Field(5000, ge=1)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    use_8bit_adam: bool = Field(False, description="bitsandbytes' 8-bit AdamW (needs bitsandbytes and a GPU).")
    fused_adam: bool = Field(True, description="torch's fused AdamW on CUDA devices.")
    sd_locked: bool = Field(True, description="False also trains the UNet's decoder (up blocks and output).")
    seed: int = 0

    # -- speed
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    enable_sdpa: bool = Field(True, description="PyTorch scaled-dot-product attention (else the classic one).")
    channels_last: bool | None = Field(None, description=(
        "channels_last memory format for the UNet, ControlNet and VAE. Default: on a CPU, off on CUDA. "
        "On a CPU (oneDNN convolutions) the tiny model's step measured faster with it; on an H200 in fp16 "
        "the SD 1.5 ControlNet's step took 118 ms with it and 104 ms without (steps 11-40, batch 4)."))
    torch_compile: bool = False
    # the caches give the same training signal (a fresh latent sample from the cached mean/std every
    # step, the flip's own latents, the same prompts and empty prompt), so they are on by default
    cache_latents: bool = Field(True, description="Encode every photo (and its flip) once; sample from the cached mean/std.")
    cache_text_embeddings: bool = Field(True, description="Encode every prompt once (and the empty prompt).")
    cache_masks: bool = Field(True, description="Read and resize every mask once (uint8 at training size).")
    cache_dir: Path | None = Field(
        None, description="Where caches live; default <train_data_dir>/.cache, shared by runs on the same export.")
    dataloader_num_workers: int = Field(0, ge=0, description="Data loading processes (kept alive across epochs).")

    # -- aspect buckets
    aspect_buckets: bool = Field(
        True, description="Batch by aspect bucket (every batch one size, about resolution² pixels); "
                          "false: centre-crop every sample to a resolution square.")

    # -- bookkeeping
    checkpointing_steps: int = Field(500, ge=1)
    checkpoints_total_limit: int | None = Field(3, ge=1)
    resume_from_checkpoint: str | None = Field(None, description="'latest' or a checkpoint folder.")
    validation_steps: int = Field(500, ge=1)
    num_validation_images: int = Field(4, ge=0, description="Held-out masks drawn in the validation grid.")
    validation_image: list[Path] | None = Field(None, description="Mask PNGs for validation (else held-out ones).")
    validation_prompt: list[str] | None = None
    validation_inference_steps: int = Field(20, ge=1)
    validation_loss_samples: int = Field(16, ge=0, description="Held-out samples in the validation loss.")
    logging_steps: int = Field(10, ge=1, description="Optimisation steps between loss read-backs from the device.")
    report_to: Literal["tensorboard", "none"] = "tensorboard"
    record_sample_ids: bool = Field(False, description="Write the sample ids each process trained on (debugging).")
    evaluate_segmenter: str | None = Field(
        None, description="Opt-in: at each checkpoint start a controllability evaluation job (mIoU) judged by this "
                          "segmenter (SegFormer folder or hub id, or u2net-cloth[:PATH]); None: off.")
    evaluate_per_mask: int = Field(1, ge=1, description="Images per validation mask in the checkpoint evaluations.")
    evaluate_limit: int | None = Field(8, ge=1, description="Validation masks in each checkpoint evaluation (None: all).")
    evaluate_inference_steps: int = Field(20, ge=1, description="Inference steps of the checkpoint evaluations.")

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError(f"resolution {value} is not a multiple of 8 (the VAE downsamples by 8); try {value // 8 * 8 or 8}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.validation_prompt is not None and self.validation_image is not None:
            if len(self.validation_prompt) not in (1, len(self.validation_image)):
                raise ValueError(f"validation_prompt has {len(self.validation_prompt)} prompts for "
                                 f"{len(self.validation_image)} validation_image masks; give one or as many")
        if self.conditioning == "palette" and self.conditioning_channels not in (None, 3):
            raise ValueError(f"conditioning=palette feeds 3 channels (RGB), not conditioning_channels="
                             f"{self.conditioning_channels}; use conditioning=onehot for K channels")
        return self

    @property
    def effective_batch(self) -> int:
        """Samples per optimisation step on one process."""
        return self.train_batch_size * self.gradient_accumulation_steps

    def to_file(self, path: Path) -> Path:
        """Write this config as YAML (``.yaml``/``.yml``) or JSON."""
        return write_settings(self, path)


def write_settings(settings: BaseModel, path: Path) -> Path:
    """Write a trainer's config as YAML (``.yaml``/``.yml``) or JSON, unset keys left out."""
    data = settings.model_dump(mode="json", exclude_none=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        path.write_text(yaml.safe_dump(data, sort_keys=False))
    else:
        path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["key=value", ...]`` -> a dict, values read as YAML scalars (numbers, booleans, lists)."""
    import yaml

    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {pair!r} is not key=value (e.g. --set learning_rate=1e-5)")
        value = yaml.safe_load(raw) if raw.strip() else None
        values[key.strip()] = raw if isinstance(value, (dict,)) else value
    return values


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML or JSON config file."""
    import yaml

    from workbench.guard import InputRefused, loads_json, read_text

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = read_text(path, "config file", max_bytes=CONFIG_MAX_BYTES)
        data = loads_json(text, f"config file {path}") if path.suffix == ".json" else yaml.safe_load(text)
    except InputRefused as exc:
        raise ConfigError(str(exc)) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0] if str(exc) else 'nested too deep'}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def load_config(path: Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """A validated config from a file (optional) with ``key=value`` overrides on top."""
    return load_settings(TrainConfig, path, overrides)


def config_source(model: type[BaseModel]) -> str:
    """Where ``model`` is defined, as a path from the project root (``train/segmenter.py``), also
    when that module runs as a script (``__main__``)."""
    import inspect

    source = Path(inspect.getfile(model)).resolve()
    root = Path(__file__).resolve().parent.parent
    return source.relative_to(root).as_posix() if source.is_relative_to(root) else source.name


def load_settings(model: type[BaseModel], path: Path | None = None,
                  overrides: list[str] | dict[str, Any] | None = None) -> Any:
    """A validated ``model`` (a trainer's config class) from a file (optional) with overrides on top."""
    data = read_config_file(path) if path is not None else {}
    extra = parse_overrides(overrides) if isinstance(overrides, (list, tuple)) else dict(overrides or {})
    data.update(extra)
    try:
        return model(**data)
    except ValidationError as exc:
        from workbench.guard import validation_problems

        where = f"config {path}" if path else "config"
        problems = validation_problems(exc, model, f"; see {config_source(model)}")
        raise ConfigError(f"{where}: {problems}") from None
