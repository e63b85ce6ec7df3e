"""Tiny, randomly initialised captioning models built from configs, saved as real model folders.

A tiny open_clip CLIP (registered from a config dict, saved as a ``local-dir`` folder), a tiny
BLIP, a tiny Kosmos-2, short CLIP Interrogator label lists, and a tiny CLIPTokenizer
(``vocab.json`` + ``merges.txt``): the real loading code runs on them; their output is noise.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_CLIP_NAME = "tiny-clip-test"
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
WORDS = ["a", "an", "the", "of", "in", "on", "with", "and", "photo", "image", "picture", "woman", "man",
         "person", "model", "dress", "shirt", "top", "skirt", "pants", "shoes", "coat", "jacket", "red",
         "blue", "green", "white", "black", "standing", "walking", "wearing", "street", "studio"]


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A tiny open_clip model as a ``local-dir`` folder (config + safetensors weights)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from workbench.captions.interrogator import register_clip_config

    register_clip_config(TINY_CLIP_NAME, TINY_CLIP_CFG)
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": TINY_CLIP_CFG,
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def save_tiny_blip(folder: Path, seed: int = 0) -> Path:
    """A tiny BLIP captioner (model + processor) saved with ``save_pretrained``."""
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    config = BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, encoder_hidden_size=32,
                         bos_token_id=2, sep_token_id=3, pad_token_id=0, eos_token_id=3),
        projection_dim=32)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Random weights would mostly emit special tokens (decoded as ""): make words likelier.
        model.text_decoder.cls.predictions.bias[5:] += 4.0
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_tiny_kosmos2(folder: Path, seed: int = 0) -> Path:
    """A tiny Kosmos-2 (model + processor with its grounding and patch-index tokens)."""
    import torch
    from transformers import CLIPImageProcessor, Kosmos2Config, Kosmos2ForConditionalGeneration, Kosmos2Processor, XLMRobertaTokenizer

    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("<mask>", 0.0)]
    vocab += [("\u2581" + w, -1.0) for w in WORDS]
    processor = Kosmos2Processor(
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        XLMRobertaTokenizer(vocab=vocab))
    config = Kosmos2Config(
        text_config=dict(vocab_size=len(processor.tokenizer), embed_dim=32, layers=2, ffn_dim=64,
                         attention_heads=2, max_position_embeddings=256),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        latent_query_num=64)
    torch.manual_seed(seed)
    model = Kosmos2ForConditionalGeneration(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_label_lists(folder: Path, flavours: int = 100, negatives: int = 20) -> Path:
    """Short CLIP Interrogator label lists (``data_path``): enough for best/negative chains."""
    folder.mkdir(parents=True, exist_ok=True)
    adjectives = ["soft", "bright", "dark", "warm", "cold", "sharp", "blurry", "vivid", "pale", "glossy"]
    nouns = ["light", "colours", "tones", "shadows", "fabric", "texture", "focus", "mood", "detail", "grain"]
    flavour_list = [f"{a} {n}" for a in adjectives for n in nouns][:flavours]
    lists = {
        "artists.txt": ["Ann Smith", "Bo Chen", "Cy Twombly", "Dora Maar", "Eve Arnold"],
        "flavors.txt": flavour_list,
        "mediums.txt": ["a photograph", "a painting", "a drawing", "a 3D render"],
        "movements.txt": ["minimalism", "pop art", "realism"],
        "negative.txt": [f"bad {n}" for n in nouns] + [f"ugly {n}" for n in nouns][: negatives - len(nouns)],
    }
    for name, labels in lists.items():
        (folder / name).write_text("\n".join(labels) + "\n")
    return folder


def save_tiny_clip_tokenizer(folder: Path) -> Path:
    """A working CLIPTokenizer folder: single characters (and their ``</w>`` forms) + specials."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(33, 127)]
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder
