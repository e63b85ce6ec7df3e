"""Tiny, randomly initialised person detectors built from configs: shapes and plumbing only.

Their outputs are noise; they drive the real loading, batching and post-processing code, never
a claim that anything is found. A tiny R-CNN is saved as a folder (``weights.safetensors`` plus
the tiny marker naming its builder), which the torchvision detector loads by path or name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PERSON_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "person", "red", "dress", "a"]


def tiny_grounding_dino(num_queries: int = 10) -> tuple[Any, Any]:
    """A ~150k-parameter Grounding DINO (Swin + BERT) and a processor with a tiny vocabulary."""
    import torch
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    torch.manual_seed(0)
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=4, out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=len(PERSON_VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=32)
    # Two decoder layers: the box heads of layer 0 are tied to the later ones.
    config = GroundingDinoConfig(backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1,
                                 decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                                 encoder_attention_heads=2, decoder_attention_heads=2, num_queries=num_queries,
                                 num_feature_levels=3, encoder_n_points=2, decoder_n_points=2, max_text_len=16)
    model = GroundingDinoForObjectDetection(config).eval()
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(PERSON_VOCAB)})
    images = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 64})
    return model, GroundingDinoProcessor(image_processor=images, tokenizer=tokenizer)


def save_tiny_grounding_dino(folder: Path) -> Path:
    """Write a tiny Grounding DINO and its processor as a local model folder."""
    model, processor = tiny_grounding_dino()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_rcnn(kind: str = "mask", favour_class: int = 1) -> Any:
    """A Mask (or Keypoint) R-CNN on a two-layer backbone, 64 px inputs, COCO's 91 classes.

    The box classifier's bias is set so that ``favour_class`` wins every box: with class 1
    (COCO person) everything detected is a person, with another class nothing is.
    """
    import torch
    from torch import nn
    from torchvision.models.detection import KeypointRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                             nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
    backbone.out_channels = 16
    common: dict[str, Any] = dict(
        min_size=64, max_size=64, box_score_thresh=0.0, box_detections_per_img=5,
        rpn_anchor_generator=AnchorGenerator(((16, 32),), ((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
    )
    if kind == "mask":
        model = MaskRCNN(backbone, num_classes=91, mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2), **common)
    else:
        model = KeypointRCNN(backbone, num_classes=2, num_keypoints=17,
                             keypoint_roi_pool=MultiScaleRoIAlign(["0"], 14, 2), **common)
    with torch.no_grad():
        bias = model.roi_heads.box_predictor.cls_score.bias
        bias.zero_()
        if favour_class < bias.numel():
            bias[favour_class] = 20.0
    return model.eval()


def save_tiny_rcnn(folder: Path, kind: str = "mask", favour_class: int = 1) -> Path:
    """Write a tiny R-CNN's weights (``weights.safetensors``) with the builder arguments in ``folder``;
    the caller marks the folder (the marker is what tells the loader to use :func:`tiny_rcnn`)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_rcnn(kind, favour_class)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "weights.safetensors"))
    return folder


def load_tiny_rcnn(folder: Path) -> Any:
    """The tiny R-CNN a marked folder holds (its builder arguments from the marker, its weights)."""
    from safetensors.torch import load_file

    from workbench.models import tiny_info

    info = tiny_info(folder)
    model = tiny_rcnn(info.get("rcnn", "mask"), int(info.get("favour_class", 1)))
    model.load_state_dict(load_file(str(Path(folder) / "weights.safetensors")))
    return model.eval()
