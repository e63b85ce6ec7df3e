"""Train a ControlNet on an export folder (diffusers + accelerate); runnable directly or launched.

    python train/controlnet.py --config train.yaml [--set key=value ...]
    accelerate launch --num_processes 2 train/controlnet.py --config train.yaml
    python -m workbench train run --config train.yaml          (what a background job runs)

The config (``train/config.py``) uses the key names of diffusers' example trainer. What this
trainer does differently from that example, and why:

- masks stay class-id label maps, resized nearest-neighbour only, turned into the control input
  (palette colours or a K-channel one-hot map) in [0, 1] on the device; validation feeds the
  pipeline exactly the same tensor, so training and inference agree;
- prompt dropout is drawn per sample at every step; the flip is drawn per (epoch, sample) and
  applied to photo and mask together;
- batches by aspect bucket (kohya-style): every batch one size, about ``resolution``² pixels,
  so a bucketed export keeps its framing (``aspect_buckets=false``: centre-cropped squares);
- resume restores model, optimizer, scheduler, scaler, RNG and the position in the data: the
  batch order is a seeded function of the epoch, so the order continues where it stopped;
- caches, on by default because they give the same training signal: VAE latent distributions of
  every photo and its flip (mean and std; a fresh sample each step), text embeddings of every
  prompt and the empty prompt (dropout picks that row), masks once at training size as uint8;
  built once beside the export (``<train_data_dir>/.cache``, keyed by files and model) and
  reused by every later run on it and by all processes;
- losses stay on the device and are read back every ``logging_steps`` steps (one host sync),
  then written as one ``metrics.jsonl`` line per optimisation step;
- a run stops with a checkpoint when ``<output_dir>/stop.request`` appears (all ranks at the same
  step; ``train/distributed.py``): that is how a job stops a launched multi-process run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (python train/controlnet.py, accelerate launch)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
import torch.nn.functional as F

from train import sdxl
from train.config import ConfigError, TrainConfig, load_config
from train.distributed import agreed_stop, stop_file_requested
from train.runs import MetricsLog, Steps, StopRequested, resume_state, run_details, run_script, save_checkpoint, start_run
from train.data import (
    DataError,
    ExportDataset,
    Record,
    BucketBatchSampler,
    MaskCache,
    Size,
    assign_buckets,
    bucket_rows,
    control_input,
    fit_mask,
    load_mask,
    palette_table,
    read_records,
    read_scheme,
)

METRICS_FILE = "metrics.jsonl"
VALIDATION_DIR = "validation"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")

DetailsFn = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    """Where a finished (or stopped) run left things."""

    output_dir: Path
    global_step: int
    last_checkpoint: Path | None
    metrics_path: Path
    stopped: bool = False
    validation_grids: list[Path] = field(default_factory=list)


# -- checkpoints -------------------------------------------------------------------------------
def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``checkpoint-<step>`` in ``output_dir``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir()
             if p.is_dir() and (m := CHECKPOINT_RE.match(p.name)) and (p / "train_state.json").is_file()]
    return sorted(found)


def resolve_resume(config: TrainConfig) -> Path | None:
    """The checkpoint folder ``resume_from_checkpoint`` names (``latest``: the newest), or None."""
    value = config.resume_from_checkpoint
    if not value:
        return None
    if value == "latest":
        found = list_checkpoints(config.output_dir)
        return found[-1][1] if found else None
    path = Path(value)
    if not path.is_absolute() and not path.exists():
        path = Path(config.output_dir) / value
    if not (path / "train_state.json").is_file():
        raise ConfigError(f"resume_from_checkpoint={value}: {path} is not a checkpoint folder "
                          "(no train_state.json); use 'latest' or a checkpoint-<step> folder")
    return path


def _truncate_jsonl(path: Path, after_step: int) -> None:
    """Drop the lines of a per-step log beyond ``after_step`` (what the stopped run wrote later)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip() and json.loads(line).get("step", 0) <= after_step]
    path.write_text("".join(kept), encoding="utf-8")


# -- models --------------------------------------------------------------------------------------
class ControlledUNet(torch.nn.Module):
    """ControlNet and UNet as one module, so that accelerate/DDP wrap every trained parameter."""

    def __init__(self, controlnet: torch.nn.Module, unet: torch.nn.Module):
        super().__init__()
        self.controlnet = controlnet
        self.unet = unet
        self.sdxl = unet.config.addition_embed_type == "text_time"

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor,
                control: torch.Tensor, time_ids: torch.Tensor | None = None) -> torch.Tensor:
        added = None  # SDXL: text is packed (train/sdxl.py); time_ids default to the latents' size
        if self.sdxl:
            text, added = sdxl.unpack(text, time_ids, noisy, self.unet.config)
        down, mid = self.controlnet(noisy, timesteps, encoder_hidden_states=text, controlnet_cond=control,
                                    added_cond_kwargs=added, return_dict=False)
        dtype = self.unet.dtype
        return self.unet(noisy, timesteps, encoder_hidden_states=text, added_cond_kwargs=added,
                         down_block_additional_residuals=[d.to(dtype) for d in down],
                         mid_block_additional_residual=mid.to(dtype), return_dict=False)[0]


DECODER_PREFIXES = ("up_blocks.", "conv_norm_out.", "conv_out.")


def _is_decoder(name: str) -> bool:
    return name.startswith(DECODER_PREFIXES)


def base_model(config: TrainConfig) -> str:
    """The base model to load: a registry name or hub id as its local copy when the registry finds one."""
    from workbench.models import resolve

    return resolve(config.pretrained_model_name_or_path, "sd")


def load_models(config: TrainConfig, channels: int):
    """Tokenizer, text encoder, VAE, UNet, noise scheduler and the ControlNet to train.

    For an SDXL base the text encoder is :class:`train.sdxl.SDXLTextEncoders` (both encoders)."""
    from workbench.models import ModelNotReady, loading

    base = base_model(config)
    if Path(base).suffix in (".ckpt", ".safetensors"):
        raise ConfigError(f"pretrained_model_name_or_path={base} is a single-file checkpoint; convert it once "
                          "with `python train/add_control.py --save-base DIR` (a diffusers folder) and train on DIR")
    try:
        with loading("sd", base, name=config.pretrained_model_name_or_path) as load:
            # imported here: offline, a base that is not on this machine fails before these imports
            from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
            from transformers import CLIPTextModel, CLIPTokenizer

            kw = {"revision": config.revision, **load.kwargs}
            if sdxl.uses_sdxl(config):
                tokenizer, text_encoder = sdxl.load_text_encoders(base, config.variant, **kw)
            else:
                tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", **kw)
                text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder", variant=config.variant,
                                                             **kw)
                # a tokenizer saved without model_max_length reports a huge one; the encoder's positions bound it
                tokenizer.model_max_length = min(tokenizer.model_max_length,
                                                 text_encoder.config.max_position_embeddings)
            vae = AutoencoderKL.from_pretrained(base, subfolder="vae", variant=config.variant, **kw)
            unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", variant=config.variant, **kw)
            noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler", **kw)
        if config.controlnet_model_name_or_path:
            from workbench.models import resolve

            source = resolve(config.controlnet_model_name_or_path, "controlnet")
            with loading("controlnet", source, name=config.controlnet_model_name_or_path) as load:
                controlnet = ControlNetModel.from_pretrained(source, **load.kwargs)
    except ModelNotReady as exc:
        raise ConfigError(f"pretrained_model_name_or_path={config.pretrained_model_name_or_path}: {exc}"
                          if exc.kind == "sd" else f"controlnet_model_name_or_path: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"pretrained_model_name_or_path={base}: cannot load a Stable Diffusion from it "
                          f"(a hub id or a diffusers folder with unet/, vae/, text_encoder/ ...): {exc}") from exc
    if config.controlnet_model_name_or_path:
        have = controlnet.config.conditioning_channels
        if have != channels:
            raise ConfigError(f"controlnet_model_name_or_path={config.controlnet_model_name_or_path} takes "
                              f"{have} conditioning channels but conditioning={config.conditioning} needs {channels}; "
                              f"make one with `python train/add_control.py --conditioning-channels {channels}`")
    else:
        controlnet = ControlNetModel.from_unet(unet, conditioning_channels=channels)
    return tokenizer, text_encoder, vae, unet, noise_scheduler, controlnet


def _attention(model: torch.nn.Module, sdpa: bool) -> None:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    model.set_attn_processor(AttnProcessor2_0() if sdpa else AttnProcessor())


def uses_channels_last(config: TrainConfig, device: torch.device) -> bool:
    """Whether the models run in channels_last: as configured, else on a CPU only (see the config's key)."""
    return device.type == "cpu" if config.channels_last is None else config.channels_last


def make_optimizer(config: TrainConfig, params: list[torch.nn.Parameter], lr: float, device: torch.device):
    """AdamW: bitsandbytes 8-bit, torch's fused kernel on CUDA, else its foreach (all parameters at once) one."""
    kwargs = dict(lr=lr, betas=(config.adam_beta1, config.adam_beta2), weight_decay=config.adam_weight_decay,
                  eps=config.adam_epsilon)
    if config.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError("use_8bit_adam=true needs bitsandbytes: `pip install bitsandbytes` (CUDA GPUs), "
                              "or set use_8bit_adam=false") from None
        return bnb.optim.AdamW8bit(params, **kwargs)
    if config.fused_adam and device.type == "cuda":
        return torch.optim.AdamW(params, fused=True, **kwargs)
    # on a CPU the fused kernel measured slower, and torch's default there is a loop over the parameters
    return torch.optim.AdamW(params, foreach=True, **kwargs)


# -- caches --------------------------------------------------------------------------------------
def cache_folder(config: TrainConfig) -> Path:
    """Where the caches live: ``cache_dir``, else beside the export (``<train_data_dir>/.cache``,
    so that every run on the same export reuses them), else ``<output_dir>/cache``."""
    if config.cache_dir is not None:
        return Path(config.cache_dir)
    beside = Path(config.train_data_dir) / ".cache"
    try:
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    except OSError:
        pass
    return Path(config.output_dir) / "cache"


def _model_stamp(config: TrainConfig, subfolder: str) -> str:
    """Size and mtime of a local base model's weights, so that a rebuilt model is not mistaken for the old."""
    folder = Path(config.pretrained_model_name_or_path) / subfolder
    if not folder.is_dir():
        return ""
    return ",".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(folder.iterdir())
                    if f.is_file())


def _cache_key(config: TrainConfig, records: list[Record], what: str, sizes: list[Size] | None = None) -> str:
    digest = hashlib.sha256()
    subfolder = {"latents": "vae", "text": "text_encoder"}.get(what, "")
    digest.update(f"{what}|{config.pretrained_model_name_or_path}|{config.revision}|{config.variant}|"
                  f"{_model_stamp(config, subfolder) if subfolder else ''}|{config.random_flip}|"
                  f"{config.mixed_precision if subfolder else ''}".encode())  # encoders run in the compute dtype
    for i, r in enumerate(records):
        stat = (r.photo if what == "latents" else r.mask).stat() if what != "text" else None
        size = sizes[i] if sizes else ""
        digest.update(f"{r.index}|{r.photo if what != 'masks' else r.mask}|{stat.st_size if stat else ''}|"
                      f"{stat.st_mtime_ns if stat else ''}|{size}|{r.prompt if what == 'text' else ''}\n".encode())
    return digest.hexdigest()[:16]


def _write_cache(path: Path, shape: tuple[int, ...], fill: Callable[[np.ndarray], None],
                 dtype: Any = np.float16) -> np.ndarray:
    """Build ``path`` (an .npy memmap) once; written under a temporary name, then moved into place."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        fill(array)
        array.flush()
        del array
        os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


@torch.no_grad()
def cache_latents(config: TrainConfig, records: list[Record], vae, device, dtype,
                  sizes: list[Size] | None = None) -> dict[Size, np.ndarray]:
    """Per bucket ``(width, height)``: (n, flips, 2, C, h, w) float16, the VAE's latent mean and std
    of every training photo of that bucket (rows in record order), unflipped and flipped."""
    from PIL import Image

    from train.data import prepare_pair

    sizes = sizes or [(config.resolution, config.resolution)] * len(records)
    flips = (False, True) if config.random_flip else (False,)
    members, _rows = bucket_rows(sizes)
    arrays = {}
    for size, chosen in members.items():
        subset = [records[i] for i in chosen]
        key = _cache_key(config, subset, "latents", [size] * len(subset))
        path = cache_folder(config) / f"latents-{key}-{size[0]}x{size[1]}.npy"

        def fill(array: np.ndarray, subset=subset, size=size) -> None:
            for start in range(0, len(subset), 8):
                chunk = subset[start:start + 8]
                for f, flip in enumerate(flips):
                    pixels = []
                    for r in chunk:
                        mask, _ = load_mask(r.mask)
                        with Image.open(r.photo) as photo:
                            arr, _m = prepare_pair(photo, mask, size, flip)
                        pixels.append(torch.from_numpy(arr).permute(2, 0, 1).float().div(127.5).sub(1))
                    dist = vae.encode(torch.stack(pixels).to(device, dtype)).latent_dist
                    array[start:start + len(chunk), f, 0] = dist.mean.float().cpu().numpy()
                    array[start:start + len(chunk), f, 1] = dist.std.float().cpu().numpy()

        shape = (len(subset), len(flips), 2, vae.config.latent_channels, size[1] // 8, size[0] // 8)
        arrays[size] = _write_cache(path, shape, fill)
    return arrays


def cache_masks(config: TrainConfig, records: list[Record], sizes: list[Size], num_classes: int | None) -> MaskCache:
    """Every training mask once at its training size, uint8 class ids (flipped on the fly)."""
    members, rows = bucket_rows(sizes)
    arrays = {}
    for size, chosen in members.items():
        subset = [records[i] for i in chosen]
        path = cache_folder(config) / f"masks-{_cache_key(config, subset, 'masks', [size] * len(subset))}-{size[0]}x{size[1]}.npy"

        def fill(array: np.ndarray, subset=subset, size=size) -> None:
            for row, r in enumerate(subset):
                array[row] = fit_mask(load_mask(r.mask)[0], size, False)

        arrays[size] = _write_cache(path, (len(subset), size[1], size[0]), fill, np.uint8)
        if num_classes is not None:
            top = int(arrays[size].max())
            if top >= num_classes:
                bad = next(r.mask for r, a in zip(subset, arrays[size]) if int(a.max()) >= num_classes)
                raise DataError(f"{bad}: holds class {top} but the control input has {num_classes} channels; "
                                "set conditioning_channels to the scheme's class count (background included)")
    return MaskCache(arrays, rows)


def gather_latents(cache: dict[Size, np.ndarray], rows: list[tuple[Size, int]], indices: list[int],
                   flips: list[int]) -> torch.Tensor:
    """The cached (B, 2, C, h, w) latent mean and std of a batch (one bucket)."""
    return torch.from_numpy(np.stack([cache[rows[i][0]][rows[i][1], f] for i, f in zip(indices, flips)]))


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids padded to the tokenizer's length (77 for CLIP)."""
    return tokenizer(prompts, max_length=tokenizer.model_max_length, padding="max_length", truncation=True,
                     return_tensors="pt").input_ids


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str], device) -> torch.Tensor:
    """Text embeddings (B, 77, D) of ``prompts`` (SDXL: packed, see train/sdxl.py)."""
    if isinstance(text_encoder, sdxl.SDXLTextEncoders):
        return text_encoder.encode(prompts, device)
    return text_encoder(tokenize(tokenizer, prompts).to(device), return_dict=False)[0]


@torch.no_grad()
def cache_text(config: TrainConfig, records: list[Record], tokenizer, text_encoder, device) -> np.ndarray:
    """(N + 1, 77, D) float16: the text embedding of every training prompt, then the empty prompt's."""
    path = cache_folder(config) / f"text-{_cache_key(config, records, 'text')}.npy"
    prompts = [r.prompt for r in records] + [""]

    def fill(array: np.ndarray) -> None:
        for start in range(0, len(prompts), 32):
            chunk = prompts[start:start + 32]
            array[start:start + len(chunk)] = encode_prompts(tokenizer, text_encoder, chunk, device).float().cpu().numpy()

    return _write_cache(path, (len(prompts), *text_shape(tokenizer, text_encoder)), fill)


def text_shape(tokenizer, text_encoder) -> tuple[int, int]:
    """(rows, width) of one prompt's embedding as :func:`encode_prompts` returns it."""
    if isinstance(text_encoder, sdxl.SDXLTextEncoders):
        return text_encoder.shape
    return tokenizer.model_max_length, text_encoder.config.hidden_size


def prompt_dropout(seed: int, step: int, rank: int, batch: int, proportion: float) -> torch.Tensor:
    """Which samples of this step's batch get the empty prompt: drawn anew per sample and step."""
    if proportion <= 0:
        return torch.zeros(batch, dtype=torch.bool)
    generator = torch.Generator().manual_seed((seed * 1_000_003 + step) * 64 + rank)
    return torch.rand(batch, generator=generator) < proportion


# -- validation ---------------------------------------------------------------------------------
@dataclass
class ValidationSet:
    """Fixed inputs of the validation loss and images (built once, identical every time)."""

    masks: torch.Tensor  # (V, H, W) class ids for the images
    prompts: list[str]
    targets: list[Any]  # PIL photos or None
    loss_latents: torch.Tensor | None = None
    loss_text: torch.Tensor | None = None
    loss_control: torch.Tensor | None = None
    loss_noise: torch.Tensor | None = None
    loss_timesteps: torch.Tensor | None = None


def _grid(rows: list[list[Any]], size: int):
    from PIL import Image

    columns = max(len(r) for r in rows)
    grid = Image.new("RGB", (columns * size, len(rows) * size), (255, 255, 255))
    for y, row in enumerate(rows):
        for x, image in enumerate(row):
            if image is not None:
                grid.paste(image.convert("RGB").resize((size, size)), (x * size, y * size))
    return grid


# -- the run -----------------------------------------------------------------------------------
def train(config: TrainConfig, progress: Callable[[int, int | None], None] | None = None,
          should_stop: Callable[[], bool] | None = None, on_details: DetailsFn | None = None) -> TrainResult:
    """Train a ControlNet as ``config`` says; see the module docstring."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler

    output_dir = Path(config.output_dir)
    # Several processes and no CUDA: DDP over gloo on the CPU. (accelerate's own `--cpu` flag
    # spawns several processes only through mpirun; its torchrun launcher with this works anywhere.)
    on_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    # accelerate keeps one state per process and refuses a second Accelerator with another
    # mixed_precision; each run in a process (tests, a notebook) sets its own. The distributed
    # setup (PartialState) is kept.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        cpu=on_cpu,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=None if config.report_to == "none" else config.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    main = accelerator.is_main_process
    rank, world = accelerator.process_index, accelerator.num_processes
    device = accelerator.device
    if world > 1 and should_stop is not None:  # every rank must stop at the same step
        should_stop = agreed_stop(should_stop, accelerator, config.logging_steps)

    log = start_run(accelerator, config, "train_config.json")

    def stage(text: str) -> None:  # what the run is preparing; the Train page shows it until the first step
        log(text)
        if on_details is not None and main:
            on_details({"stage": text})

    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32 is False:
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: free speed on Ampere and later
    set_seed(config.seed + rank)  # distinct noise per process; restored from the checkpoint on resume

    # data
    records = read_records(config.train_data_dir, config.validation_split, config.seed)
    scheme = read_scheme(config.train_data_dir)
    train_records = [r for r in records if r.split == "train"]
    held_out = [r for r in records if r.split != "train"]
    if config.conditioning == "onehot":
        channels = config.conditioning_channels or scheme.num_classes
        if not channels:
            raise ConfigError(f"conditioning=onehot needs the class count: {config.train_data_dir}/manifest.json "
                              "names no legend; set conditioning_channels (background included)")
    else:
        channels = 3
    colours = torch.from_numpy(palette_table(scheme, records).astype(np.int64))
    log(f"data: {len(train_records)} training and {len(held_out)} held-out pairs from {config.train_data_dir} "
        f"(scheme {scheme.name}, conditioning {config.conditioning}, {channels} channels)")

    # models
    stage(f"loading the base model {config.pretrained_model_name_or_path}")
    tokenizer, text_encoder, vae, unet, noise_scheduler, controlnet = load_models(config, channels)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.requires_grad_(False)
    controlnet.train()
    if not config.sd_locked:
        for name, param in unet.named_parameters():
            param.requires_grad_(_is_decoder(name))
        unet.train()
    for model in (unet, controlnet):
        _attention(model, config.enable_sdpa)
        if config.gradient_checkpointing:
            model.enable_gradient_checkpointing()
    memory_format = torch.channels_last if uses_channels_last(config, device) else torch.contiguous_format
    vae.to(device, memory_format=memory_format)
    text_encoder.to(device)
    # SDXL's VAE overflows in fp16 (NaN latents poison training); as in diffusers' own SDXL
    # example, it stays fp32 then and only its latents take the compute dtype
    vae_dtype = torch.float32 if weight_dtype == torch.float16 and sdxl.uses_sdxl(config) else weight_dtype
    vae.to(dtype=vae_dtype)
    if weight_dtype != torch.float32:
        text_encoder.to(dtype=weight_dtype)
    unet.to(device, memory_format=memory_format)
    for param in unet.parameters():  # frozen weights in the compute dtype; trained ones stay fp32
        if not param.requires_grad:
            param.data = param.data.to(weight_dtype)
    controlnet.to(device, memory_format=memory_format)
    if config.torch_compile:
        controlnet.compile()
        unet.compile()
    model = ControlledUNet(controlnet, unet)

    # caches (computed once by the main process; the others read its files)
    started = time.perf_counter()
    sizes = assign_buckets(train_records, config.resolution, config.aspect_buckets)
    _members, bucket_of = bucket_rows(sizes)
    time_ids = sdxl.time_ids_table(train_records, config.resolution, sizes) if model.sdxl else None
    latent_cache = text_cache = mask_cache = None
    onehot_classes = channels if config.conditioning == "onehot" else None
    with accelerator.main_process_first():
        if config.cache_latents:
            stage(f"building the latent cache ({len(train_records)} photos)")
            latent_cache = cache_latents(config, train_records, vae, device, vae_dtype, sizes)
        if config.cache_text_embeddings:
            stage(f"building the text-embedding cache ({len(train_records)} prompts)")
            text_cache = cache_text(config, train_records, tokenizer, text_encoder, device)
        if config.cache_masks:
            mask_cache = cache_masks(config, train_records, sizes, onehot_classes)
    if text_cache is not None:
        empty_text = torch.from_numpy(np.array(text_cache[len(train_records)])).to(device, weight_dtype)
    else:
        empty_text = encode_prompts(tokenizer, text_encoder, [""], device)[0].to(weight_dtype)
    log(f"caches ready in {time.perf_counter() - started:.1f} s ({cache_folder(config)}): "
        f"latents {'on' if latent_cache is not None else 'off'}, text {'on' if text_cache is not None else 'off'}, "
        f"masks {'on' if mask_cache is not None else 'off'}; {len(_members)} aspect bucket(s) "
        + ", ".join(f"{w}x{h}: {len(m)}" for (w, h), m in sorted(_members.items())))

    # validation inputs, fixed once
    stage("preparing the validation inputs")
    validation = _validation_set(config, held_out or train_records[:1], tokenizer, text_encoder, vae,
                                 device, weight_dtype, channels, colours, log, vae_dtype) if main else None
    if text_cache is not None:
        text_encoder.to("cpu")  # embeddings are cached; keep the device memory for training
    scaling = vae.config.scaling_factor

    # optimisation
    params = [p for p in model.parameters() if p.requires_grad]
    lr = config.learning_rate * (config.effective_batch * world if config.scale_lr else 1)
    optimizer = make_optimizer(config, params, lr, device)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=config.lr_warmup_steps * world,
                                 num_training_steps=config.max_train_steps * world,
                                 num_cycles=config.lr_num_cycles, power=config.lr_power)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)

    def save_hook(models, weights, folder):
        if main:
            for m in models:
                inner = accelerator.unwrap_model(m)
                inner.controlnet.save_pretrained(Path(folder) / "controlnet")
                if not config.sd_locked:
                    from safetensors.torch import save_file

                    save_file({k: v.contiguous() for k, v in inner.unet.state_dict().items() if _is_decoder(k)},
                              str(Path(folder) / "unet_decoder.safetensors"))
        weights.clear()  # the ControlNet is saved in diffusers' format above, not as a second copy

    def load_hook(models, folder):
        from diffusers import ControlNetModel

        while models:
            inner = accelerator.unwrap_model(models.pop())
            saved = ControlNetModel.from_pretrained(Path(folder) / "controlnet")
            inner.controlnet.load_state_dict(saved.state_dict())
            decoder = Path(folder) / "unet_decoder.safetensors"
            if not config.sd_locked and decoder.is_file():
                from safetensors.torch import load_file

                inner.unet.load_state_dict(load_file(str(decoder)), strict=False)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)

    dataset = ExportDataset(train_records, config.resolution, config.seed, config.random_flip,
                            load_pixels=latent_cache is None, num_classes=onehot_classes, sizes=sizes,
                            masks=mask_cache)
    sampler = BucketBatchSampler(sizes, config.train_batch_size, config.seed, rank, world)
    workers = config.dataloader_num_workers
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                         persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                                         # its own generator: starting an epoch must not draw from the
                                         # global RNG, or a resumed run's noise would differ
                                         generator=torch.Generator().manual_seed(config.seed))

    # resume
    metrics_path = output_dir / METRICS_FILE
    ids_path = output_dir / "sample_ids" / f"rank-{rank}.jsonl"
    steps = Steps(accelerator, config, resume_state(accelerator, config, metrics_path, log), progress, should_stop)
    if config.record_sample_ids:
        ids_path.parent.mkdir(parents=True, exist_ok=True)
        _truncate_jsonl(ids_path, steps.global_step)
    accelerator.wait_for_everyone()
    if config.report_to != "none":
        accelerator.init_trackers("controlnet", config={k: v for k, v in config.model_dump(mode="json").items()
                                                        if isinstance(v, (int, float, str, bool))})

    last_checkpoint = list_checkpoints(output_dir)[-1][1] if list_checkpoints(output_dir) else None
    grids: list[Path] = []

    def details() -> None:
        if on_details is not None and main:
            on_details({**run_details(output_dir, metrics_path, last_checkpoint, steps.global_step, config),
                        "validation_dir": str(output_dir / VALIDATION_DIR)})

    def checkpoint() -> Path:
        nonlocal last_checkpoint
        step = steps.global_step
        folder = save_checkpoint(accelerator, output_dir, step, config.checkpoints_total_limit, {
            "micro_batches": step * config.gradient_accumulation_steps,
            "batches_per_epoch": sampler.batches_per_epoch, "config": config.model_dump(mode="json")})
        last_checkpoint = folder
        log(f"step {step}: saved {folder}")
        details()
        if config.evaluate_segmenter and main:  # opt-in: the run's mIoU curve grows as checkpoints are judged
            from workbench.evaluate import evaluate_checkpoint_job

            log(f"step {step}: {evaluate_checkpoint_job(folder, config)}")
        return folder

    metrics = MetricsLog(accelerator, metrics_path, to_trackers=True)
    flush = metrics.flush

    # the loop
    step_loss = torch.zeros((), device=device)
    step_samples = 0
    first_step_at: float | None = time.perf_counter()
    empty_count = 0
    details()
    stage("running the first step")
    log(f"training {config.max_train_steps} steps from step {steps.global_step}: batch {config.train_batch_size} x "
        f"{config.gradient_accumulation_steps} accumulation x {world} processes")
    for epoch, batch in steps.batches(sampler, dataset, loader):
        micro = steps.micro
        indices = batch["index"].tolist()
        with accelerator.accumulate(model):
            bsz = len(indices)
            if latent_cache is not None:
                stats = gather_latents(latent_cache, bucket_of, indices, batch["flip"].long().tolist())
                stats = stats.to(device, non_blocking=True).float()
                # noise drawn by shape, as the VAE's sample() draws it: randn_like follows a tensor's
                # strides, and a strided draw uses the generator differently (cached and uncached
                # runs would then differ)
                latents = stats[:, 0] + stats[:, 1] * torch.randn(stats[:, 0].shape, device=device)
            else:
                pixels = batch["pixel_values"].to(device, vae_dtype, non_blocking=True)
                with torch.no_grad():
                    latents = vae.encode(pixels.contiguous(memory_format=memory_format)).latent_dist.sample()
            latents = latents.float() * scaling
            drop = prompt_dropout(config.seed, micro, rank, bsz, config.proportion_empty_prompts)
            empty_count += int(drop.sum())
            if text_cache is not None:  # the cache's last row is the empty prompt
                rows = [len(train_records) if d else i for i, d in zip(indices, drop.tolist())]
                text = torch.from_numpy(text_cache[rows]).to(device, non_blocking=True).to(weight_dtype)
            else:
                prompts = [train_records[i].prompt for i in indices]
                with torch.no_grad():
                    text = encode_prompts(tokenizer, text_encoder, prompts, device)
                text = torch.where(drop.to(device)[:, None, None], empty_text.expand_as(text), text.to(weight_dtype))
            control = control_input(batch["mask"].to(device, non_blocking=True).long(), config.conditioning,
                                    channels, colours).contiguous(memory_format=memory_format)
            noise = torch.randn(latents.shape, device=device)  # by shape: see above
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), device=device)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps).contiguous(memory_format=memory_format)
            prediction = model(noisy, timesteps, text, control.to(controlnet.dtype),
                               sdxl.batch_time_ids(time_ids, indices, device))
            target = noise if noise_scheduler.config.prediction_type == "epsilon" else \
                noise_scheduler.get_velocity(latents, noise, timesteps)
            loss = F.mse_loss(prediction.float(), target.float())
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        step_loss += loss.detach() / config.gradient_accumulation_steps
        step_samples += bsz
        if config.record_sample_ids:
            with ids_path.open("a") as out:
                out.write(json.dumps({"step": steps.global_step + 1, "micro": micro,
                                      "ids": [train_records[i].index for i in indices]}) + "\n")
        if not steps.stepped():
            continue

        if first_step_at is not None:  # the first step holds torch.compile's compilation: reported apart
            log(f"first step: {time.perf_counter() - first_step_at:.1f} s"
                + (" (torch.compile compiles here)" if config.torch_compile else ""))
            first_step_at = None
        record = metrics.add({"step": steps.global_step, "lr": lr_scheduler.get_last_lr()[0], "epoch": epoch,
                              "empty_prompts": empty_count, "time": round(time.time(), 3)}, step_loss, step_samples)
        step_loss = torch.zeros((), device=device)
        step_samples = 0
        empty_count = 0
        stop = steps.report()
        if steps.global_step % config.validation_steps == 0 or steps.last:
            val = _validate(config, accelerator, model, validation, vae, tokenizer, text_encoder, noise_scheduler,
                            empty_text, colours, weight_dtype, steps.global_step, scaling)
            if val is not None:
                record["val_loss"], grid = val
                if grid is not None:
                    grids.append(grid)
        if steps.end(stop, flush, checkpoint):
            break

    flush()
    global_step, stopped = steps.global_step, steps.stopped
    if main:
        final = accelerator.unwrap_model(model)
        final.controlnet.save_pretrained(output_dir)
        if not config.sd_locked:
            save_unet(config, final.unet, output_dir / "unet", exact_frozen=weight_dtype == torch.float32)
        log(f"{'stopped' if stopped else 'finished'} at step {global_step}; ControlNet saved in {output_dir}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    result = TrainResult(output_dir, global_step, last_checkpoint, metrics_path, stopped, grids)
    if stopped:
        raise StopRequested(f"stopped at step {global_step} on request; resume from {last_checkpoint}")
    return result


def save_unet(config: TrainConfig, unet: torch.nn.Module, folder: Path, exact_frozen: bool) -> None:
    """The UNet with its trained decoder as a diffusers folder, every weight in full precision.

    Training holds the frozen weights in the compute dtype (fp16/bf16); unless they are exact
    (``exact_frozen``), they are taken again from the base model, so the saved encoder is the base's.
    """
    if exact_frozen:
        unet.save_pretrained(folder)
        return
    from diffusers import UNet2DConditionModel

    full = UNet2DConditionModel.from_pretrained(base_model(config), subfolder="unet",
                                                revision=config.revision, variant=config.variant)
    full.to(torch.float32)  # a base saved as an fp16 variant must not round the trained decoder
    full.load_state_dict({k: v.float() for k, v in unet.state_dict().items() if _is_decoder(k)}, strict=False)
    full.save_pretrained(folder)


def _validation_set(config, records, tokenizer, text_encoder, vae, device, dtype, channels, colours, log,
                    vae_dtype) -> ValidationSet | None:
    from PIL import Image

    if config.validation_image:
        masks = [fit_mask(load_mask(Path(p))[0], config.resolution, False) for p in config.validation_image]
        prompts = list(config.validation_prompt or [""])
        prompts = prompts * len(masks) if len(prompts) == 1 else prompts
        targets = [None] * len(masks)
    else:
        chosen = records[: config.num_validation_images]
        masks, targets = [], []
        for r in chosen:
            from train.data import prepare_pair

            with Image.open(r.photo) as photo:
                pixels, mask = prepare_pair(photo, load_mask(r.mask)[0], config.resolution, False)
            masks.append(mask)
            targets.append(Image.fromarray(pixels))
        prompts = [r.prompt for r in chosen]
    val = ValidationSet(torch.from_numpy(np.stack(masks).astype(np.int64)) if masks else torch.zeros(0), prompts, targets)

    # the loss: fixed samples, noise and timesteps
    chosen = records[: config.validation_loss_samples]
    if chosen:
        from train.data import prepare_pair

        pixels, masks_l = [], []
        for r in chosen:
            with Image.open(r.photo) as photo:
                p, m = prepare_pair(photo, load_mask(r.mask)[0], config.resolution, False)
            pixels.append(torch.from_numpy(p).permute(2, 0, 1).float().div(127.5).sub(1))
            masks_l.append(torch.from_numpy(m.astype(np.int64)))
        with torch.no_grad():
            latents = vae.encode(torch.stack(pixels).to(device, vae_dtype)).latent_dist.mean.float()
        generator = torch.Generator().manual_seed(config.seed + 12345)
        val.loss_latents = latents * vae.config.scaling_factor
        val.loss_text = encode_prompts(tokenizer, text_encoder, [r.prompt for r in chosen], device).to(dtype)
        val.loss_control = control_input(torch.stack(masks_l).to(device), config.conditioning, channels, colours)
        val.loss_noise = torch.randn(latents.shape, generator=generator).to(device)
        n = len(chosen)
        val.loss_timesteps = torch.linspace(0, 999, n).round().long().to(device) if n > 1 else torch.tensor([500], device=device)
    if records and records[0].split == "train":
        log("warning: the export holds no held-out images; validation uses a training image")
    return val


@torch.no_grad()
def _validate(config, accelerator, model, val: ValidationSet | None, vae, tokenizer, text_encoder, noise_scheduler,
              empty_text, colours, dtype, step, scaling) -> tuple[float | None, Path | None] | None:
    """Validation loss and image grid at ``step`` (main process; the others wait)."""
    result = None
    if accelerator.is_main_process and val is not None:
        inner = accelerator.unwrap_model(model)
        was_training = inner.controlnet.training
        inner.eval()
        loss_value = None
        with accelerator.autocast():
            if val.loss_latents is not None:
                timesteps = (val.loss_timesteps.float() / 999 * (noise_scheduler.config.num_train_timesteps - 1)).long()
                noisy = noise_scheduler.add_noise(val.loss_latents, val.loss_noise, timesteps)
                prediction = inner(noisy, timesteps, val.loss_text, val.loss_control.to(inner.controlnet.dtype))
                target = val.loss_noise if noise_scheduler.config.prediction_type == "epsilon" else \
                    noise_scheduler.get_velocity(val.loss_latents, val.loss_noise, timesteps)
                loss_value = F.mse_loss(prediction.float(), target.float()).item()
        grid_path = None
        if len(val.prompts) and config.num_validation_images + len(config.validation_image or []) > 0:
            grid_path = _validation_images(config, accelerator, inner, val, vae, tokenizer, text_encoder,
                                           noise_scheduler, empty_text, colours, dtype, step, loss_value)
        inner.train(was_training)
        if config.sd_locked:
            inner.unet.eval()
        result = (loss_value, grid_path)
    accelerator.wait_for_everyone()
    return result


def _validation_images(config, accelerator, inner, val, vae, tokenizer, text_encoder, noise_scheduler,
                       empty_text, colours, dtype, step, loss_value) -> Path:
    from diffusers import StableDiffusionControlNetPipeline, UniPCMultistepScheduler
    from PIL import Image

    device = accelerator.device
    scheduler = UniPCMultistepScheduler.from_config(noise_scheduler.config)
    if inner.sdxl:
        pipe = sdxl.validation_pipeline(vae, inner.unet, inner.controlnet, scheduler)
    else:
        pipe = StableDiffusionControlNetPipeline(
            vae=vae, text_encoder=None, tokenizer=tokenizer, unet=inner.unet, controlnet=inner.controlnet,
            scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    channels = inner.controlnet.config.conditioning_channels
    rows = []
    for i, prompt in enumerate(val.prompts):
        mask = val.masks[i:i + 1].to(device)
        control = control_input(mask, config.conditioning, channels, colours)
        if text_encoder.device != device:
            text_encoder.to(device)
            text = encode_prompts(tokenizer, text_encoder, [prompt], device).to(dtype)
            text_encoder.to("cpu")
        else:
            text = encode_prompts(tokenizer, text_encoder, [prompt], device).to(dtype)
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        prompts = sdxl.prompt_arguments(text, empty_text, inner.unet.config) if inner.sdxl else \
            dict(prompt_embeds=text, negative_prompt_embeds=empty_text[None])
        with accelerator.autocast():
            image = pipe(**prompts, image=control,
                         height=config.resolution, width=config.resolution,
                         num_inference_steps=config.validation_inference_steps, generator=generator).images[0]
        shown = Image.fromarray(colours[val.masks[i]].numpy().astype(np.uint8))
        rows.append([shown, image, val.targets[i]])
    folder = Path(config.output_dir) / VALIDATION_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:07d}.png"
    _grid(rows, max(config.resolution, 64)).save(path)
    (folder / f"step-{step:07d}.json").write_text(json.dumps(
        {"step": step, "prompts": val.prompts, "val_loss": loss_value,
         "columns": ["mask", "generated", "target"]}, indent=2))
    return path


# -- entry point ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run the trainer from the command line; returns the exit code."""
    from workbench.processes import watch_parent_from_env

    watch_parent_from_env()  # a rank launched by a job ends when the job's process is killed
    return run_script(argv, "Train a ControlNet on a workbench export.", "train/config.py", load_config,
                      lambda config: train(config, should_stop=stop_file_requested(config.output_dir)))


if __name__ == "__main__":
    sys.exit(main())
