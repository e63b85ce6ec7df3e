"""The dataset map: embeddings projected to 2-D (UMAP when ``umap-learn`` is importable, else PCA),
with what each point can be coloured by (category, split, people review, caption state)."""

from __future__ import annotations

import numpy as np
import pandas as pd

METHODS = ("auto", "umap", "pca")
COLOUR_BY = {"category": "category", "split": "split", "people": "people review", "captions": "caption state"}


def umap_available() -> bool:
    """Whether ``umap-learn`` can be imported here."""
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components of ``vectors``: (n, 2)."""
    if len(vectors) < 2:
        return np.zeros((len(vectors), 2))
    centred = vectors - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out = centred @ vt[:2].T
    return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def project(vectors: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """``(coordinates (n, 2), method used)``; ``auto`` is UMAP when installed and the set is big enough."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    vectors = np.asarray(vectors, dtype=np.float32)
    small = len(vectors) < 10  # UMAP's neighbour graph needs a handful of points
    if method == "umap" and not umap_available():
        raise ValueError("UMAP needs umap-learn (`pip install umap-learn`); use method pca")
    if method == "pca" or small or (method == "auto" and not umap_available()):
        return pca_2d(vectors), "pca"
    import umap

    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(vectors) - 1), metric="cosine", random_state=seed)
    return np.asarray(reducer.fit_transform(vectors)), "umap"


def compute_map(store, method: str = "auto", seed: int = 0) -> tuple[str, int]:
    """Project every stored image row of ``store`` and save the map; ``(method used, points)``.
    UMAP takes a while (its first run in a process compiles code), so it runs in the ``embed`` job."""
    matrix = store.read("images")
    if not matrix.keys:
        return "none", 0
    coords, used = project(matrix.vectors, method, seed)
    store.save_map(used, matrix.keys, coords)
    return used, len(matrix.keys)


def saved_or_pca(store, checksums: list[str], vectors: np.ndarray) -> tuple[np.ndarray, str]:
    """The saved UMAP map when it covers every row, else a PCA map computed now (instant)."""
    saved = store.read_map("umap")
    if saved is not None and all(c in saved for c in checksums):
        return np.stack([saved[c] for c in checksums]) if checksums else np.zeros((0, 2)), "umap"
    return pca_2d(vectors), "pca"


def map_frame(image_ids: np.ndarray, coords: np.ndarray, frames) -> pd.DataFrame:
    """One row per mapped image: ``id``, ``file_name``, ``x``, ``y`` and a column per :data:`COLOUR_BY`
    key, read from the Explore frames (:class:`workbench.eda.EdaFrames` with facets attached)."""
    images = frames.images.reset_index(drop=True)
    position = pd.Series(np.arange(len(images)), index=images["id"].to_numpy())
    pos = position.reindex(image_ids).to_numpy()
    keep = ~np.isnan(pos)
    pos = pos[keep].astype(int)
    ann = frames.annotations
    dominant = np.full(len(images), "(no masks)", dtype=object)
    if len(ann):
        top = ann.sort_values("area", ascending=False).drop_duplicates("img")
        names = frames.categories["name"].to_numpy()
        dominant[top["img"].to_numpy()] = names[top["cat"].to_numpy()]
    split = images["split"].fillna("(none)").astype(str).to_numpy()
    out = pd.DataFrame({"id": images["id"].to_numpy()[pos], "file_name": images["file_name"].to_numpy()[pos],
                        "x": coords[keep, 0], "y": coords[keep, 1], "category": dominant[pos], "split": split[pos]})
    for key, facets in (("people", ("people_review",)), ("captions", ("caption_status", "caption"))):
        series = next((frames.facets[f] for f in facets if f in frames.facets), None)
        out[key] = series.to_numpy()[pos] if series is not None else "(not run)"
    return out
