"""Segmenter speed: the workbench's batched prediction against a plain per-image loop of the same model.

    python bench/segment.py [--images 24] [--size b0|tiny] [--resolution 512] [--batch 8]
    python bench/segment.py --gpu [--images 256] [--size b2]     # + one training epoch at 512 px

Same SegFormer (random weights from a config: SegFormer-B0/B2's shape, or the tests' tiny one),
same photos (random, 600x800 and 640x480 like fashion photos), one run:

- ``plain``: what a user writes with transformers alone: per photo, ``SegformerImageProcessor``
  (resize to ``resolution``, normalise), the model, ``post_process_semantic_segmentation`` to the
  photo's size;
- ``batched``: ``workbench.segment.predict.SegformerSegmenter.predict`` over all photos
  (``--batch`` photos per forward pass; logits upsampled per photo before the argmax).

Both give label maps at each photo's size; the share of pixels on which they agree is printed
(preprocessing differs only in resize arithmetic). With ``--gpu``, one epoch of
``train/segmenter.py`` at 512 px on an export folder of the same photos is timed as well.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {
    "tiny": None,  # workbench.segment.tiny
    "b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], num_attention_heads=[1, 2, 5, 8],
               decoder_hidden_size=256),
    "b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], num_attention_heads=[1, 2, 5, 8],
               decoder_hidden_size=768),
}
CLASSES = ["background", "upper body", "lower body", "full body"]


def build_model(size: str):
    """A SegFormer of the named shape with random weights and the cloth classes."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from workbench.segment.tiny import build_tiny_segformer

    if SIZES[size] is None:
        return build_tiny_segformer(len(CLASSES), names=CLASSES)
    config = SegformerConfig(**SIZES[size], num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES)),
                             label2id={n: i for i, n in enumerate(CLASSES)})
    return SegformerForSemanticSegmentation(config).eval()


def photos(n: int, seed: int = 0):
    """``n`` random RGB photos, alternating 600x800 and 640x480."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(600, 800), (640, 480)]
    return [Image.fromarray(rng.integers(0, 255, (sizes[i % 2][1], sizes[i % 2][0], 3), dtype=np.uint8))
            for i in range(n)]


def plain_loop(model, images, resolution: int, device: str) -> tuple[float, list]:
    """Seconds and label maps of the per-image transformers loop."""
    import torch
    from transformers import SegformerImageProcessor

    processor = SegformerImageProcessor(size={"height": resolution, "width": resolution})
    maps = []
    start = time.perf_counter()
    with torch.inference_mode():
        for image in images:
            inputs = processor(images=image, return_tensors="pt").to(device)
            outputs = model(**inputs)
            maps.append(processor.post_process_semantic_segmentation(
                outputs, target_sizes=[(image.size[1], image.size[0])])[0].cpu().numpy())
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, maps


def batched(model, images, resolution: int, batch: int, device: str) -> tuple[float, list]:
    """Seconds and label maps of the workbench's batched segmenter."""
    import torch

    from workbench.segment.loaders import SegmenterScheme
    from workbench.segment.predict import SegformerSegmenter

    segmenter = SegformerSegmenter(model, SegmenterScheme("cloth-seg", None, (0, 1, 2, 3), tuple(CLASSES)),
                                   resolution=resolution, batch_size=batch, device=device)
    start = time.perf_counter()
    maps = segmenter.predict(images)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, maps


def training_epoch(size: str, n: int, resolution: int, batch: int) -> dict:
    """Seconds of one ``train/segmenter.py`` epoch over ``n`` photos (an export folder), fp16 on a GPU."""
    import numpy as np
    import torch
    from PIL import Image

    from train.segmenter import load_segmenter_config, train
    from workbench.segment.tiny import tiny_segformer_config

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "export"
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        rng = np.random.default_rng(0)
        lines = []
        for i, photo in enumerate(photos(n)):
            photo.save(folder / "images" / f"{i}.jpg")
            mask = np.zeros((photo.size[1], photo.size[0]), np.uint8)
            mask[100:400, 100:400] = rng.integers(1, 4)
            Image.fromarray(mask).save(folder / "masks" / f"{i}.png")
            lines.append(json.dumps({"file_name": f"images/{i}.jpg", "conditioning_image_file_name": f"masks/{i}.png",
                                     "text": ""}))
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
        (folder / "manifest.json").write_text(json.dumps({"scheme": {"name": "cloth-seg", "legend": {
            str(i): n for i, n in enumerate(CLASSES)}}}))
        config = SIZES[size] or {k: v for k, v in tiny_segformer_config(4).to_dict().items()
                                 if k in ("hidden_sizes", "depths", "num_attention_heads", "decoder_hidden_size")}
        steps = max(1, n // batch)
        cfg = load_segmenter_config(None, dict(
            segformer_config={**config, "num_labels": 4}, train_data_dir=str(folder), output_dir=str(Path(tmp) / "run"),
            resolution=resolution, train_batch_size=batch, max_train_steps=steps, validation_split=0.0,
            checkpointing_steps=10**6, validation_steps=10**6, logging_steps=steps,
            mixed_precision="fp16" if torch.cuda.is_available() else "no"))
        start = time.perf_counter()
        train(cfg)
        seconds = time.perf_counter() - start
    return {"epoch_seconds": round(seconds, 2), "steps": steps, "images_per_s": round(steps * batch / seconds, 2)}


def main() -> None:
    """Run the benchmark and print its figures (and a JSON line)."""
    import numpy as np
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", choices=list(SIZES), default="b0")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--gpu", action="store_true", help="Also time one training epoch at 512 px.")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_model(args.size).to(device).eval()
    images = photos(args.images)
    # warm-up with the shapes each timed run meets (a full batch; both photo sizes): on a GPU the first
    # use of a shape loads and picks its kernels, which would otherwise be timed in the batched run only
    batched(model, images[:args.batch], args.resolution, args.batch, device)
    plain_loop(model, images[:2], args.resolution, device)
    plain_s, plain_maps = plain_loop(model, images, args.resolution, device)
    batched_s, batched_maps = batched(model, images, args.resolution, args.batch, device)
    agree = float(np.mean([np.mean(a == b) for a, b in zip(plain_maps, batched_maps)]))
    result = {"device": device, "model": f"segformer-{args.size} (random)", "images": args.images,
              "resolution": args.resolution, "batch": args.batch,
              "plain_images_per_s": round(args.images / plain_s, 2),
              "batched_images_per_s": round(args.images / batched_s, 2),
              "speedup": round(plain_s / batched_s, 2), "pixels_agreeing": round(agree, 4)}
    print(f"{result['model']} on {device}, {args.images} photos at {args.resolution} px:")
    print(f"  plain per-image loop (transformers processor): {result['plain_images_per_s']} images/s")
    print(f"  workbench batched (batch {args.batch}):            {result['batched_images_per_s']} images/s")
    print(f"  ratio batched / plain: {result['speedup']}x; the two agree on {100 * agree:.2f}% of pixels")
    if args.gpu:
        result["training"] = training_epoch(args.size, args.images, 512, args.batch)
        print(f"  one training epoch at 512 px: {result['training']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
