"""A working CLIP tokenizer written from scratch: nothing to download."""

from __future__ import annotations

import json
import string
from pathlib import Path


def write_tiny_tokenizer(folder: Path) -> Path:
    """A working CLIPTokenizer: single characters (and their end-of-word forms), no merges."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab: dict[str, int] = {}
    for char in chars:
        vocab[char] = len(vocab)
        vocab[f"{char}</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder
