"""Generation time per image: the workbench's path against diffusers' plain pipeline call.

    python bench/generate.py [--repeats 7] [--steps 20] [--resolution 64]
    python bench/generate.py --gpu            # full SD 1.5 architecture, fp16, 512 px, 20 steps

Both contestants use the same pipeline object (base model, ControlNets, UniPC scheduler), the same
control input tensors, prompt, seed and settings:

- ``plain``: ``pipe(prompt=..., image=control, ...)``, the call a diffusers user writes;
- ``workbench``: ``workbench.generate.generate_one``, which makes the same call and then saves the
  PNG under ``generations/`` and records its provenance row in the store (SQLite, as by default).

Each is warmed up once, then they alternate (which one goes first alternates too) for
``--repeats`` rounds; the figures are medians, the ratio is workbench / plain (the target is at
most 1.05: bookkeeping, not cost). Runs with one ControlNet (the mask's) and with two (mask +
a second ControlNet, as with pose control: diffusers' multi-ControlNet).

Without ``--gpu`` the model is the tiny random Stable Diffusion of ``workbench/tiny/sd.py`` on the
CPU, which measures the overhead against a small compute; ``--gpu`` builds the full SD 1.5
architecture (UNet 320/640/1280/1280, CLIP ViT-L text encoder, SD VAE, ControlNets made from the
UNet) from configs with random weights, in half precision on the first CUDA device.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = "a full-body photo of a person wearing a red a-line dress and white sneakers"


def sd15_pipeline(tokenizer_dir: Path, device, dtype):
    """Stable Diffusion 1.5's architecture with random weights (its published configs), on ``device``."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from workbench.tiny.sd import sd15_scheduler, write_tiny_tokenizer

    torch.manual_seed(0)
    # The character tokenizer stands in for CLIP's BPE; the text encoder keeps CLIP's full vocabulary
    # and 77 positions, so the encoder's cost is the real one.
    tokenizer = CLIPTokenizer.from_pretrained(str(write_tiny_tokenizer(tokenizer_dir)), model_max_length=77)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            max_position_embeddings=77, vocab_size=49408, projection_dim=768, hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=sd15_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    return pipe.to(device, dtype)


def figure_mask(size: int):
    """A class-id mask of a standing figure: upper body, lower body, feet (cloth-seg-like values)."""
    import numpy as np

    mask = np.zeros((size, size), np.uint8)
    left, right = size * 3 // 8, size * 5 // 8
    mask[size // 6:size // 2, left:right] = 1
    mask[size // 2:size * 5 // 6, left:right] = 2
    mask[size * 5 // 6:size * 11 // 12, left:right] = 3
    return mask


def contestants(engine, data_dir: Path, base, n_controlnets: int, args, device, dtype):
    """``(plain, workbench)``: two zero-argument callables producing one image each."""
    import numpy as np
    import torch
    from diffusers import ControlNetModel

    from workbench import generate as gen
    from workbench.palette import FINE_PALETTE

    with torch.device(device):  # built where it runs: no host-side initialisation of 361M parameters
        controlnets = [ControlNetModel.from_unet(base.unet).to(device, dtype) for _ in range(n_controlnets)]
    request = gen.GenerateRequest(
        base_model="bench: random weights", controlnets=["bench"] * n_controlnets,
        mask={"kind": "file", "path": "bench"}, prompt=PROMPT, seeds=[0], steps=args.steps, guidance=7.5,
        conditioning_scale=1.0, scheduler="unipc", resolution=args.resolution, device=str(device))
    info = gen.ControlNetInfo(path=Path("bench-controlnet"), label="bench", step=None, channels=3,
                              conditioning="palette", scheme="bench")
    mask = gen.ConditioningMask(figure_mask(args.resolution), np.array(FINE_PALETTE, np.uint8).reshape(256, 3),
                                "bench", None, {"kind": "bench"})
    control = gen.control_tensor(mask, info)
    prepared = gen.assemble(request, info, mask, base, controlnets, [control] * n_controlnets,
                            [1.0] * n_controlnets, args.resolution, data_dir)
    images = prepared.controls[0] if n_controlnets == 1 else prepared.controls
    scales = 1.0 if n_controlnets == 1 else [1.0] * n_controlnets

    def plain():
        generator = torch.Generator(device="cpu").manual_seed(0)
        return prepared.pipe(prompt=PROMPT, image=images, controlnet_conditioning_scale=scales,
                             height=args.resolution, width=args.resolution, num_inference_steps=args.steps,
                             guidance_scale=7.5, generator=generator).images[0]

    def workbench():
        return gen.generate_one(engine, prepared, request, 0, "bench", data_dir)

    return plain, workbench


def timed(fn, device) -> float:
    """Seconds one call takes (the device drained before and after)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def main() -> None:
    """Build the model once, time both contestants with one and two ControlNets, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="Full SD 1.5 architecture, fp16, on CUDA.")
    parser.add_argument("--repeats", type=int, default=7, help="Timed rounds per contestant (after one warm-up).")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=None, help="Default 512 with --gpu, else 64.")
    parser.add_argument("--controlnets", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: with the tiny model, threads mostly wait on each other; "
                             "on a busy two-core machine two threads made a generation 12x slower).")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    from db.engine import make_engine

    if args.gpu and not torch.cuda.is_available():
        sys.exit("--gpu needs a CUDA device; run without --gpu for the tiny model on the CPU")
    device = torch.device("cuda" if args.gpu else "cpu")
    dtype = torch.float16 if args.gpu else torch.float32
    args.resolution = args.resolution or (512 if args.gpu else 64)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        engine = make_engine(f"sqlite:///{(work / 'bench.db').as_posix()}")
        started = time.perf_counter()
        if args.gpu:
            base = sd15_pipeline(work / "tokenizer", device, dtype)
            name = f"SD 1.5 architecture (random weights, fp16) on {torch.cuda.get_device_name(device)}"
        else:
            from workbench.tiny.sd import tiny_sd_pipeline

            base = tiny_sd_pipeline(work / "tokenizer").to(device, dtype)
            name = f"tiny SD (random weights, fp32) on CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
        print(f"{name}; built in {time.perf_counter() - started:.1f}s")
        print(f"{args.resolution} px, {args.steps} UniPC steps, guidance 7.5, "
              f"{args.repeats} interleaved rounds, medians")
        print(f"{'ControlNets':<12}{'plain s/img':>13}{'workbench s/img':>17}{'ratio':>8}  target <= 1.05")
        for n in args.controlnets:
            plain, workbench = contestants(engine, work / "data", base, n, args, device, dtype)
            timed(plain, device)
            timed(workbench, device)
            times: dict[str, list[float]] = {"plain": [], "workbench": []}
            for round_ in range(args.repeats):
                order = (("plain", plain), ("workbench", workbench))
                for label, fn in (order if round_ % 2 == 0 else order[::-1]):
                    times[label].append(timed(fn, device))
            p, w = statistics.median(times["plain"]), statistics.median(times["workbench"])
            verdict = "ok" if w / p <= 1.05 else "OVER"
            print(f"{n:<12}{p:>13.3f}{w:>17.3f}{w / p:>7.3f}x  {verdict}")
            if device.type == "cuda":
                print(f"{'':<12}peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
        engine.dispose()


if __name__ == "__main__":
    main()
