"""Train a SegFormer cloth segmenter on the curated data under any mask scheme (accelerate).

    python train/segmenter.py --config seg.yaml [--set key=value ...]
    accelerate launch --num_processes 2 train/segmenter.py --config seg.yaml
    python -m workbench segment train --config seg.yaml            (what a background job runs)

Data: a dataset in the store (``dataset`` + ``scheme``: each image's mask rendered once with
the project's scheme rendering, ``workbench/masks.py``, into ``output_dir/masks``), or an export
folder (``train_data_dir``: its photos, label PNGs and splits). Only images with real masks
train; the validation split is the store's own ``validation``/``val`` images where there are
any, else a seeded hold-out of ``validation_split`` by file name (the export's rule).

Model output k is the scheme's k-th class (its values in order); pixels with a value the scheme
does not list are ignored (255). Augmentations move photo and mask together and are pure
functions of (seed, epoch, sample): a scale in ``[scale_min, scale_max]``, a crop position and a
horizontal flip, so a resumed run sees exactly the data an uninterrupted one would. Checkpoints
(``checkpoint-<step>/``) hold model, optimizer, scheduler, scaler and RNG state plus a loadable
``model/`` folder; every evaluation logs per-class IoU and mIoU on the validation split into
``metrics.jsonl``. The final model (``output_dir``) records its scheme and resolution in its
``config.json``, so ``segment predict --model output_dir`` needs nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

if __package__ in (None, ""):  # run as a script (python train/segmenter.py, accelerate launch)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from train.config import ConfigError, load_settings, write_settings
from train.controlnet import list_checkpoints
from train.runs import MetricsLog, Steps, StopRequested, resume_state, run_details, run_script, save_checkpoint, start_run
from train.data import DataError, ResumableSampler, flip_of, load_mask, read_records, read_scheme
from workbench.segment.loaders import SegmenterScheme as Classes  # model output k is scheme value values[k]

METRICS_FILE = "metrics.jsonl"
IGNORE = 255
VALIDATION_SPLITS = ("validation", "val")


class SegmenterConfig(BaseModel):
    """Everything one segmenter training run needs."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # -- model
    pretrained_model_name_or_path: str | None = Field(
        None, description="SegFormer hub id or folder (e.g. nvidia/mit-b2); its head is resized to the scheme.")
    segformer_config: dict[str, Any] | None = Field(
        None, description="A SegformerConfig as a mapping: random initial weights (tests, from scratch).")
    # -- data
    dataset: str | None = Field(None, description="A dataset in the store (its masks rendered under `scheme`).")
    scheme: str = Field("cloth-seg", description="Mask scheme of a store dataset.")
    db_url: str | None = Field(None, description="Store URL (default: the workbench's settings).")
    train_data_dir: Path | None = Field(None, description="Or an export folder (prompt.json / metadata.jsonl).")
    output_dir: Path
    resolution: int = Field(512, ge=32, description="Side of the square training crops.")
    validation_split: float = Field(0.1, ge=0, lt=1, description="Held out when the data names no validation split.")
    max_validation_images: int = Field(200, ge=1)
    # -- augmentation
    random_flip: bool = True
    scale_min: float = Field(0.75, gt=0)
    scale_max: float = Field(1.5, gt=0)
    # -- loss
    class_weights: Literal["none", "inverse-frequency"] | list[float] = Field(
        "none", description="none, inverse-frequency (from the training masks, normalised to mean 1), or one per class.")
    # -- optimisation
    train_batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(6e-5, gt=0)
    weight_decay: float = 0.01
    lr_scheduler: Literal["constant", "linear", "polynomial", "cosine"] = "polynomial"
    lr_warmup_steps: int = Field(0, ge=0)
    max_train_steps: int = Field(2000, ge=1)
    max_grad_norm: float = 1.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 0
    dataloader_num_workers: int = Field(0, ge=0)
    # -- bookkeeping
    checkpointing_steps: int = Field(500, ge=1)
    checkpoints_total_limit: int | None = Field(3, ge=1)
    resume_from_checkpoint: str | None = Field(None, description="'latest' or a checkpoint folder.")
    validation_steps: int = Field(500, ge=1)
    logging_steps: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> "SegmenterConfig":
        if (self.pretrained_model_name_or_path is None) == (self.segformer_config is None):
            raise ValueError("give exactly one of pretrained_model_name_or_path (hub id or folder) and "
                             "segformer_config (random weights)")
        if (self.dataset is None) == (self.train_data_dir is None):
            raise ValueError("give exactly one data source: dataset (with scheme) or train_data_dir (an export folder)")
        if self.scale_min > self.scale_max:
            raise ValueError(f"scale_min {self.scale_min} is above scale_max {self.scale_max}")
        return self

    def to_file(self, path: Path) -> Path:
        """Write this config as YAML (``.yaml``/``.yml``) or JSON."""
        return write_settings(self, path)


def load_segmenter_config(path: Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> SegmenterConfig:
    """A validated segmenter config from a file (optional) with ``key=value`` overrides on top."""
    return load_settings(SegmenterConfig, path, overrides)


# -- data ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """One photo and its label PNG (scheme values), with its split."""

    index: int
    photo: Path
    mask: Path
    split: str
    name: str


def class_lut(classes: Classes) -> np.ndarray:
    """Scheme value -> model output index (255 = ignored: a value the scheme does not list)."""
    table = np.full(256, IGNORE, np.uint8)
    for k, value in enumerate(classes.values):
        table[value] = k
    return table


def store_samples(config: SegmenterConfig, main: bool) -> tuple[list[Sample], Classes]:
    """Samples of a store dataset: every image with real masks, its mask rendered once (cached)."""
    from sqlalchemy import exists, select

    from db.engine import make_engine, session_scope
    from db.models import Annotation, Image as ImageRow
    from workbench.datasets import DatasetNotFound, get_dataset
    from workbench.export import assign_split
    from workbench.formats.images import ImageProblem, resolve_image_path
    from workbench.masks import MaskError, render_image_mask, save_palette_png
    from workbench.schemes import SchemeNotFound, get_scheme, scheme_for_dataset
    from workbench.settings import get_settings

    settings = get_settings(**({"db_url": config.db_url} if config.db_url else {}))
    engine = make_engine(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    masks_dir = Path(config.output_dir) / "masks"
    with session_scope(engine) as session:
        try:
            dataset = get_dataset(session, config.dataset)
            stored = scheme_for_dataset(session, get_scheme(session, config.scheme), dataset.id)
        except (DatasetNotFound, SchemeNotFound) as exc:
            raise ConfigError(str(exc)) from None
        classes = Classes(stored.name, stored.version, tuple(c.value for c in stored.definition.classes),
                          tuple(c.name for c in stored.definition.classes))
        rows = session.execute(select(ImageRow.id, ImageRow.file_name, ImageRow.split)
                               .where(ImageRow.dataset_id == dataset.id,
                                      exists().where(Annotation.image_id == ImageRow.id))
                               .order_by(ImageRow.id)).all()
        own_validation = any((split or "").lower() in VALIDATION_SPLITS for _i, _f, split in rows)
        samples = []
        for index, (image_id, file_name, split) in enumerate(rows):
            mask_path = masks_dir / f"{stored.name}-v{stored.version}" / f"{image_id}.png"
            if main and not mask_path.is_file():
                try:
                    save_palette_png(render_image_mask(session, image_id, stored.name, scheme_version=stored.version),
                                     mask_path)
                except MaskError as exc:
                    raise DataError(str(exc)) from None
            if own_validation:
                split = "validation" if (split or "").lower() in VALIDATION_SPLITS else "train"
            else:
                split = assign_split(file_name, config.seed, config.validation_split)
            try:
                photo = resolve_image_path(Path(dataset.images_root), file_name)
            except ImageProblem as exc:
                raise DataError(f"dataset {config.dataset!r}: {exc}") from None
            samples.append(Sample(index, photo, mask_path, split, file_name))
    if not samples:
        raise DataError(f"dataset {config.dataset!r} has no image with real masks to train on")
    return samples, classes


def export_samples(config: SegmenterConfig) -> tuple[list[Sample], Classes]:
    """Samples of an export folder, with the classes its manifest's legend names."""
    records = read_records(config.train_data_dir, config.validation_split, config.seed)
    scheme = read_scheme(config.train_data_dir)
    manifest = Path(config.train_data_dir) / "manifest.json"
    legend = _manifest_legend(manifest)
    if not legend:
        raise DataError(f"{manifest} names no legend of the mask classes; re-export the folder with the workbench "
                        "(its manifest records the scheme)")
    values = tuple(sorted(legend))
    samples = [Sample(r.index, r.photo, r.mask, "validation" if r.split != "train" else "train", r.photo.name)
               for r in records]
    return samples, Classes(scheme.name, None, values, tuple(legend[v] for v in values))


def _manifest_legend(path: Path) -> dict[int, str]:
    from train.data import _legend

    if not path.is_file():
        return {}
    found = _legend(json.loads(path.read_text(encoding="utf-8")))
    if isinstance(found, dict):
        return {int(k): (v.get("name") if isinstance(v, dict) else str(v)) for k, v in found.items() if str(k).isdigit()}
    if isinstance(found, list):
        return {int(e.get("value", i)) if isinstance(e, dict) else i: (e.get("name") if isinstance(e, dict) else str(e))
                for i, e in enumerate(found)}
    return {}


def _draw(seed: int, epoch: int, index: int, what: str) -> float:
    """A number in [0, 1) that depends only on (seed, epoch, index, what): resumable randomness."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}:{what}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def scale_crop(photo: Image.Image, mask: np.ndarray, resolution: int, scale: float, fx: float, fy: float,
               flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Photo and mask scaled (short side = resolution x scale), cropped at (fx, fy), flipped: together.

    The mask is resized nearest-neighbour only; where the crop is larger than the scaled image
    the photo is padded with black and the mask with the ignore value.
    """
    width, height = photo.size
    factor = resolution * scale / min(width, height)
    new = (max(1, round(width * factor)), max(1, round(height * factor)))
    pixels = np.asarray(photo.convert("RGB").resize(new, Image.Resampling.BILINEAR))
    labels = np.asarray(Image.fromarray(mask).resize(new, Image.Resampling.NEAREST))
    out_p = np.zeros((resolution, resolution, 3), np.uint8)
    out_m = np.full((resolution, resolution), IGNORE, np.uint8)
    left = int(fx * max(0, new[0] - resolution + 1))
    top = int(fy * max(0, new[1] - resolution + 1))
    crop_p = pixels[top:top + resolution, left:left + resolution]
    crop_m = labels[top:top + resolution, left:left + resolution]
    out_p[:crop_p.shape[0], :crop_p.shape[1]] = crop_p
    out_m[:crop_m.shape[0], :crop_m.shape[1]] = crop_m
    if flip:
        out_p, out_m = out_p[:, ::-1], out_m[:, ::-1]
    return np.ascontiguousarray(out_p), np.ascontiguousarray(out_m)


def read_pair(sample: Sample, lut: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """The photo and its mask as class indices (255 where the value is not a class)."""
    mask, _palette = load_mask(sample.mask)
    with Image.open(sample.photo) as photo:
        photo = photo.convert("RGB")
    if photo.size != (mask.shape[1], mask.shape[0]):
        raise DataError(f"{sample.photo}: photo is {photo.size[0]}x{photo.size[1]} but its mask {sample.mask} is "
                        f"{mask.shape[1]}x{mask.shape[0]}")
    return photo, lut[mask]


class SegmentationDataset(torch.utils.data.Dataset):
    """Training crops: pixels (ImageNet-normalised) and class-index labels, augmented per (epoch, sample)."""

    def __init__(self, samples: list[Sample], classes: Classes, config: SegmenterConfig, augment: bool = True):
        self.samples, self.lut, self.config, self.augment = samples, class_lut(classes), config, augment
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose augmentations the next iteration draws."""
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict[str, Any]:
        from workbench.segment.predict import normalise

        sample, c = self.samples[i], self.config
        photo, labels = read_pair(sample, self.lut)
        if self.augment:
            draw = lambda what: _draw(c.seed, self.epoch, sample.index, what)  # noqa: E731
            scale = c.scale_min + (c.scale_max - c.scale_min) * draw("scale")
            pixels, labels = scale_crop(photo, labels, c.resolution, scale, draw("x"), draw("y"),
                                        flip_of(c.seed, self.epoch, sample.index, c.random_flip))
        else:
            pixels = np.array(photo.resize((c.resolution, c.resolution), Image.Resampling.BILINEAR))
            labels = np.asarray(Image.fromarray(labels).resize((c.resolution, c.resolution), Image.Resampling.NEAREST))
        tensor = normalise(torch.from_numpy(pixels).permute(2, 0, 1)[None])[0]
        return {"index": i, "pixel_values": tensor, "labels": torch.from_numpy(labels.astype(np.int64))}


def class_weights(config: SegmenterConfig, samples: list[Sample], classes: Classes) -> torch.Tensor | None:
    """The loss's per-class weights: given, inverse pixel frequency (mean 1), or none."""
    k = len(classes.values)
    if config.class_weights == "none":
        return None
    if isinstance(config.class_weights, list):
        if len(config.class_weights) != k:
            raise ConfigError(f"class_weights has {len(config.class_weights)} values but scheme {classes.name!r} "
                              f"has {k} classes ({', '.join(classes.names)})")
        return torch.tensor(config.class_weights, dtype=torch.float32)
    lut = class_lut(classes)
    counts = np.zeros(k, np.float64)
    for sample in samples:
        mask, _ = load_mask(sample.mask)
        counts += np.bincount(lut[mask].ravel(), minlength=256)[:k]
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    weights = weights / weights[counts > 0].mean() if (counts > 0).any() else np.ones(k)
    return torch.tensor(weights, dtype=torch.float32)


# -- model ---------------------------------------------------------------------------------------
def build_model(config: SegmenterConfig, classes: Classes):
    """The SegFormer to train, its head sized to the scheme's classes."""
    from workbench.segment.loaders import SegmentError, load_segformer_for_training

    try:
        return load_segformer_for_training(config.pretrained_model_name_or_path or config.segformer_config,
                                           list(classes.names))
    except SegmentError as exc:
        raise ConfigError(str(exc)) from None


def record_scheme(model, classes: Classes, resolution: int) -> None:
    """Write the scheme and resolution into the model's config (saved with it)."""
    from workbench.segment.loaders import SCHEME_KEY

    setattr(model.config, SCHEME_KEY, classes.as_dict())
    model.config.workbench_resolution = resolution


# -- evaluation ----------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, loader, classes: Classes, device, autocast) -> dict[str, Any]:
    """Per-class IoU and mIoU of ``model`` over ``loader`` (labels at the model input's size)."""
    from workbench.segment.metrics import ConfusionMatrix, iou_report

    was_training = model.training
    model.eval()
    confusion = ConfusionMatrix(len(classes.values), ignore_index=IGNORE)
    for batch in loader:
        with autocast():
            logits = model(pixel_values=batch["pixel_values"].to(device)).logits
        labels = batch["labels"]
        up = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
        confusion.add(labels.numpy(), up.argmax(1).cpu().numpy())
    model.train(was_training)
    return iou_report(confusion, dict(enumerate(classes.names)))


# -- the run -------------------------------------------------------------------------------------
@dataclass
class SegmenterResult:
    """Where a finished (or stopped) run left things."""

    output_dir: Path
    global_step: int
    last_checkpoint: Path | None
    metrics_path: Path
    last_eval: dict[str, Any] | None


def train(config: SegmenterConfig, progress: Callable[[int, int | None], None] | None = None,
          should_stop: Callable[[], bool] | None = None,
          on_details: Callable[[dict[str, Any]], None] | None = None) -> SegmenterResult:
    """Train a segmenter as ``config`` says; see the module docstring."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    output_dir = Path(config.output_dir)
    on_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    AcceleratorState._reset_state()  # one run per Accelerator; see train/controlnet.py
    accelerator = Accelerator(cpu=on_cpu, gradient_accumulation_steps=config.gradient_accumulation_steps,
                              mixed_precision=config.mixed_precision)
    main = accelerator.is_main_process
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device

    log = start_run(accelerator, config, "segmenter_config.json")
    set_seed(config.seed + rank)

    with accelerator.main_process_first():  # the main process renders the masks; the others read them
        samples, classes = store_samples(config, main) if config.dataset else export_samples(config)
    train_samples = [s for s in samples if s.split == "train"]
    val_samples = [s for s in samples if s.split != "train"][: config.max_validation_images]
    if not train_samples:
        raise DataError("every image with masks fell in the validation split; lower validation_split")
    log(f"data: {len(train_samples)} training and {len(val_samples)} validation images, scheme {classes.name} "
        f"({len(classes.values)} classes: {', '.join(classes.names)})")

    model = build_model(config, classes)
    record_scheme(model, classes, config.resolution)
    weights = class_weights(config, train_samples, classes)
    if weights is not None:
        log("class weights: " + ", ".join(f"{n} {w:.3f}" for n, w in zip(classes.names, weights.tolist())))
        weights = weights.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer, num_warmup_steps=config.lr_warmup_steps * world,
                              num_training_steps=config.max_train_steps * world)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    dataset = SegmentationDataset(train_samples, classes, config)
    sampler = ResumableSampler(len(dataset), config.train_batch_size, config.seed, rank, world)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.train_batch_size, sampler=sampler,
                                         num_workers=config.dataloader_num_workers, drop_last=True,
                                         pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(config.seed))
    val_loader = torch.utils.data.DataLoader(SegmentationDataset(val_samples, classes, config, augment=False),
                                             batch_size=config.train_batch_size) if val_samples else None

    metrics_path = output_dir / METRICS_FILE
    steps = Steps(accelerator, config, resume_state(accelerator, config, metrics_path, log), progress, should_stop)
    accelerator.wait_for_everyone()
    found = list_checkpoints(output_dir)
    last_checkpoint = found[-1][1] if found else None
    last_eval: dict[str, Any] | None = None

    def details() -> None:
        if on_details is not None and main:
            on_details({**run_details(output_dir, metrics_path, last_checkpoint, steps.global_step, config),
                        "scheme": classes.name})

    def checkpoint() -> None:
        nonlocal last_checkpoint
        last_checkpoint = folder = save_checkpoint(
            accelerator, output_dir, steps.global_step, config.checkpoints_total_limit,
            {"config": config.model_dump(mode="json")},
            lambda f: accelerator.unwrap_model(model).save_pretrained(f / "model"))
        log(f"step {steps.global_step}: saved {folder}")
        details()

    metrics = MetricsLog(accelerator, metrics_path)
    flush = metrics.flush

    step_loss = torch.zeros((), device=device)
    step_samples = 0
    model.train()
    details()
    log(f"training {config.max_train_steps} steps from step {steps.global_step}: batch {config.train_batch_size} x "
        f"{config.gradient_accumulation_steps} accumulation x {world} processes at {config.resolution} px")
    for epoch, batch in steps.batches(sampler, dataset, loader):
        with accelerator.accumulate(model):
            with accelerator.autocast():
                logits = model(pixel_values=batch["pixel_values"].to(device)).logits
            labels = batch["labels"].to(device)
            up = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
            loss = F.cross_entropy(up, labels, weight=weights, ignore_index=IGNORE)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        step_loss += loss.detach() / config.gradient_accumulation_steps
        step_samples += len(labels)
        if not steps.stepped():
            continue
        record = metrics.add({"step": steps.global_step, "lr": scheduler.get_last_lr()[0], "epoch": epoch,
                              "time": round(time.time(), 3)}, step_loss, step_samples)
        step_loss = torch.zeros((), device=device)
        step_samples = 0
        stop = steps.report()
        if (steps.global_step % config.validation_steps == 0 or steps.last) and val_loader is not None:
            if main:
                last_eval = evaluate(accelerator.unwrap_model(model), val_loader, classes, device,
                                     accelerator.autocast)
                record.update(val_miou=last_eval["miou"], val_miou_foreground=last_eval["miou_foreground"],
                              val_pixel_accuracy=last_eval["pixel_accuracy"], val_iou=last_eval["iou"])
                log(f"step {steps.global_step}: validation mIoU {last_eval['miou']}")
            accelerator.wait_for_everyone()
        if steps.end(stop, flush, checkpoint):
            break

    flush()
    global_step, stopped = steps.global_step, steps.stopped
    if main:
        accelerator.unwrap_model(model).save_pretrained(output_dir)
        log(f"{'stopped' if stopped else 'finished'} at step {global_step}; segmenter saved in {output_dir}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if stopped:
        raise StopRequested(f"stopped at step {global_step} on request; resume from {last_checkpoint}")
    return SegmenterResult(output_dir, global_step, last_checkpoint, metrics_path, last_eval)


# -- entry point ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run the trainer from the command line; returns the exit code."""
    return run_script(argv, "Train a SegFormer segmenter on workbench data.", "train/segmenter.py",
                      load_segmenter_config, train)


if __name__ == "__main__":
    sys.exit(main())
