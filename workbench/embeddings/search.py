"""Search a dataset by example ("more like this") or by words, through the CLIP towers."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from workbench.embeddings.vectors import ImageVectors, image_vectors


@dataclass
class Match:
    """One image found, with its cosine similarity to the query."""

    image_id: int
    file_name: str
    split: str | None
    score: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _matches(vectors: ImageVectors, query: np.ndarray, k: int, skip: int | None = None) -> list[Match]:
    scores, rows = vectors.index().search(query, k + (1 if skip is not None else 0))
    out = []
    for score, row in zip(scores[0], rows[0]):
        if row < 0 or (skip is not None and int(vectors.image_ids[row]) == skip):
            continue
        out.append(Match(int(vectors.image_ids[row]), vectors.file_names[row], vectors.splits[row], float(score)))
    return out[:k]


def more_like(session: Session, dataset: str, image_id: int, model: str, data_dir: Path, k: int = 12) -> list[Match]:
    """The ``k`` images most like ``image_id`` (itself left out), most similar first."""
    vectors = image_vectors(session, dataset, model, data_dir)
    row = vectors.row_of_image(image_id)
    if row is None:
        raise LookupError(f"image {image_id} of {dataset!r} has no embedding yet; run "
                          f"`python -m workbench embed --dataset {dataset} --model {model}` again")
    return _matches(vectors, vectors.vectors[row], k, skip=image_id)


def text_search(session: Session, dataset: str, text: str, model: str, data_dir: Path, k: int = 12,
                device: str = "auto") -> list[Match]:
    """The ``k`` images whose embedding is closest to ``text`` through the CLIP text tower."""
    from workbench.embeddings.compute import encode_texts, load_model

    if not text.strip():
        raise ValueError("the search text is empty: describe what to find, e.g. 'red sequin dress'")
    vectors = image_vectors(session, dataset, model, data_dir)
    return _matches(vectors, encode_texts(load_model(model, device), [text]), k)
