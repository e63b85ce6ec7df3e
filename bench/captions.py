"""Captioning throughput: the workbench's batched captioners against the clip-interrogator
package's own per-image loop, on the same tiny random models and the same images, in one run.

    python bench/captions.py [--images 16] [--batch-size 8] [--device cpu]

Both sides use the same CLIP, caption model and label lists (the package is handed the models
the workbench loaded). For every mode the outputs of both sides are compared too, so the speed-up
is for the same prompts. Prints images per second per mode and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", default="fast,classic,best,negative")
    parser.add_argument("--repeat", type=int, default=2, help="Best of this many timings per side (a shared machine is noisy).")
    args = parser.parse_args()

    import torch

    from tiny_captioners import random_images
    from workbench.tiny.captioners import save_tiny_blip, save_tiny_clip, write_label_lists
    from workbench.captions.blip import BlipCaptioner, BlipSettings
    from workbench.captions.interrogator import ClipInterrogatorCaptioner, InterrogatorSettings

    root = Path(tempfile.mkdtemp(prefix="bench-captions-"))
    clip, blip, labels = save_tiny_clip(root / "clip"), save_tiny_blip(root / "blip"), write_label_lists(root / "labels")
    images = random_images(args.images, seed=0, size=(192, 256))
    modes = args.modes.split(",")
    print(f"{args.images} images 192x256, batch {args.batch_size}, device {args.device}, torch threads {torch.get_num_threads()}; "
          "tiny CLIP (width 32, 2 layers) + tiny BLIP, 100 flavours")

    settings = InterrogatorSettings(clip_model=str(clip), caption_model=str(blip), data_path=str(labels), modes=modes,
                                    device=args.device)
    ours = ClipInterrogatorCaptioner(settings, batch_size=args.batch_size, cache_dir=root / "cache")
    ours.load()
    caption_model = ours.captioner
    ci = ours.ci
    # The package's own loop, with the very same models: its caption step uses them as given.
    ci.caption_model, ci.caption_processor = caption_model.model, caption_model.processor
    ci.config.caption_model_name = "blip-base"
    ci.config.caption_max_length = settings.caption_max_length

    def package(mode: str, image):
        k = ours.max_flavors(mode)
        if mode == "fast":
            return ci.interrogate_fast(image, max_flavors=k)
        if mode == "classic":
            return ci.interrogate_classic(image, max_flavors=k)
        if mode == "best":
            return ci.interrogate(image, min_flavors=settings.min_flavors, max_flavors=k)
        return ci.interrogate_negative(image, max_flavors=k)

    def timed(run) -> tuple[list[str], float]:
        """The texts of ``run()`` and its fastest time over ``--repeat`` runs."""
        best = float("inf")
        for _ in range(max(1, args.repeat)):
            start = time.perf_counter()
            texts = run()
            best = min(best, time.perf_counter() - start)
        return texts, best

    def batched(captioner, source: str) -> tuple[list[str], float]:
        def run() -> list[str]:
            texts: list[str] = []
            for first in range(0, len(images), args.batch_size):
                texts += [r.text for r in captioner.caption_batch(images[first:first + args.batch_size])[source]]
            return texts
        return timed(run)

    ours.caption_batch(images[:1])  # warm up both paths once
    package(modes[0], images[0])
    rows = []
    for mode in modes:
        single = ClipInterrogatorCaptioner(settings.model_copy(update={"modes": [mode]}), batch_size=args.batch_size,
                                           cache_dir=root / "cache")
        single.load()
        texts, ours_s = batched(single, f"clip-{mode}")
        theirs, theirs_s = timed(lambda: [package(mode, image) for image in images])
        same = sum(a == b for a, b in zip(texts, theirs))
        rows.append((f"clip-{mode}", theirs_s, ours_s, same))
    if len(modes) > 1:
        _, ours_s = batched(ours, f"clip-{modes[0]}")
        theirs_s = sum(r[1] for r in rows)
        rows.append((f"all {len(modes)} modes, one pass", theirs_s, ours_s, None))
    blip_ours = BlipCaptioner(BlipSettings(model=str(blip), max_new_tokens=settings.caption_max_length, device=args.device),
                              batch_size=args.batch_size)
    texts, ours_s = batched(blip_ours, "blip")
    theirs, theirs_s = timed(lambda: [ci.generate_caption(image) for image in images])
    rows.append(("blip caption", theirs_s, ours_s, sum(a == b for a, b in zip(texts, theirs))))

    n = len(images)
    print(f"\n{'captioner':<26}{'package img/s':>15}{'workbench img/s':>17}{'ratio':>8}{'same text':>11}")
    for name, theirs_s, ours_s, same in rows:
        print(f"{name:<26}{n / theirs_s:>15.2f}{n / ours_s:>17.2f}{theirs_s / ours_s:>7.1f}x"
              f"{'' if same is None else f'{same}/{n}':>11}")


if __name__ == "__main__":
    main()
