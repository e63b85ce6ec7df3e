"""The stored embeddings of a dataset's images (and garment crops), matched to its current rows."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Annotation, Category, Image
from workbench.datasets import get_dataset
from workbench.embeddings.compute import crop_key
from workbench.embeddings.index import VectorIndex, build_index
from workbench.embeddings.store import EmbeddingStore

_indexes: dict[tuple[str, str], VectorIndex] = {}


class NotEmbedded(LookupError):
    """A dataset (or its crops) has no stored embeddings for a model; the message gives the command."""


@dataclass
class ImageVectors:
    """One row per embedded image of a dataset: ids, names, splits, checksums, vectors and hashes."""

    dataset: str
    model: str
    image_ids: np.ndarray
    file_names: list[str]
    splits: list[str | None]
    checksums: list[str]
    vectors: np.ndarray  # (n, dim) float32, unit length
    hashes: np.ndarray  # (n, 32) uint8
    missing: int  # images of the dataset without a stored embedding
    store: EmbeddingStore

    @cached_property
    def state(self) -> tuple[str, str]:
        """What these rows are: the store, and the dataset's image ids and checksums matched to it, in order
        (a re-import, a new batch or a deleted image is a new state). Keys the caches built from them."""
        import hashlib

        digest = hashlib.sha1(self.image_ids.tobytes())
        digest.update("\n".join(self.checksums).encode())
        return str(self.store.folder), digest.hexdigest()

    def index(self) -> VectorIndex:
        """The FAISS index of these vectors, built once per process and store state."""
        if self.state not in _indexes:
            _indexes[self.state] = build_index(self.vectors)
        return _indexes[self.state]

    def row_of_image(self, image_id: int) -> int | None:
        """The row of ``image_id``, if it was embedded."""
        rows = np.flatnonzero(self.image_ids == image_id)
        return int(rows[0]) if rows.size else None


@dataclass
class CropVectors:
    """One row per embedded garment crop: its annotation, image, category name and vector."""

    annotation_ids: np.ndarray
    image_ids: np.ndarray
    categories: list[str]
    vectors: np.ndarray


def embed_command(dataset: str, model: str, crops: bool = False) -> str:
    """The command that fills the store this needs."""
    return f"python -m workbench embed --dataset {dataset} --model {model}" + (" --crops" if crops else "")


def image_vectors(session: Session, dataset: str, model: str, data_dir: Path) -> ImageVectors:
    """The embeddings of ``dataset``'s images under ``model``; :class:`NotEmbedded` when none are stored."""
    ds = get_dataset(session, dataset)
    store = EmbeddingStore.open(data_dir, ds.name, model)
    matrix = store.read("images")
    if not matrix.keys:
        raise NotEmbedded(f"dataset {ds.name!r} has no embeddings made with {model!r} (looked in {store.folder}); "
                          f"run `{embed_command(ds.name, model)}` or Embed on the Similarity page")
    row_of = matrix.row_of()
    rows = session.execute(select(Image.id, Image.file_name, Image.split, Image.checksum)
                           .where(Image.dataset_id == ds.id).order_by(Image.id)).all()
    kept = [r for r in rows if r.checksum in row_of]
    take = np.array([row_of[r.checksum] for r in kept], dtype=np.int64)
    return ImageVectors(ds.name, model, np.array([r.id for r in kept], dtype=np.int64), [r.file_name for r in kept],
                        [r.split for r in kept], [r.checksum for r in kept],
                        matrix.vectors[take].astype(np.float32), matrix.hashes[take], len(rows) - len(kept), store)


def crop_vectors(session: Session, dataset: str, model: str, data_dir: Path) -> CropVectors:
    """The embeddings of ``dataset``'s garment crops; :class:`NotEmbedded` when none are stored."""
    ds = get_dataset(session, dataset)
    matrix = EmbeddingStore.open(data_dir, ds.name, model).read("crops")
    if not matrix.keys:
        raise NotEmbedded(f"dataset {ds.name!r} has no garment-crop embeddings made with {model!r}; "
                          f"run `{embed_command(ds.name, model, crops=True)}`")
    row_of = matrix.row_of()
    ann, img, cats, take = [], [], [], []
    for a_id, i_id, checksum, x, y, w, h, name in session.execute(
            select(Annotation.id, Annotation.image_id, Image.checksum, Annotation.bbox_x, Annotation.bbox_y,
                   Annotation.bbox_w, Annotation.bbox_h, Category.name)
            .join(Image, Image.id == Annotation.image_id).join(Category, Category.id == Annotation.category_id)
            .where(Annotation.dataset_id == ds.id).order_by(Annotation.id)):
        row = row_of.get(crop_key(checksum or "", x, y, w, h))
        if row is not None:
            ann.append(a_id)
            img.append(i_id)
            cats.append(name)
            take.append(row)
    return CropVectors(np.array(ann, dtype=np.int64), np.array(img, dtype=np.int64), cats,
                       matrix.vectors[np.array(take, dtype=np.int64)].astype(np.float32))
