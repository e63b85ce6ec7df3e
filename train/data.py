"""Training data from an export folder: records, masks as class ids, the sampler that resumes.

Both export layouts are read: the ControlNet reference layout (``prompt.json`` lines
``{"source", "target", "prompt"}``) and the Hugging Face image folder (``metadata.jsonl`` lines
``{"file_name", "conditioning_image_file_name", "text"}``). Masks are single-channel label PNGs
(pixel value = class id): they are kept as class ids and only ever resized with
nearest-neighbour, so no value that is not in the legend can appear. The control input made from
them is in [0, 1]: the palette colours / 255, or a K-channel one-hot map.

Randomness in the data (the flip) is a function of (seed, epoch, sample index), and the order of
samples is a seeded permutation per epoch, so a resumed run sees exactly the data an
uninterrupted one would have seen.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image


class DataError(ValueError):
    """An export folder the trainer cannot read; the message names the file and the fix."""


@dataclass(frozen=True)
class Record:
    """One training pair: photo, mask, prompt, and its split."""

    index: int
    photo: Path
    mask: Path
    prompt: str
    split: str


@dataclass(frozen=True)
class Scheme:
    """What the manifest says about the masks: scheme name, class count, colours."""

    name: str
    num_classes: int | None
    palette: np.ndarray | None  # (256, 3) uint8, or None when the manifest gives no colours


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {number}: expected a JSON object per line")
        rows.append(row)
    return rows


def read_records(folder: Path, validation_split: float = 0.05, seed: int = 0) -> list[Record]:
    """The export's pairs, each with a split (the export's own, or a seeded hold-out)."""
    folder = Path(folder)
    if (folder / "prompt.json").is_file():
        index_file, keys = folder / "prompt.json", ("target", "source", "prompt")
    elif (folder / "metadata.jsonl").is_file():
        index_file, keys = folder / "metadata.jsonl", ("file_name", "conditioning_image_file_name", "text")
    else:
        raise DataError(f"{folder} holds neither prompt.json (ControlNet layout) nor metadata.jsonl "
                        "(image folder); point train_data_dir at an export folder")
    records = []
    for i, row in enumerate(_jsonl(index_file)):
        missing = [k for k in keys if k not in row]
        if missing:
            raise DataError(f"{index_file} line {i + 1}: missing {', '.join(missing)}")
        photo, mask = (folder / row[keys[0]]).resolve(), (folder / row[keys[1]]).resolve()
        if not photo.is_relative_to(folder.resolve()) or not mask.is_relative_to(folder.resolve()):
            raise DataError(f"{index_file} line {i + 1}: path leaves the export folder")
        split = str(row.get("split", ""))
        records.append(Record(i, photo, mask, str(row[keys[2]] or ""), split))
    if not records:
        raise DataError(f"{index_file} lists no images")
    splits = _manifest_splits(folder)
    if splits and not any(r.split for r in records):
        records = [Record(r.index, r.photo, r.mask, r.prompt, splits.get(r.index, "train")) for r in records]
    if not any(r.split for r in records) and validation_split > 0 and len(records) > 1:
        held = max(1, round(len(records) * validation_split))
        order = np.random.default_rng(seed).permutation(len(records))[:held]
        chosen = set(order.tolist())
        records = [Record(r.index, r.photo, r.mask, r.prompt, "validation" if r.index in chosen else "train")
                   for r in records]
    return [r if r.split else Record(r.index, r.photo, r.mask, r.prompt, "train") for r in records]


def _manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({exc.msg}); re-export the folder") from None
    return data if isinstance(data, dict) else {}


def _manifest_splits(folder: Path) -> dict[int, str]:
    """Split per line index, from the manifest's ``items`` (the workbench export writes them)."""
    items = _manifest(folder).get("items")
    if not isinstance(items, list):
        return {}
    return {int(item["index"]): str(item["split"]) for item in items
            if isinstance(item, dict) and "index" in item and item.get("split")}


def _legend(node: Any) -> dict | list | None:
    """The first ``legend`` (or ``classes``) found in a manifest, searched depth first."""
    if isinstance(node, dict):
        for key in ("legend", "classes"):
            if isinstance(node.get(key), (dict, list)):
                return node[key]
        for value in node.values():
            found = _legend(value)
            if found is not None:
                return found
    return None


def read_scheme(folder: Path) -> Scheme:
    """The mask scheme the export's ``manifest.json`` names (name, class count, colours)."""
    manifest = _manifest(folder)
    if not manifest:
        return Scheme("unknown", None, None)
    recipe = manifest.get("recipe", {}) if isinstance(manifest.get("recipe"), dict) else {}
    scheme = manifest.get("scheme") if isinstance(manifest.get("scheme"), dict) else recipe.get("scheme")
    name = scheme.get("name", "unknown") if isinstance(scheme, dict) else str(scheme or "unknown")
    legend = _legend(scheme) if isinstance(scheme, dict) else None
    legend = legend if legend is not None else _legend(manifest)
    values: list[int] = []
    palette = None
    if isinstance(legend, dict):
        values = [int(v) for v in legend if str(v).isdigit()]
        colours = {int(k): v.get("colour") or v.get("color") for k, v in legend.items()
                   if str(k).isdigit() and isinstance(v, dict)}
    elif isinstance(legend, list):
        values = [int(e.get("value", i)) if isinstance(e, dict) else i for i, e in enumerate(legend)]
        colours = {int(e.get("value", i)): e.get("colour") or e.get("color")
                   for i, e in enumerate(legend) if isinstance(e, dict)}
    else:
        colours = {}
    if colours and all(c for c in colours.values()):
        palette = np.zeros((256, 3), np.uint8)
        for value, colour in colours.items():
            palette[value] = colour[:3]
    count = None
    for node in (scheme if isinstance(scheme, dict) else {}, manifest):
        for key in ("num_classes", "class_count"):
            if isinstance(node.get(key), int):
                count = node[key]
    if count is None and values:
        count = max(values) + 1
    return Scheme(name, count, palette)


def load_mask(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A label PNG as (class ids (H, W) uint8, its palette (256, 3) or None)."""
    with Image.open(path) as image:
        if image.mode == "P":
            flat = image.getpalette() or []
            flat = flat + [0] * (768 - len(flat))
            return np.array(image), np.array(flat[:768], np.uint8).reshape(256, 3)
        if image.mode in ("L", "I", "I;16"):
            return np.array(image).astype(np.uint8), None
    raise DataError(f"{path}: mask is a {image.mode} image; masks must be single-channel label PNGs "
                    "(palette 'P' or greyscale 'L', pixel value = class id) as the export writes them")


Size = tuple[int, int]  # (width, height)


def _as_size(target: int | Size) -> Size:
    return (target, target) if isinstance(target, int) else (int(target[0]), int(target[1]))


def fit_geometry(size: Size, target: int | Size) -> tuple[Size, tuple[int, int, int, int]]:
    """Resize (aspect kept, covering ``target``) and centre-crop box for an image of ``size``.

    ``target`` is a side (a square) or a ``(width, height)`` bucket.
    """
    width, height = size
    out_w, out_h = _as_size(target)
    scale = max(out_w / width, out_h / height)
    new = (max(out_w, round(width * scale)), max(out_h, round(height * scale)))
    left, top = (new[0] - out_w) // 2, (new[1] - out_h) // 2
    return new, (left, top, left + out_w, top + out_h)


def fit_mask(mask: np.ndarray, target: int | Size, flip: bool) -> np.ndarray:
    """A class-id mask resized (nearest only) and cropped as :func:`prepare_pair` does its photo."""
    out_w, out_h = _as_size(target)
    if mask.shape != (out_h, out_w):
        new, box = fit_geometry((mask.shape[1], mask.shape[0]), (out_w, out_h))
        mask = np.array(Image.fromarray(mask).resize(new, Image.Resampling.NEAREST).crop(box))
    return np.ascontiguousarray(mask[:, ::-1] if flip else mask)


def prepare_pair(photo: Image.Image, mask: np.ndarray, target: int | Size, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Photo (H, W, 3) uint8 and mask (H, W) class ids with the same geometry; masks nearest only."""
    photo = photo.convert("RGB")
    if photo.size != (mask.shape[1], mask.shape[0]):
        raise DataError(f"photo is {photo.size[0]}x{photo.size[1]} but its mask {mask.shape[1]}x{mask.shape[0]}")
    size = _as_size(target)
    if photo.size != size:
        new, box = fit_geometry(photo.size, size)
        photo = photo.resize(new, Image.Resampling.BICUBIC).crop(box)
    pixels = np.array(photo)
    return np.ascontiguousarray(pixels[:, ::-1] if flip else pixels), fit_mask(mask, size, flip)


def assign_buckets(records: list[Record], resolution: int, buckets: bool) -> list[Size]:
    """The training size of every record: its aspect bucket at ``resolution`` (the export's own
    size when it is one), or the ``resolution`` square when ``buckets`` is off."""
    if not buckets:
        return [(resolution, resolution)] * len(records)
    from workbench.buckets import bucket_sizes, output_size

    allowed = set(bucket_sizes(resolution)) | {(resolution, resolution)}
    sizes = []
    for record in records:
        with Image.open(record.photo) as photo:  # reads the header only
            size = photo.size
        sizes.append(size if size in allowed else output_size(size[0], size[1], resolution, True))
    return sizes


def flip_of(seed: int, epoch: int, index: int, enabled: bool) -> bool:
    """Whether sample ``index`` is flipped in ``epoch`` (a pure function: resumable, worker-safe)."""
    if not enabled:
        return False
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return digest[0] & 1 == 1


class ExportDataset(torch.utils.data.Dataset):
    """Training samples of an export: pixels in [-1, 1] (or cached latent slots), class-id masks.

    ``sizes`` gives every record's training size (its aspect bucket); default the square.
    ``masks``, when given, holds every record's class-id mask at that size (unflipped), so no
    mask file is read per step.
    """

    def __init__(self, records: list[Record], resolution: int, seed: int = 0, random_flip: bool = False,
                 load_pixels: bool = True, num_classes: int | None = None, sizes: list[Size] | None = None,
                 masks: "MaskCache | None" = None):
        self.records = records
        self.resolution = resolution
        self.seed = seed
        self.random_flip = random_flip
        self.load_pixels = load_pixels
        self.num_classes = num_classes
        self.sizes = sizes or [(resolution, resolution)] * len(records)
        self.masks = masks
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose flips the next iteration draws."""
        self.epoch = epoch

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        # (index, epoch) from BucketBatchSampler: persistent workers never see set_epoch
        i, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        record = self.records[i]
        flip = flip_of(self.seed, epoch, record.index, self.random_flip)
        item: dict[str, Any] = {"index": i, "flip": flip}
        if self.masks is not None and not self.load_pixels:
            mask = self.masks.get(i)
            item["mask"] = torch.from_numpy(mask[:, ::-1].copy() if flip else np.array(mask))  # a copy: the cache is read-only
            return item
        mask, _palette = load_mask(record.mask)
        if self.num_classes is not None and int(mask.max()) >= self.num_classes:
            raise DataError(f"{record.mask}: holds class {int(mask.max())} but the control input has "
                            f"{self.num_classes} channels; set conditioning_channels to the scheme's class "
                            "count (background included)")
        if self.load_pixels:
            with Image.open(record.photo) as photo:
                pixels, mask = prepare_pair(photo, mask, self.sizes[i], flip)
            item["pixel_values"] = torch.from_numpy(pixels).permute(2, 0, 1).float().div(127.5).sub(1)
        else:
            mask = fit_mask(mask, self.sizes[i], flip)
        item["mask"] = torch.from_numpy(mask)  # uint8 class ids; widened on the device
        return item


class MaskCache:
    """Every record's class-id mask at its training size, uint8, one array per bucket."""

    def __init__(self, arrays: dict[Size, np.ndarray], rows: list[tuple[Size, int]]):
        self.arrays, self.rows = arrays, rows

    def get(self, i: int) -> np.ndarray:
        """The (H, W) mask of record ``i`` (unflipped)."""
        size, row = self.rows[i]
        return self.arrays[size][row]


def bucket_rows(sizes: list[Size]) -> tuple[dict[Size, list[int]], list[tuple[Size, int]]]:
    """Records per bucket (in record order) and, per record, its (bucket, row in that bucket)."""
    members: dict[Size, list[int]] = {}
    rows = []
    for i, size in enumerate(sizes):
        rows.append((size, len(members.setdefault(size, []))))
        members[size].append(i)
    return members, rows


class ResumableSampler(torch.utils.data.Sampler[int]):
    """Single samples in a seeded permutation per epoch, split across processes, that can start
    mid-epoch (the segmenter trainer's: one size, full batches only).

    Every process gets ``len(data) // (world * batch)`` full batches per epoch (the remainder is
    dropped, as ``drop_last`` would), process ``rank`` taking every ``world``-th batch, so the
    processes see disjoint samples.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.start_batch = 0, 0
        if self.batches_per_epoch == 0:
            raise DataError(f"{n} training samples are fewer than one batch per process "
                            f"({batch_size} x {world} processes); lower train_batch_size")

    @property
    def batches_per_epoch(self) -> int:
        """Batches each process draws per epoch."""
        return self.n // (self.world * self.batch_size)

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        """Where the next iteration begins: ``epoch``, skipping its first ``start_batch`` batches."""
        self.epoch, self.start_batch = epoch, start_batch

    def indices(self) -> list[int]:
        """This process's sample indices for the current epoch from the start position."""
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        out = []
        for b in range(self.start_batch, self.batches_per_epoch):
            first = (b * self.world + self.rank) * self.batch_size
            out.extend(order[first:first + self.batch_size].tolist())
        return out

    def __iter__(self):
        return iter(self.indices())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


class BucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of one size each (kohya-style aspect buckets), resumable mid-epoch, split across processes.

    Per epoch: a seeded permutation of the samples, grouped by bucket and cut into batches of
    ``batch_size`` (a bucket's last batch may be smaller), then the batches themselves in a seeded
    order. Every sample appears once per epoch; with several processes each takes every
    ``world``-th batch and the last ``batches % world`` batches are left out, so that every process
    draws as many batches. With one bucket and ``len % batch_size == 0`` this is a plain shuffle.
    """

    def __init__(self, sizes: list[Size], batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.sizes, self.batch_size, self.seed, self.rank, self.world = list(sizes), batch_size, seed, rank, world
        self.epoch, self.start_batch = 0, 0
        self.members, _rows = bucket_rows(self.sizes)
        total = sum(-(-len(m) // batch_size) for m in self.members.values())
        self._per_process = total // world
        if self._per_process == 0:
            raise DataError(f"{len(self.sizes)} training samples make {total} batches, fewer than one per process "
                            f"({world} processes); lower train_batch_size or use fewer processes")

    @property
    def batches_per_epoch(self) -> int:
        """Batches each process draws per epoch."""
        return self._per_process

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        """Where the next iteration begins: ``epoch``, skipping its first ``start_batch`` batches."""
        self.epoch, self.start_batch = epoch, start_batch

    def epoch_batches(self) -> list[list[int]]:
        """Every batch of the current epoch, all processes together, in training order."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.sizes), generator=generator).tolist()
        by_bucket: dict[Size, list[int]] = {size: [] for size in self.members}
        for i in order:
            by_bucket[self.sizes[i]].append(i)
        batches = [chunk[j:j + self.batch_size] for chunk in by_bucket.values()
                   for j in range(0, len(chunk), self.batch_size)]
        if len(by_bucket) == 1:
            return batches  # one bucket: the permutation's own order
        shuffle = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[k] for k in shuffle]

    def batches(self) -> list[list[int]]:
        """This process's batches for the current epoch from the start position."""
        every = self.epoch_batches()
        return [every[b * self.world + self.rank] for b in range(self.start_batch, self._per_process)]

    def __iter__(self):
        # (index, epoch) keys: the dataset draws the epoch's flips even in persistent workers
        return iter([[(i, self.epoch) for i in batch] for batch in self.batches()])

    def __len__(self) -> int:
        return self._per_process - self.start_batch


def palette_table(scheme: Scheme, records: list[Record]) -> np.ndarray:
    """The (256, 3) colours of the palette conditioning: the manifest's, else the first mask's."""
    if scheme.palette is not None:
        return scheme.palette
    _mask, palette = load_mask(records[0].mask)
    if palette is not None:
        return palette
    from workbench.palette import FINE_PALETTE

    return np.array(FINE_PALETTE, np.uint8)


def control_input(mask: torch.Tensor, mode: str, channels: int, table: torch.Tensor) -> torch.Tensor:
    """Class-id masks (B, H, W) -> control input (B, C, H, W) in [0, 1]: palette RGB or one-hot."""
    mask = mask.long()  # uint8 masks would index as booleans
    if mode == "onehot":
        return torch.nn.functional.one_hot(mask, channels).permute(0, 3, 1, 2).float()
    return table.to(mask.device)[mask].permute(0, 3, 1, 2).float().div(255)
