"""Computing embeddings: open_clip image (and text) features of a dataset, batched and resumable.

Photos are read at reduced scale where the format allows (JPEG draft), preprocessed with the
model's own transforms and encoded a batch at a time; each batch is appended to the store at
once, so a stopped run loses at most one batch and the next run skips every stored key.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import Engine, select

from db.engine import session_scope
from db.models import Annotation, Dataset, Image
from workbench.datasets import get_dataset
from workbench.embeddings.store import EmbeddingStore, difference_hash
from workbench.formats.images import resolve_image_path
from workbench.progress import ProgressFn, StopFn, report

DEFAULT_MODEL = "clip-vit-l-14"


@dataclass
class EmbedSettings:
    """How a dataset is embedded (printed in the job's log)."""

    model: str = DEFAULT_MODEL
    batch_size: int = 32
    crops: bool = False
    min_crop_side: int = 8  # garment boxes narrower than this are too small to say anything
    crop_padding: float = 0.05  # fraction of the box added on each side, for context
    device: str = "auto"
    map: str = "auto"  # the 2-D map made at the end: auto (UMAP when installed), umap, pca or none


@dataclass
class EmbedResult:
    """What a run did: rows computed now, rows already stored, images it could not read."""

    dataset: str
    model: str
    images: int = 0
    embedded: int = 0
    reused: int = 0
    crops_embedded: int = 0
    crops_reused: int = 0
    map: str = "none"
    stopped: bool = False
    failed: dict[str, str] = field(default_factory=dict)
    store: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def file_checksum(path: Path) -> str:
    """SHA-256 of a file's bytes: the checksum a full-check import records."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def image_checksums(engine: Engine, dataset: str) -> tuple[Dataset, list[tuple[int, str, str]]]:
    """``(id, file_name, checksum)`` of every readable image of ``dataset``; a checksum the import
    did not record (a header-only check) is computed from the file and stored on the image row."""
    with session_scope(engine) as session:
        ds = get_dataset(session, dataset)
        session.expunge(ds)
        rows = session.execute(select(Image.id, Image.file_name, Image.checksum)
                               .where(Image.dataset_id == ds.id).order_by(Image.id)).all()
        out, missing = [], {}
        for image_id, file_name, checksum in rows:
            if checksum is None:
                path = resolve_image_path(Path(ds.images_root), file_name)
                if not path.is_file():
                    continue
                checksum = missing[image_id] = file_checksum(path)
            out.append((image_id, file_name, checksum))
        for image_id, checksum in missing.items():
            session.get(Image, image_id).checksum = checksum
    return ds, out


def photo_hash(image: PILImage.Image) -> np.ndarray:
    """The photo's 256-bit difference hash (see :func:`workbench.embeddings.store.difference_hash`)."""
    gray = np.asarray(image.convert("L").resize((17, 16), PILImage.Resampling.BILINEAR), dtype=np.int16)
    return difference_hash(gray)


def _open(path: Path, draft_to: int | None) -> PILImage.Image:
    with PILImage.open(path) as image:
        if draft_to:
            image.draft("RGB", (draft_to, draft_to))
        return image.convert("RGB")


def _crop_box(x: int, y: int, w: int, h: int, width: int, height: int, pad: float) -> tuple[int, int, int, int]:
    px, py = round(w * pad), round(h * pad)
    return max(0, x - px), max(0, y - py), min(width, x + w + px), min(height, y + h + py)


def crop_key(checksum: str, x: int, y: int, w: int, h: int) -> str:
    """The store key of a garment crop: the photo's checksum and the box."""
    return f"{checksum}:{x},{y},{w},{h}"


def encode_images(clip: Any, images: list[PILImage.Image]) -> np.ndarray:
    """L2-normalised image features of ``images`` as one batch: (n, dim) float32."""
    import torch

    pixels = torch.stack([clip.preprocess(im) for im in images]).to(clip.device)
    with torch.inference_mode():
        features = clip.model.encode_image(pixels.to(next(clip.model.parameters()).dtype)).float()
    return torch.nn.functional.normalize(features, dim=-1).cpu().numpy()


def encode_texts(clip: Any, texts: list[str]) -> np.ndarray:
    """L2-normalised text features through the CLIP text tower: (n, dim) float32."""
    import torch

    tokens = clip.tokenize(texts).to(clip.device)
    with torch.inference_mode():
        features = clip.model.encode_text(tokens).float()
    return torch.nn.functional.normalize(features, dim=-1).cpu().numpy()


def load_model(model: str, device: str = "auto") -> Any:
    """The open_clip model ``model`` (a registry name, ``ARCH/TAG``, a folder), cached per process."""
    from workbench.captions.interrogator import load_clip

    return load_clip(model, device)


def embed_dataset(engine: Engine, dataset: str, data_dir: Path, settings: EmbedSettings | None = None, *,
                  progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> EmbedResult:
    """Embed every image of ``dataset`` not yet in its store (and, with ``crops``, every garment box).

    Raises :class:`workbench.captions.base.CaptionerError` when the model cannot be loaded.
    """
    settings = settings or EmbedSettings()
    ds, rows = image_checksums(engine, dataset)
    store = EmbeddingStore.open(data_dir, ds.name, settings.model)
    result = EmbedResult(dataset=ds.name, model=settings.model, images=len(rows), store=str(store.folder))
    stored = set(store.read("images").keys)
    todo = list({r[2]: r for r in reversed(rows) if r[2] not in stored}.values())[::-1]  # one per photo
    result.reused = sum(1 for r in rows if r[2] in stored)
    crops_todo: list[tuple[int, str, str, list[tuple[int, int, int, int]]]] = []
    if settings.crops:
        crops_todo, result.crops_reused = _crops_to_do(engine, ds, rows, store, settings)
    total = len(todo) + sum(len(c[3]) for c in crops_todo)
    report(progress, 0, total)
    if total:
        _embed_rows(store, ds, todo, crops_todo, settings, result, total, progress, should_stop)
    if not result.stopped and settings.map != "none":
        result.map = _ensure_map(store, settings.map)
    return result


def _ensure_map(store: EmbeddingStore, method: str) -> str:
    """Make the 2-D map unless one of that method already covers every stored row."""
    from workbench.embeddings.projection import compute_map, umap_available

    wanted = "umap" if method == "auto" and umap_available() else ("pca" if method == "auto" else method)
    saved = store.read_map(wanted)
    if saved is not None and set(store.read("images").keys) <= saved.keys():
        return wanted
    return compute_map(store, wanted)[0]


def _embed_rows(store: EmbeddingStore, ds: Dataset, todo: list[tuple[int, str, str]],
                crops_todo: list[tuple[int, str, str, list[tuple[int, int, int, int]]]], settings: EmbedSettings,
                result: EmbedResult, total: int, progress: ProgressFn | None, should_stop: StopFn | None) -> None:
    clip = load_model(settings.model, settings.device)
    size = _input_size(clip)
    root, done = Path(ds.images_root), 0
    for start in range(0, len(todo), settings.batch_size):
        if should_stop is not None and should_stop():
            result.stopped = True
            return
        batch, keys, hashes = [], [], []
        for _image_id, file_name, checksum in todo[start:start + settings.batch_size]:
            try:
                image = _open(resolve_image_path(root, file_name), draft_to=2 * size)
            except (OSError, ValueError) as exc:
                result.failed[file_name] = str(exc)
                continue
            batch.append(image)
            keys.append(checksum)
            hashes.append(photo_hash(image))
        if batch:
            store.append("images", keys, encode_images(clip, batch), np.stack(hashes))
            result.embedded += len(batch)
        done += len(todo[start:start + settings.batch_size])
        report(progress, done, total)
    pending: list[tuple[str, PILImage.Image]] = []
    for _image_id, file_name, checksum, boxes in crops_todo:
        if should_stop is not None and should_stop():
            result.stopped = True
            return
        try:
            image = _open(resolve_image_path(root, file_name), draft_to=None)
        except (OSError, ValueError) as exc:
            result.failed[file_name] = str(exc)
            done += len(boxes)
            continue
        for x, y, w, h in boxes:
            pending.append((crop_key(checksum, x, y, w, h),
                            image.crop(_crop_box(x, y, w, h, image.width, image.height, settings.crop_padding))))
        if len(pending) >= settings.batch_size:
            done += _flush_crops(store, clip, pending, result)
            report(progress, done, total)
    done += _flush_crops(store, clip, pending, result)
    report(progress, done, total)


def _flush_crops(store: EmbeddingStore, clip: Any, pending: list[tuple[str, PILImage.Image]],
                 result: EmbedResult) -> int:
    if not pending:
        return 0
    keys = list(dict.fromkeys(k for k, _ in pending))
    crops = dict(pending)
    store.append("crops", keys, encode_images(clip, [crops[k] for k in keys]))
    result.crops_embedded += len(keys)
    n = len(pending)
    pending.clear()
    return n


def _crops_to_do(engine: Engine, ds: Dataset, rows: list[tuple[int, str, str]], store: EmbeddingStore,
                 settings: EmbedSettings) -> tuple[list[tuple[int, str, str, list[tuple[int, int, int, int]]]], int]:
    stored = set(store.read("crops").keys)
    checksum_of = {r[0]: r for r in rows}
    boxes: dict[int, list[tuple[int, int, int, int]]] = {}
    reused = 0
    with session_scope(engine) as session:
        for image_id, x, y, w, h in session.execute(
                select(Annotation.image_id, Annotation.bbox_x, Annotation.bbox_y, Annotation.bbox_w, Annotation.bbox_h)
                .where(Annotation.dataset_id == ds.id).order_by(Annotation.image_id, Annotation.id)):
            if image_id not in checksum_of or min(w, h) < settings.min_crop_side:
                continue
            if crop_key(checksum_of[image_id][2], x, y, w, h) in stored:
                reused += 1
                continue
            boxes.setdefault(image_id, []).append((x, y, w, h))
    return [(*checksum_of[i], b) for i, b in boxes.items()], reused


def _input_size(clip: Any) -> int:
    size = getattr(getattr(clip.model, "visual", None), "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)
