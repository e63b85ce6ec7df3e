"""Outliers and likely label problems, as a review queue.

- ``outlier``: an image far from the centroid of its category (the category covering most of
  the image), scored by how many standard deviations its cosine distance is above the
  category's mean distance: a studio shot among street photos, a mostly-empty frame, a wrong
  dataset's image.
- ``label``: a garment crop whose embedding is closer to another category's text embedding
  ("a photo of a skirt") than to its own label's, by at least ``margin``: "a skirt labelled pants".

Candidates are recomputed from the stored embeddings each time; decisions (keep = judged fine,
exclude = leave out of exports) are curator decisions, so decided images leave the queue.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Annotation, Category
from workbench.datasets import get_dataset
from workbench.embeddings.decisions import latest_decisions
from workbench.embeddings.vectors import crop_vectors, image_vectors

DEFAULT_MIN_Z = 2.0
DEFAULT_MARGIN = 0.0
MIN_CATEGORY_IMAGES = 5  # a centroid of fewer images says little
PROMPT = "a photo of a {}"


@dataclass
class Candidate:
    """An image for review: why (``kind``, ``category``, ``score``, ``detail``) and its decision if any."""

    kind: str
    image_id: int
    file_name: str
    category: str
    score: float
    detail: str
    annotation_id: int | None = None
    likely: str | None = None
    decision: str | None = None
    curator: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def dominant_categories(session: Session, dataset_id: int) -> dict[int, str]:
    """Image id -> the category whose masks cover most of it."""
    area: dict[int, tuple[int, str]] = {}
    for image_id, name, total in session.execute(
            select(Annotation.image_id, Category.name, Annotation.area)
            .join(Category, Category.id == Annotation.category_id).where(Annotation.dataset_id == dataset_id)):
        best = area.get(image_id)
        # Sum per (image, category) would be exact; the largest single mask is a close, cheaper proxy.
        if best is None or total > best[0]:
            area[image_id] = (total, name)
    return {i: name for i, (_, name) in area.items()}


def centroid_scores(vectors: np.ndarray, labels: list[str], min_images: int = MIN_CATEGORY_IMAGES
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per row: cosine distance to its label's centroid and its z-score within the label (NaN for
    labels with fewer than ``min_images`` rows)."""
    labels_arr = np.array(labels, dtype=object)
    distance = np.full(len(labels), np.nan)
    z = np.full(len(labels), np.nan)
    for label in set(labels):
        rows = np.flatnonzero(labels_arr == label)
        if len(rows) < min_images:
            continue
        centroid = vectors[rows].mean(axis=0)
        centroid /= max(np.linalg.norm(centroid), 1e-12)
        d = 1.0 - vectors[rows] @ centroid
        distance[rows] = d
        z[rows] = (d - d.mean()) / max(d.std(), 1e-6)
    return distance, z


def label_mismatches(crops: np.ndarray, labels: list[str], text: np.ndarray, names: list[str],
                     margin: float = DEFAULT_MARGIN) -> list[tuple[int, str, float]]:
    """Rows whose crop is closer to another category's text embedding than to its own label's by more
    than ``margin``: ``(row, likely category, similarity gap)``, largest gap first."""
    column = {name: i for i, name in enumerate(names)}
    sims = crops @ text.T
    out = []
    for row, label in enumerate(labels):
        if label not in column:
            continue
        own = sims[row, column[label]]
        others = sims[row].copy()
        others[column[label]] = -np.inf
        best = int(np.argmax(others))
        if others[best] - own > margin:
            out.append((row, names[best], float(others[best] - own)))
    return sorted(out, key=lambda r: -r[2])


def centroid_outliers(session: Session, dataset: str, model: str, data_dir: Path,
                      min_z: float = DEFAULT_MIN_Z) -> list[Candidate]:
    """Images at least ``min_z`` standard deviations farther from their category's centroid than usual."""
    ds = get_dataset(session, dataset)
    vectors = image_vectors(session, ds.name, model, data_dir)
    dominant = dominant_categories(session, ds.id)
    rows = [i for i, image_id in enumerate(vectors.image_ids) if int(image_id) in dominant]
    labels = [dominant[int(vectors.image_ids[i])] for i in rows]
    distance, z = centroid_scores(vectors.vectors[rows], labels)
    out = []
    for k, i in enumerate(rows):
        if not np.isnan(z[k]) and z[k] >= min_z:
            out.append(Candidate("outlier", int(vectors.image_ids[i]), vectors.file_names[i], labels[k],
                                 round(float(z[k]), 3),
                                 f"{z[k]:.1f} sd farther from the {labels[k]} centroid than usual "
                                 f"(cosine distance {distance[k]:.3f})"))
    return out


def category_text_vectors(model: str, names: list[str], device: str = "auto") -> np.ndarray:
    """Text embeddings of "a photo of a <category>" for each name, through the CLIP text tower."""
    from workbench.embeddings.compute import encode_texts, load_model

    return encode_texts(load_model(model, device), [PROMPT.format(n) for n in names])


def label_problems(session: Session, dataset: str, model: str, data_dir: Path, margin: float = DEFAULT_MARGIN,
                   text: np.ndarray | None = None, device: str = "auto") -> list[Candidate]:
    """Garment crops closer to another category's words than to their own label's (``text``: the
    category text embeddings in the dataset's category order, computed with ``model`` when not given)."""
    ds = get_dataset(session, dataset)
    crops = crop_vectors(session, ds.name, model, data_dir)
    names = list(session.scalars(select(Category.name).where(Category.dataset_id == ds.id).order_by(Category.id)))
    if text is None:
        text = category_text_vectors(model, names, device)
    files = dict(zip(*_image_names(session, ds.id)))
    out = []
    for row, likely, gap in label_mismatches(crops.vectors, crops.categories, text, names, margin):
        image_id = int(crops.image_ids[row])
        out.append(Candidate("label", image_id, files[image_id], crops.categories[row], round(gap, 4),
                             f"this {crops.categories[row]} mask looks more like a {likely} (by {gap:.3f})",
                             annotation_id=int(crops.annotation_ids[row]), likely=likely))
    return out


def _image_names(session: Session, dataset_id: int) -> tuple[list[int], list[str]]:
    from db.models import Image

    rows = session.execute(select(Image.id, Image.file_name).where(Image.dataset_id == dataset_id)).all()
    return [r[0] for r in rows], [r[1] for r in rows]


def review_queue(session: Session, dataset: str, model: str, data_dir: Path, kind: str = "outlier", *,
                 min_z: float = DEFAULT_MIN_Z, margin: float = DEFAULT_MARGIN, include_decided: bool = False,
                 text: np.ndarray | None = None) -> list[Candidate]:
    """The candidates of ``kind`` (outlier | label), undecided first and worst first, each with its decision."""
    if kind not in ("outlier", "label"):
        raise ValueError(f"kind must be outlier or label, not {kind!r}")
    ds = get_dataset(session, dataset)
    items = (centroid_outliers(session, ds.name, model, data_dir, min_z) if kind == "outlier"
             else label_problems(session, ds.name, model, data_dir, margin, text=text))
    decided = latest_decisions(session, ds.id, kind)
    for item in items:
        if item.image_id in decided:
            item.decision, item.curator = decided[item.image_id].decision, decided[item.image_id].curator
    if not include_decided:
        items = [i for i in items if i.decision is None]
    return sorted(items, key=lambda i: (i.decision is not None, -i.score))
