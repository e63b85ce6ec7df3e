"""A tiny, randomly initialised SegFormer cloth segmenter (the 4 cloth-seg classes), as a model folder."""

from __future__ import annotations

from pathlib import Path

CLOTH_SEG_LABELS = {0: "background", 1: "upper body", 2: "lower body", 3: "full body"}


def save_tiny_segformer(folder: Path, seed: int = 0) -> Path:
    """A ~20k-parameter SegFormer and its image processor (64 px) saved with ``save_pretrained``."""
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    config = SegformerConfig(num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[4, 2, 1, 1],
                             hidden_sizes=[8, 16, 16, 32], num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=32,
                             num_labels=len(CLOTH_SEG_LABELS), id2label=CLOTH_SEG_LABELS,
                             label2id={v: k for k, v in CLOTH_SEG_LABELS.items()})
    torch.manual_seed(seed)
    model = SegformerForSemanticSegmentation(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder
