"""Nearest-neighbour search over embeddings with FAISS: exact for small sets, IVF above, recall checked.

Vectors are L2-normalised, so inner product is cosine similarity. Below :data:`EXACT_BELOW` rows
the index is exact (``IndexFlatIP``). Above, an inverted-file index (``IndexIVFFlat``, about
4·√n lists) is trained, and the number of lists searched (``nprobe``) is raised until recall@10 on
a sample of the rows themselves, measured against exact search, reaches ``target_recall``: the
index says how good it is (:attr:`VectorIndex.recall`) rather than assuming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

EXACT_BELOW = 4096
TARGET_RECALL = 0.95
RECALL_SAMPLE = 256
RECALL_K = 10


@dataclass
class VectorIndex:
    """A searchable index of ``n`` vectors (``kind`` exact or ivf; ``recall`` measured for ivf)."""

    index: Any
    kind: str
    n: int
    dim: int
    recall: float | None = None
    nprobe: int | None = None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)`` of the ``k`` nearest rows of each query (rows -1 where fewer exist)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        return self.index.search(queries, min(k, self.n))

    def describe(self) -> str:
        """Words for a page or a log line."""
        if self.kind == "exact":
            return f"exact search over {self.n:,} vectors"
        return (f"approximate (IVF, {self.index.nlist} lists, {self.nprobe} searched) over {self.n:,} vectors, "
                f"recall@{RECALL_K} {self.recall:.3f} on a sample")


def _unit(vectors: np.ndarray) -> np.ndarray:
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def build_index(vectors: np.ndarray, *, exact_below: int = EXACT_BELOW, target_recall: float = TARGET_RECALL,
                seed: int = 0) -> VectorIndex:
    """An index of ``vectors`` (any float dtype; normalised here)."""
    import faiss

    data = _unit(vectors)
    n, dim = data.shape
    if n < exact_below:
        flat = faiss.IndexFlatIP(dim)
        flat.add(data)
        return VectorIndex(flat, "exact", n, dim)
    nlist = int(min(max(4 * np.sqrt(n), 16), n // 39))
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    train = data[rng.choice(n, size=min(n, 64 * nlist), replace=False)]
    ivf.cp.seed = seed
    ivf.train(train)
    ivf.add(data)
    sample = data[rng.choice(n, size=min(n, RECALL_SAMPLE), replace=False)]
    truth = exact_neighbours(data, sample, RECALL_K)
    nprobe, recall = 1, 0.0
    while True:
        ivf.nprobe = nprobe
        recall = recall_at(ivf.search(sample, RECALL_K)[1], truth)
        if recall >= target_recall or nprobe >= nlist:
            break
        nprobe = min(nlist, nprobe * 2)
    return VectorIndex(ivf, "ivf", n, dim, recall=recall, nprobe=nprobe)


def exact_neighbours(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` most similar vectors of ``data`` to each query, by brute force (numpy)."""
    scores = queries @ data.T
    top = np.argpartition(-scores, min(k, data.shape[0] - 1), axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true neighbours (rows of ``truth``) that ``found`` contains, over all queries."""
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / truth.size
