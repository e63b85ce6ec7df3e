"""Tiny randomly initialised segmenters built from configs (tests, benchmarks, a "tiny models" button).

Nothing is downloaded: the SegFormer is built from a small ``SegformerConfig`` and the cloth
U2NET stand-in is a two-layer torch module exported to ONNX with the public
``u2net_cloth_seg.onnx``'s signature (one image ``(1, 3, 768, 768)`` in, 4-class logits
``(1, 4, 768, 768)`` first among its outputs, as rembg reads them). Their predictions are
meaningless; their shapes, classes and code paths are the real ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CLOTH_ONNX_NAME = "u2net_cloth_seg.onnx"
CLOTH_INPUT_SIZE = 768


def tiny_segformer_config(num_labels: int, **overrides: Any):
    """A SegFormer config of about 30k parameters (4 stages of 8-32 channels)."""
    from transformers import SegformerConfig

    values: dict[str, Any] = dict(
        num_channels=3, num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1],
        hidden_sizes=[8, 16, 24, 32], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
        num_attention_heads=[1, 1, 2, 2], mlp_ratios=[2, 2, 2, 2], decoder_hidden_size=32,
        num_labels=num_labels, id2label={i: f"class {i}" for i in range(num_labels)},
        label2id={f"class {i}": i for i in range(num_labels)},
    )
    values.update(overrides)
    return SegformerConfig(**values)


def build_tiny_segformer(num_labels: int, folder: Path | None = None, seed: int = 0,
                         names: list[str] | None = None, scheme: dict[str, Any] | None = None,
                         resolution: int | None = None):
    """A random tiny ``SegformerForSemanticSegmentation``; saved to ``folder`` (with its image
    processor) when given. ``scheme`` (``SegmenterScheme.as_dict()``) and ``resolution`` are
    recorded in its config as ``train/segmenter.py`` records them."""
    import torch
    from transformers import SegformerForSemanticSegmentation, SegformerImageProcessor

    from workbench.segment.loaders import SCHEME_KEY

    names = names or [f"class {i}" for i in range(num_labels)]
    config = tiny_segformer_config(num_labels, id2label=dict(enumerate(names)),
                                   label2id={n: i for i, n in enumerate(names)})
    if scheme is not None:
        setattr(config, SCHEME_KEY, scheme)
    if resolution is not None:
        config.workbench_resolution = resolution
    torch.manual_seed(seed)
    model = SegformerForSemanticSegmentation(config)
    if folder is not None:
        model.save_pretrained(str(folder))
        size = resolution or 64
        SegformerImageProcessor(size={"height": size, "width": size}).save_pretrained(str(folder))
    return model


def build_tiny_cloth_segformer(folder: Path, seed: int = 0) -> Path:
    """The registry's ``tiny-segformer``: the 4 ``cloth-seg`` classes, its scheme recorded, 64 px."""
    from workbench.segment.loaders import CLOTH_CLASSES, SegmenterScheme

    scheme = SegmenterScheme("cloth-seg", None, tuple(range(len(CLOTH_CLASSES))), CLOTH_CLASSES)
    build_tiny_segformer(len(CLOTH_CLASSES), folder, seed, list(CLOTH_CLASSES), scheme.as_dict(), resolution=64)
    return Path(folder)


def build_tiny_cloth_onnx(path: Path, seed: int = 0) -> Path:
    """Write a tiny ONNX model with the cloth U2NET's input and output signature to ``path``."""
    import torch

    class TinyCloth(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.classes = torch.nn.Conv2d(8, 4, 1)

        def forward(self, x):
            logits = self.classes(torch.relu(self.features(x)))
            return logits, torch.sigmoid(logits)  # U2NET gives side outputs after the main one

    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(TinyCloth().eval(), (torch.zeros(1, 3, CLOTH_INPUT_SIZE, CLOTH_INPUT_SIZE),), str(path),
                      input_names=["input.1"], output_names=["d0", "d1"], dynamo=False)
    return path
