"""The embedding store: one append-only float16 matrix per dataset, model and kind, keyed by content.

Layout under ``data_dir/embeddings/<dataset>/<model>/``: for each kind (``images``, ``crops``)
``<kind>.f16`` (rows of ``dim`` float16, L2-normalised), ``<kind>.keys`` (one key a line: the
image's SHA-256 checksum, or ``checksum:x,y,w,h`` for a garment crop) and, for images,
``<kind>.hash`` (a 256-bit difference hash of the photo per row, for near-duplicates that
survive resizing and re-encoding). Rows are appended batch by batch, vectors before keys, so a
run stopped at any point leaves a readable store and the next run continues after its last key.
Keys are content, so a re-import of the same photos reuses every row.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HASH_BYTES = 32  # 16 x 16 difference bits
KINDS = ("images", "crops")


def slug(text: str) -> str:
    """A folder name for a dataset or model reference (paths and specs included)."""
    import hashlib

    clean = re.sub(r"[^\w.-]+", "-", text).strip("-.")[-60:] or "x"
    return clean if clean == text else f"{clean}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def store_dir(data_dir: Path, dataset: str, model: str) -> Path:
    """Where the embeddings of ``dataset`` made with ``model`` live."""
    return Path(data_dir) / "embeddings" / slug(dataset) / slug(model)


def embedded_models(data_dir: Path, dataset: str) -> list[str]:
    """The models ``dataset`` has stored image embeddings of, most recently written first."""
    root = Path(data_dir) / "embeddings" / slug(dataset)
    found = []
    for meta in root.glob("*/meta.json") if root.is_dir() else []:
        keys = meta.parent / "images.keys"
        if keys.is_file() and keys.stat().st_size:
            found.append((keys.stat().st_mtime, json.loads(meta.read_text()).get("model") or meta.parent.name))
    return [model for _, model in sorted(found, reverse=True)]


@dataclass
class Matrix:
    """The rows of one kind as read from disk: keys, float16 vectors and (images) hashes."""

    keys: list[str]
    vectors: np.ndarray
    hashes: np.ndarray | None

    def row_of(self) -> dict[str, int]:
        """Key -> row (the last row wins should a key repeat)."""
        return {key: row for row, key in enumerate(self.keys)}


class EmbeddingStore:
    """Reads and appends the embedding matrices of one dataset and model."""

    def __init__(self, folder: Path, model: str = ""):
        self.folder = Path(folder)
        self.model = model

    @classmethod
    def open(cls, data_dir: Path, dataset: str, model: str) -> EmbeddingStore:
        """The store of ``dataset`` and ``model`` under ``data_dir`` (created on first append)."""
        return cls(store_dir(data_dir, dataset, model), model)

    def _meta_file(self) -> Path:
        return self.folder / "meta.json"

    @property
    def dim(self) -> int | None:
        """The vectors' length, once something was stored."""
        meta = self._meta_file()
        return json.loads(meta.read_text())["dim"] if meta.is_file() else None

    def read(self, kind: str = "images") -> Matrix:
        """Every complete row of ``kind`` (a row cut short by a stopped run is ignored)."""
        dim = self.dim
        keys_file = self.folder / f"{kind}.keys"
        if dim is None or not keys_file.is_file():
            return Matrix([], np.zeros((0, dim or 0), np.float16), np.zeros((0, HASH_BYTES), np.uint8)
                          if kind == "images" else None)
        text = keys_file.read_text()
        keys = text.split("\n")[:-1]  # a last line without its newline is unfinished
        raw = np.fromfile(self.folder / f"{kind}.f16", dtype=np.float16)
        n = min(len(keys), raw.size // dim)
        hashes = None
        if kind == "images":
            hraw = np.fromfile(self.folder / f"{kind}.hash", dtype=np.uint8) \
                if (self.folder / f"{kind}.hash").is_file() else np.zeros(0, np.uint8)
            n = min(n, hraw.size // HASH_BYTES)
            hashes = hraw[: n * HASH_BYTES].reshape(n, HASH_BYTES)
        return Matrix(keys[:n], raw[: n * dim].reshape(n, dim), hashes)

    def append(self, kind: str, keys: list[str], vectors: np.ndarray, hashes: np.ndarray | None = None) -> None:
        """Add rows (vectors are normalised and stored as float16); safe to stop between calls."""
        if not keys:
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys for {vectors.shape[0]} vectors")
        if kind == "images" and (hashes is None or hashes.shape != (len(keys), HASH_BYTES)):
            raise ValueError(f"image rows need a ({len(keys)}, {HASH_BYTES}) uint8 hash array")
        self.folder.mkdir(parents=True, exist_ok=True)
        dim = self.dim
        if dim is None:
            self._meta_file().write_text(json.dumps({"dim": int(vectors.shape[1]), "model": self.model}))
        elif dim != vectors.shape[1]:
            raise ValueError(f"{self.folder}: stored vectors have {dim} values, these {vectors.shape[1]}; "
                             "a different model needs its own store (pass its name as --model)")
        kept = self.read(kind).keys
        done = len(kept)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit = (vectors / np.maximum(norms, 1e-12)).astype(np.float16)
        # Cut what a stopped run wrote past its last complete row, then vectors (and hashes) before keys.
        self._write_rows(self.folder / f"{kind}.f16", done * unit.shape[1] * 2, unit.tobytes())
        if kind == "images":
            self._write_rows(self.folder / f"{kind}.hash", done * HASH_BYTES, np.ascontiguousarray(hashes).tobytes())
        keys_file = self.folder / f"{kind}.keys"
        text = "".join(f"{k}\n" for k in kept)
        if not keys_file.is_file() or keys_file.stat().st_size != len(text.encode()):
            keys_file.write_text(text)
        with keys_file.open("a") as fh:
            fh.write("".join(f"{k}\n" for k in keys))

    def save_map(self, method: str, keys: list[str], coords: np.ndarray) -> Path:
        """Keep a 2-D map of the rows ``keys`` (written beside and renamed: never half a file)."""
        path = self.folder / f"images.map-{method}.npz"
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, keys=np.array(keys), coords=np.asarray(coords, dtype=np.float32))
        tmp.replace(path)
        return path

    def read_map(self, method: str) -> dict[str, np.ndarray] | None:
        """Key -> 2-D point of the saved ``method`` map, or ``None`` when there is none."""
        path = self.folder / f"images.map-{method}.npz"
        if not path.is_file():
            return None
        with np.load(path) as data:
            return dict(zip(data["keys"].tolist(), data["coords"]))

    @staticmethod
    def _write_rows(path: Path, keep_bytes: int, data: bytes) -> None:
        with path.open("ab") as fh:
            fh.truncate(keep_bytes)
        with path.open("ab") as fh:
            fh.write(data)


def difference_hash(gray: np.ndarray) -> np.ndarray:
    """256 bits (32 bytes): whether each pixel of a 16 x 17 grey thumbnail is darker than its right
    neighbour. Resizing and re-encoding barely change it; different photos differ in about half."""
    return np.packbits((gray[:, 1:] > gray[:, :-1]).ravel())


def hash_neighbours(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int, int]]:
    """Pairs ``(i, j, distance)``, ``i < j``, of hashes at most ``max_distance`` bits apart
    (a FAISS binary index: no n x n table, so it scales to a whole dataset)."""
    import faiss

    if len(hashes) < 2:
        return []
    index = faiss.IndexBinaryFlat(HASH_BYTES * 8)
    index.add(np.ascontiguousarray(hashes, dtype=np.uint8))
    lims, dist, ids = index.range_search(np.ascontiguousarray(hashes, dtype=np.uint8), max_distance + 1)
    pairs = []
    for i in range(len(hashes)):
        for d, j in zip(dist[lims[i]:lims[i + 1]], ids[lims[i]:lims[i + 1]]):
            if j > i:
                pairs.append((i, int(j), int(d)))
    return pairs
