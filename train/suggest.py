"""Suggested settings for one GPU: micro-batch from its memory, accumulation to a target effective batch.

Why these defaults ("sudden convergence"): a ControlNet does not improve smoothly. For thousands
of steps its images ignore the mask, then within a few hundred steps it starts to follow it;
at batch 4 that happens somewhere around 3k-7k optimisation steps. What moves the moment is
roughly a number of optimisation steps, and what a step averages over decides how good the
model is once it gets there. So with a fixed GPU budget it is better to spend it on a larger
effective batch (gradient accumulation: each of the ~3k-7k steps sees more samples) than on
many more small steps after the jump. The helper keeps the micro-batch to what fits in memory,
reaches the target effective batch (default 64; worth going up to about 256 on a big dataset)
through accumulation, and proposes enough steps to pass the far end of the window.

The memory table is a rule of thumb for SD 1.5 at 512 px with the UNet locked, measured shapes
scaled by pixel count; it errs on the safe side. Check the ``memory_mib`` column of
``metrics.jsonl`` after the first steps and adjust.

SDXL (``suggest_settings(..., sdxl=True)``, 1024 px by default) is counted from its parts: the frozen UNet (2.6B
parameters) in the compute dtype, the ControlNet (1.25B) trained in fp32 with as much again in
gradients, AdamW's two moments (a quarter of that with 8-bit AdamW), the two text encoders and
the VAE unless their outputs are cached. On a 24 GB card that leaves room for batch 1-2 only with
cached latents and text embeddings, gradient checkpointing and 8-bit AdamW together (about
17.5 GiB before the first sample); the suggestion turns those on in that order until it fits.
The weights' shares follow from the parameter counts; the per-sample activations are estimates
not measured on a GPU here, so check ``memory_mib`` after the first steps as for SD.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

# Approximate GiB per sample at 512 px (activations + ControlNet grads) and fixed GiB (weights,
# optimizer, CUDA context), by (mixed precision, gradient checkpointing).
PER_SAMPLE_GIB = {("no", False): 4.6, ("no", True): 1.6, ("fp16", False): 2.4, ("fp16", True): 0.9,
                  ("bf16", False): 2.4, ("bf16", True): 0.9}
FIXED_GIB = {"no": 9.0, "fp16": 6.5, "bf16": 6.5}
EIGHT_BIT_ADAM_SAVES_GIB = 2.0
# SDXL at 1024 px, GiB (see the module docstring)
SDXL_UNET_GIB = {"no": 9.6, "fp16": 4.8, "bf16": 4.8}
SDXL_CONTROLNET_GIB = 9.4  # fp32 weights and their gradients
SDXL_ADAM_GIB = {False: 9.3, True: 2.3}
SDXL_TEXT_ENCODERS_GIB = {"no": 3.1, "fp16": 1.6, "bf16": 1.6}
SDXL_VAE_ENCODE_GIB = 3.0  # weights plus the activations of encoding a batch at 1024 px
SDXL_CONTEXT_GIB = 1.0
SDXL_PER_SAMPLE_GIB = {("no", False): 14.0, ("no", True): 4.0, ("fp16", False): 7.0, ("fp16", True): 2.0,
                       ("bf16", False): 7.0, ("bf16", True): 2.0}
CONVERGENCE_STEPS = 7_000  # the far end of the "3k-7k steps" window
MAX_EFFECTIVE_BATCH = 256


@dataclass(frozen=True)
class Suggestion:
    """Settings proposed for a GPU and what they add up to."""

    train_batch_size: int
    gradient_accumulation_steps: int
    effective_batch: int
    max_train_steps: int
    mixed_precision: str
    gradient_checkpointing: bool
    use_8bit_adam: bool
    estimated_memory_gib: float
    note: str
    cache_latents: bool = False
    cache_text_embeddings: bool = False

    def as_overrides(self) -> dict[str, object]:
        """The settings as config keys (for ``TrainConfig``); caches only where the memory needs them."""
        data = asdict(self)
        for key in ("effective_batch", "estimated_memory_gib", "note"):
            data.pop(key)
        for key in ("cache_latents", "cache_text_embeddings"):
            if not data[key]:
                data.pop(key)  # the config's own default stands
        return data


def _memory(batch: int, resolution: int, precision: str, checkpointing: bool, eight_bit: bool) -> float:
    scale = (resolution / 512) ** 2
    fixed = FIXED_GIB[precision] - (EIGHT_BIT_ADAM_SAVES_GIB if eight_bit else 0)
    return fixed + batch * PER_SAMPLE_GIB[(precision, checkpointing)] * scale


def _first_fit(memory: Callable[..., float], options: list[tuple[bool, bool]],
               enough: Callable[[int, tuple[bool, bool]], bool], gpu_memory_gib: float, max_batch: int,
               resolution: int, precision: str) -> tuple[int, bool, bool] | None:
    """(batch, checkpointing, 8-bit) of the first option (checkpointing, 8-bit) whose largest micro-batch
    fitting in 90% of the GPU is ``enough``; None when none is."""
    for checkpointing, eight_bit in options:
        fits = next((b for b in range(max_batch, 0, -1)
                     if memory(b, resolution, precision, checkpointing, eight_bit) <= 0.9 * gpu_memory_gib), 0)
        if fits and enough(fits, (checkpointing, eight_bit)):
            return fits, checkpointing, eight_bit
    return None


def _sdxl_memory(batch: int, resolution: int, precision: str, checkpointing: bool, eight_bit: bool) -> float:
    """GiB for SDXL with cached latents and text embeddings (the only way it fits below 48 GB)."""
    fixed = SDXL_UNET_GIB[precision] + SDXL_CONTROLNET_GIB + SDXL_ADAM_GIB[eight_bit] + SDXL_CONTEXT_GIB
    return fixed + batch * SDXL_PER_SAMPLE_GIB[(precision, checkpointing)] * (resolution / 1024) ** 2


def _sdxl_suggestion(gpu_memory_gib: float, target: int, resolution: int, processes: int, precision: str,
                     have_bitsandbytes: bool, max_batch: int) -> Suggestion:
    """SDXL: cached latents and text embeddings, then gradient checkpointing, then 8-bit AdamW, until it fits."""
    chosen = _first_fit(_sdxl_memory, [(False, False), (True, False), (True, True)], lambda _b, _o: True,
                        gpu_memory_gib, max_batch, resolution, precision)
    note = ""
    if chosen is None:
        chosen = (1, True, True)
        note = (f"SDXL does not fit in {gpu_memory_gib:g} GiB even at batch 1 with cached latents and text "
                f"embeddings, gradient checkpointing and 8-bit AdamW (about "
                f"{_sdxl_memory(1, resolution, precision, True, True):.0f} GiB at {resolution} px); "
                "use a larger GPU or a lower resolution")
    batch, checkpointing, eight_bit = chosen
    batch = 1 << (batch.bit_length() - 1)
    accumulation = max(1, round(target / (batch * processes)))
    effective = batch * processes * accumulation
    memory = _sdxl_memory(batch, resolution, precision, checkpointing, eight_bit)
    if not note:
        levers = ["cached latents and text embeddings"] + (["gradient checkpointing"] if checkpointing else []) + \
            (["8-bit AdamW"] if eight_bit else [])
        note = (f"SDXL at {resolution} px: micro-batch {batch} fits in {gpu_memory_gib:g} GiB (about {memory:.1f} GiB) "
                f"with {', '.join(levers)}; {accumulation} accumulation steps give an effective batch of {effective}.")
        if eight_bit and not have_bitsandbytes:
            note += " 8-bit AdamW needs bitsandbytes: `pip install bitsandbytes`."
    return Suggestion(batch, accumulation, effective, CONVERGENCE_STEPS, precision, checkpointing, eight_bit,
                      round(memory, 1), note, cache_latents=True, cache_text_embeddings=True)


def suggest_settings(gpu_memory_gib: float, target_effective_batch: int = 64, resolution: int | None = None,
                     processes: int = 1, bf16_supported: bool = True, have_bitsandbytes: bool = False,
                     max_batch: int = 16, sdxl: bool = False) -> Suggestion:
    """Micro-batch, accumulation and step count for ``processes`` GPUs of ``gpu_memory_gib`` each.

    ``resolution`` defaults to 512 (SD) or 1024 (``sdxl``)."""
    target = max(1, min(target_effective_batch, MAX_EFFECTIVE_BATCH))
    precision = "bf16" if bf16_supported else "fp16"
    resolution = resolution or (1024 if sdxl else 512)
    if gpu_memory_gib <= 0:
        accumulation = max(1, target // max(1, processes))
        return Suggestion(1, accumulation, accumulation * processes, CONVERGENCE_STEPS, "no", False, False, 0.0,
                          "no GPU found: these settings only make sense for a tiny model or a smoke test",
                          cache_latents=sdxl, cache_text_embeddings=sdxl)
    if sdxl:
        return _sdxl_suggestion(gpu_memory_gib, target, resolution, processes, precision, have_bitsandbytes, max_batch)
    options = [(False, False), (True, False), (True, True)] if have_bitsandbytes else [(False, False), (True, False)]
    chosen = _first_fit(_memory, options, lambda batch, option: batch >= min(4, target) or option == options[-1],
                        gpu_memory_gib, max_batch, resolution, precision)
    note = ""
    if chosen is None:
        chosen = (1, True, have_bitsandbytes)
        note = (f"{gpu_memory_gib:g} GiB looks too small even for batch 1 at {resolution} px; try a lower "
                "resolution or cached latents and text embeddings")
    batch, checkpointing, eight_bit = chosen
    batch = 1 << (batch.bit_length() - 1)  # a power of two divides the usual targets evenly
    per_step = batch * processes
    accumulation = max(1, round(target / per_step))
    effective = per_step * accumulation
    steps = CONVERGENCE_STEPS
    if not note:
        note = (f"micro-batch {batch} fits in {gpu_memory_gib:g} GiB; {accumulation} accumulation steps give an "
                f"effective batch of {effective}. ControlNets converge suddenly (about 3k-7k steps at batch 4); the "
                f"larger effective batch makes the model it reaches better; {steps} steps pass that window.")
    return Suggestion(batch, accumulation, effective, steps, precision, checkpointing, eight_bit,
                      round(_memory(batch, resolution, precision, checkpointing, eight_bit), 1), note)


def detect_gpu_memory_gib() -> float:
    """Memory of the first CUDA GPU in GiB (0 when there is none)."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / 2**30
    except Exception:  # a broken driver is "no GPU" for a suggestion
        pass
    return 0.0


def count_gpus() -> int:
    """CUDA GPUs this process sees (``CUDA_VISIBLE_DEVICES`` applies; 0 when there is none)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken driver is "no GPU" here too
        return 0
