"""Training speed: the workbench trainer against a plain loop written as diffusers' example does it.

    python bench/train.py [--steps 30] [--batch 4] [--resolution 64] [--images 32]

Same tiny Stable Diffusion (random weights, built from configs), same export folder, same
batch, one run. Each variant runs in its own process so that its peak memory is its own:

- ``plain``: the diffusers example's loop: PNG decode and torchvision transforms per sample
  (masks resized bilinearly, as it does), VAE encode and text encode every step, AdamW,
  ``loss.detach().item()`` every step;
- ``trainer``: ``train/controlnet.py`` without caches;
- ``trainer+cache``: ``train/controlnet.py`` with cached latent distributions and text embeddings.

Samples/s are measured after a warm-up of a few steps. On a CPU the tiny model measures overheads
(data loading, encoders, host syncs), not a GPU's arithmetic; see the issue for GPU targets.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WARMUP = 5


def peak_memory_mib() -> float:
    """Peak GPU memory when on a GPU, else this process's peak resident memory."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plain_loop(sd: Path, export: Path, steps: int, batch: int, resolution: int) -> dict:
    """The diffusers example's training loop, reduced to what a step does."""
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from PIL import Image
    from torchvision import transforms
    from transformers import CLIPTextModel, CLIPTokenizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = CLIPTokenizer.from_pretrained(sd, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(sd, subfolder="text_encoder").to(device)
    vae = AutoencoderKL.from_pretrained(sd, subfolder="vae").to(device)
    unet = UNet2DConditionModel.from_pretrained(sd, subfolder="unet").to(device)
    scheduler = DDPMScheduler.from_pretrained(sd, subfolder="scheduler")
    controlnet = ControlNetModel.from_unet(unet).to(device)
    for m in (vae, text_encoder, unet):
        m.requires_grad_(False)
    controlnet.train()
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=1e-5)
    rows = [json.loads(x) for x in (export / "prompt.json").read_text().splitlines()]
    image_tf = transforms.Compose([transforms.Resize(resolution), transforms.CenterCrop(resolution),
                                   transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    cond_tf = transforms.Compose([transforms.Resize(resolution), transforms.CenterCrop(resolution),
                                  transforms.ToTensor()])

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            row = rows[i]
            ids = tokenizer(row["prompt"], max_length=tokenizer.model_max_length, padding="max_length",
                            truncation=True, return_tensors="pt").input_ids[0]
            return {"pixel_values": image_tf(Image.open(export / row["target"]).convert("RGB")),
                    "conditioning_pixel_values": cond_tf(Image.open(export / row["source"]).convert("RGB")),
                    "input_ids": ids}

    loader = torch.utils.data.DataLoader(Data(), batch_size=batch, shuffle=True, drop_last=True)
    done, started = 0, None
    while done < steps:
        for b in loader:
            if done == WARMUP:
                started = time.perf_counter()
            latents = vae.encode(b["pixel_values"].to(device)).latent_dist.sample() * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=device).long()
            noisy = scheduler.add_noise(latents, noise, t)
            text = text_encoder(b["input_ids"].to(device), return_dict=False)[0]
            down, mid = controlnet(noisy, t, encoder_hidden_states=text,
                                   controlnet_cond=b["conditioning_pixel_values"].to(device), return_dict=False)
            pred = unet(noisy, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)
            loss.detach().item()  # the example logs the loss of every step
            done += 1
            if done >= steps:
                break
    elapsed = time.perf_counter() - started
    return {"samples_per_s": (steps - WARMUP) * batch / elapsed, "peak_memory_mib": peak_memory_mib()}


def trainer(sd: Path, export: Path, out: Path, steps: int, batch: int, resolution: int, cached: bool) -> dict:
    """``train/controlnet.py`` on the same data; rate from its own per-step clock after warm-up."""
    from train.config import load_config
    from train.controlnet import train

    config = load_config(None, dict(
        pretrained_model_name_or_path=str(sd), train_data_dir=str(export), output_dir=str(out),
        resolution=resolution, train_batch_size=batch, max_train_steps=steps, checkpointing_steps=10**6,
        validation_steps=10**6, num_validation_images=0, validation_loss_samples=0, logging_steps=10,
        report_to="none", proportion_empty_prompts=0.0, validation_split=0.0,
        cache_latents=cached, cache_text_embeddings=cached))
    train(config)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    first, last = records[WARMUP - 1], records[-1]
    rate = (last["step"] - first["step"]) * batch / (last["time"] - first["time"])
    return {"samples_per_s": rate, "peak_memory_mib": peak_memory_mib()}


def main() -> None:
    """Build the model and data once, run each variant in its own process, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        sd, export = args.workdir / "sd", args.workdir / "export"
        if args.variant == "plain":
            result = plain_loop(sd, export, args.steps, args.batch, args.resolution)
        else:
            result = trainer(sd, export, args.workdir / args.variant, args.steps, args.batch, args.resolution,
                             cached=args.variant == "trainer+cache")
        print("RESULT " + json.dumps(result))
        return

    from tests.tiny_models import write_export
    from workbench.tiny.sd import build_tiny_sd

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_tiny_sd(work / "sd")
        write_export(work / "export", "controlnet", n=args.images, size=args.resolution, validation=0)
        results = {}
        for variant in ("plain", "trainer", "trainer+cache"):
            done = subprocess.run([sys.executable, __file__, "--variant", variant, "--workdir", str(work),
                                   "--steps", str(args.steps), "--batch", str(args.batch),
                                   "--resolution", str(args.resolution)],
                                  capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{variant} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
            results[variant] = json.loads(line[7:])
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"tiny SD, {args.resolution} px, batch {args.batch}, {args.steps} steps ({WARMUP} warm-up), {device}")
    base = results["plain"]["samples_per_s"]
    print(f"{'variant':<16}{'samples/s':>12}{'vs plain':>10}{'peak MiB':>12}")
    for name, r in results.items():
        print(f"{name:<16}{r['samples_per_s']:>12.2f}{r['samples_per_s'] / base:>9.2f}x{r['peak_memory_mib']:>12.0f}")


if __name__ == "__main__":
    main()
