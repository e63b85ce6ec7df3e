"""Create the initial ControlNet from a Stable Diffusion checkpoint (the reference ``tool_add_control.py``).

    python train/add_control.py runwayml/stable-diffusion-v1-5 models/controlnet-init
    python train/add_control.py sd15/ models/controlnet-init --conditioning-channels 7
    python train/add_control.py v1-5-pruned.safetensors models/controlnet-init --config sd15/ --save-base sd15-diffusers/

The ControlNet copies the UNet's encoder and middle block (``ControlNetModel.from_unet``) and
starts its zero convolutions at zero, so at step 0 it leaves the UNet's output unchanged.
``--conditioning-channels K`` makes its input take a K-channel one-hot mask instead of RGB.
A single ``.ckpt``/``.safetensors`` file is read with ``StableDiffusionPipeline.from_single_file``;
``--config`` names a diffusers folder or hub id with the matching component configs (needed when
the hub cannot be reached) and ``--save-base`` also writes the base model as a diffusers folder,
which is what the trainer's ``pretrained_model_name_or_path`` takes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SINGLE_FILE_SUFFIXES = (".ckpt", ".safetensors")


class AddControlError(ValueError):
    """The base model cannot be read; the message says which and how to fix it."""


def load_unet(base: str, *, config: str | None = None, revision: str | None = None,
              variant: str | None = None, save_base: Path | None = None):
    """The UNet of a Stable Diffusion given as hub id, diffusers folder or single checkpoint file."""
    from workbench.models import ModelNotReady, loading, resolve

    name, base = base, resolve(base, "sd")
    if Path(base).suffix in SINGLE_FILE_SUFFIXES:
        if not Path(base).is_file():
            raise AddControlError(f"{base}: no such checkpoint file")
        try:
            # without --config its component configs come from the hub: no waiting for it offline
            with loading("sd", config or base, name=name, asks_hub=config is None):
                from diffusers import StableDiffusionPipeline

                pipe = StableDiffusionPipeline.from_single_file(base, config=config, safety_checker=None)
        except Exception as exc:  # diffusers raises several kinds here (missing config, bad keys)
            raise AddControlError(f"{base}: cannot read it as a Stable Diffusion checkpoint ({exc}); "
                                  "offline, pass --config with a diffusers folder of the same architecture") from exc
        if save_base is not None:
            pipe.save_pretrained(str(save_base))
        return pipe.unet
    try:
        with loading("sd", base, name=name) as load:
            from diffusers import StableDiffusionPipeline, UNet2DConditionModel

            unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", revision=revision, variant=variant,
                                                        **load.kwargs)
            if save_base is not None:
                StableDiffusionPipeline.from_pretrained(base, revision=revision, variant=variant, safety_checker=None,
                                                        requires_safety_checker=False,
                                                        **load.kwargs).save_pretrained(str(save_base))
    except ModelNotReady as exc:
        raise AddControlError(f"{exc} (a base is a hub id, a diffusers folder with unet/, a .ckpt/.safetensors "
                              "file, or a model registry name)") from exc
    return unet


def create_controlnet(base: str, output: Path, *, conditioning_channels: int = 3, config: str | None = None,
                      revision: str | None = None, variant: str | None = None,
                      save_base: Path | None = None) -> Path:
    """Initialise a ControlNet from ``base``'s UNet and save it (``save_pretrained``) in ``output``."""
    from diffusers import ControlNetModel

    if conditioning_channels < 1:
        raise AddControlError(f"conditioning_channels must be at least 1, not {conditioning_channels}")
    unet = load_unet(base, config=config, revision=revision, variant=variant, save_base=save_base)
    controlnet = ControlNetModel.from_unet(unet, conditioning_channels=conditioning_channels)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    controlnet.save_pretrained(str(output))
    return output


def main(argv: list[str] | None = None) -> int:
    """Command line of :func:`create_controlnet`."""
    parser = argparse.ArgumentParser(description="Create the initial ControlNet from a Stable Diffusion.")
    parser.add_argument("base", help="hub id, diffusers folder, .ckpt/.safetensors file, or model registry name")
    parser.add_argument("output", type=Path, help="folder for the ControlNet (save_pretrained)")
    parser.add_argument("--conditioning-channels", type=int, default=3,
                        help="input channels: 3 for a palette RGB mask, K for a K-class one-hot mask")
    parser.add_argument("--config", default=None, help="single file only: diffusers folder/hub id of its configs")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--variant", default=None, help="e.g. fp16")
    parser.add_argument("--save-base", type=Path, default=None, help="also save the base model as a diffusers folder")
    args = parser.parse_args(argv)
    try:
        out = create_controlnet(args.base, args.output, conditioning_channels=args.conditioning_channels,
                                config=args.config, revision=args.revision, variant=args.variant,
                                save_base=args.save_base)
    except AddControlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"ControlNet saved in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
