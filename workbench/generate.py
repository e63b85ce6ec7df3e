"""Try a trained ControlNet: generate images from a conditioning mask (and a pose), with provenance.

A generation takes a base Stable Diffusion (hub id, diffusers folder or single ``.safetensors``
file), one or more ControlNets (a training run's ``checkpoint-N`` folders, its final folder, or
any ControlNet folder), a conditioning mask and the usual settings, and writes each image as a
PNG under ``data_dir/generations/`` with a :class:`db.generations.Generation` row that says
exactly what made it: base model, ControlNet, the checksum of the export manifest it was
trained on, seed and every setting.

The mask is always in the scheme the ControlNet was trained on. A ControlNet found beside its
training config (``train_config.json`` in the run's output folder) knows its export, and the
export's ``manifest.json`` names the scheme, its version and legend: a dataset image's mask is
rendered in that scheme (with the export's crop), an uploaded mask is checked against it, and a
photo's mask is predicted in it. The control input is made from the class-id mask exactly as
the trainer makes it (``train/data.py``: fit to the resolution with nearest resampling, then the
export's palette colours / 255 or a one-hot map), so training and generation agree.

Several ControlNets generate the same mask, prompt and seeds one after the other, which is the
side-by-side of checkpoints (:func:`side_by_side`). An optional pose ControlNet joins the mask's
through diffusers' multi-ControlNet, with its own conditioning scale; the pose comes from an
OpenPose annotator (``controlnet_aux``) run on the photo.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.generations import Generation
from workbench.files import write_atomically
from workbench.formats.images import image_file
from workbench.mask_edit import MaskEditError, apply_edits
from workbench.progress import ProgressFn, StopFn, check_stop, report

SCHEDULERS = {
    "unipc": "UniPCMultistepScheduler",
    "ddim": "DDIMScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "dpm++2m": "DPMSolverMultistepScheduler",
}
SCHEDULER_LABELS = {"unipc": "UniPC", "ddim": "DDIM", "euler-a": "Euler a", "dpm++2m": "DPM++ 2M"}
GENERATIONS_DIR = "generations"
TRAIN_CONFIG = "train_config.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                "diffusion_pytorch_model.fp16.safetensors")


class GenerateError(ValueError):
    """A generation request that cannot be served; the message names the thing and the fix."""


# -- the request ---------------------------------------------------------------------------------
class MaskSource(BaseModel):
    """Where the conditioning mask comes from, and the edits made to it."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["dataset", "file", "photo"] = Field(
        description="dataset: a stored image's masks rendered in the ControlNet's scheme; file: a mask "
                    "PNG (class ids); photo: a mask predicted from a photo by the cloth segmenter.")
    image_id: int | None = Field(None, description="The stored image (kind dataset).")
    path: str | None = Field(None, description="The mask PNG (kind file) or the photo (kind photo).")
    photo: str | None = Field(None, description="The photo beside a mask file (for the pose).")
    scheme: str | None = Field(None, description="The scheme, when the ControlNet names none.")
    segmenter: str | None = Field(None, description="The cloth segmenter of a photo (kind photo): a registry "
                                                    "name or a path; default the public cloth U2NET.")
    edits: list[dict[str, Any]] = Field(default_factory=list, description="workbench/mask_edit.py edits.")


class PoseSource(BaseModel):
    """An OpenPose control beside the mask's."""

    model_config = ConfigDict(extra="forbid")

    detector: str = Field(description="OpenPose annotator: registry name, hub id (lllyasviel/Annotators) or folder.")
    controlnet: str = Field(description="The pose ControlNet: registry name, hub id or folder.")
    scale: float = Field(1.0, ge=0.0, le=2.0, description="Its conditioning scale.")


# A prompt is cut to CLIP's 77 tokens anyway: far longer text is a mistake, not a prompt.
MAX_PROMPT = 10_000
MAX_SEED = 2**63 - 1
MAX_SEEDS = 1000  # images per ControlNet in one request


class GenerateRequest(BaseModel):
    """Everything that decides a generation (settings are data: stored with every image)."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(description="Registry name (sd15, tiny-sd ...), hub id, folder or single file.")
    controlnets: list[str] = Field(min_length=1, description="ControlNet folders or registry names; several = "
                                                              "side by side.")
    mask: MaskSource
    prompt: str | None = Field(None, max_length=MAX_PROMPT, description="Default: the image's training prompt (its export's).")
    negative_prompt: str = Field("", max_length=MAX_PROMPT)
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(default_factory=lambda: [0], min_length=1,
                                                                 max_length=MAX_SEEDS)
    steps: int = Field(20, ge=1, le=1000)
    guidance: float = Field(7.5, ge=0.0, le=50.0)
    conditioning_scale: float = Field(1.0, ge=0.0, le=2.0)
    scheduler: Literal["unipc", "ddim", "euler-a", "dpm++2m"] = "unipc"
    resolution: int | None = Field(None, ge=8, le=4096, description="Default: the ControlNet's training resolution.")
    pose: PoseSource | None = None
    device: str = Field("auto", description="auto (CUDA when there is one), cpu, cuda, cuda:1 ...")

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError(f"resolution {value} is not a multiple of 8 (the VAE needs that); "
                             f"use {value - value % 8 or 8}")
        return value


# -- ControlNets and what they were trained on -----------------------------------------------------
@dataclass(frozen=True)
class ControlNetInfo:
    """A ControlNet folder and what its training says about the masks it takes."""

    path: Path
    label: str
    step: int | None
    channels: int
    conditioning: str  # "palette" (RGB colours) or "onehot" (one channel per class)
    scheme: str | None = None
    scheme_version: int | None = None
    legend: dict[str, str] | None = None
    export_dir: Path | None = None
    manifest_sha256: str | None = None
    resolution: int | None = None
    base_model: str | None = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise GenerateError(f"{path}: cannot read it as JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def _controlnet_folder(path: Path) -> Path:
    """The folder holding the ControlNet's ``config.json`` for a checkpoint, run or model folder."""
    if not path.exists():
        raise GenerateError(f"ControlNet {path}: no such file or folder; pick a training run's checkpoint "
                            "or type the path of a ControlNet folder")
    for folder in (path / "controlnet", path):
        config = folder / "config.json"
        if config.is_file() and _read_json(config).get("_class_name") == "ControlNetModel":
            if not any((folder / name).is_file() for name in WEIGHT_FILES):
                raise GenerateError(f"ControlNet {folder}: config.json but no weights "
                                    f"({' or '.join(WEIGHT_FILES[:2])}); the checkpoint is incomplete")
            return folder
    raise GenerateError(f"{path} is not a ControlNet checkpoint: no config.json of a ControlNetModel in it or "
                        "in its controlnet/ folder; point at a training run's checkpoint-<step> folder, its "
                        "output folder (the final ControlNet), or a folder saved by ControlNetModel.save_pretrained")


def _training_config(folder: Path) -> tuple[Path | None, dict[str, Any]]:
    """The run folder and ``train_config.json`` beside a ControlNet folder, if there is one."""
    for parent in (folder, folder.parent, folder.parent.parent):
        if (parent / TRAIN_CONFIG).is_file():
            return parent, _read_json(parent / TRAIN_CONFIG)
    return None, {}


def resolve_controlnet(source: str | Path) -> ControlNetInfo:
    """What a ControlNet folder (or registry name) is and was trained on (channels, scheme, export, resolution)."""
    folder = _controlnet_folder(Path(resolve_source("controlnet", source)).expanduser())
    config = _read_json(folder / "config.json")
    channels = int(config.get("conditioning_channels") or 3)
    run_dir, train = _training_config(folder)
    step = None
    for part in (folder.name, folder.parent.name):
        if match := CHECKPOINT_RE.match(part):
            step = int(match.group(1))
    label = f"{run_dir.name if run_dir else folder.name} · " + (f"step {step}" if step is not None else "final")
    conditioning = str(train.get("conditioning") or ("palette" if channels == 3 else "onehot"))
    info: dict[str, Any] = dict(path=folder, label=label, step=step, channels=channels, conditioning=conditioning,
                                resolution=train.get("resolution"),
                                base_model=train.get("pretrained_model_name_or_path"))
    export_dir = Path(train["train_data_dir"]) if train.get("train_data_dir") else None
    if export_dir is not None and (export_dir / "manifest.json").is_file():
        raw = (export_dir / "manifest.json").read_bytes()
        manifest = json.loads(raw)
        scheme = manifest.get("scheme") if isinstance(manifest.get("scheme"), dict) else {}
        info.update(export_dir=export_dir, manifest_sha256=hashlib.sha256(raw).hexdigest(),
                    scheme=scheme.get("name") or (manifest.get("recipe") or {}).get("scheme"),
                    scheme_version=scheme.get("version"),
                    legend={str(k): str(v) for k, v in (scheme.get("legend") or {}).items()} or None)
    if conditioning == "palette" and channels != 3:
        raise GenerateError(f"ControlNet {folder} takes {channels} conditioning channels but was trained with "
                            "palette (RGB, 3-channel) control input; its train_config.json and weights disagree")
    return ControlNetInfo(**info)


def trained_controlnets(session: Session) -> list[ControlNetInfo]:
    """Every checkpoint and final ControlNet of the training jobs in the store, newest run first."""
    from workbench.jobs import list_jobs
    from workbench.training import checkpoints

    found: list[ControlNetInfo] = []
    seen: set[Path] = set()
    for job in list_jobs(session, kind="train"):
        output_dir = (job.details or {}).get("output_dir")
        if not output_dir or Path(output_dir).resolve() in seen:
            continue
        seen.add(Path(output_dir).resolve())
        candidates = [path for _step, path in checkpoints(Path(output_dir))] + [Path(output_dir)]
        for candidate in candidates:
            try:
                found.append(resolve_controlnet(candidate))
            except GenerateError:
                continue  # a run that has not saved this one yet, or a broken folder: not offered
    return found


# -- loading models (the one place) -----------------------------------------------------------------
_loaded: dict[tuple[str, str, str], Any] = {}
REGISTRY_KINDS = {"base": "sd", "controlnet": "controlnet", "pose": "openpose"}
WHAT = {"base": "base model", "controlnet": "ControlNet", "pose": "OpenPose annotator"}


def resolve_source(kind: Literal["base", "controlnet", "pose"], source: str | Path) -> str:
    """What ``source`` (a registry name, a path or a hub id) is loaded from here (``models.resolve``)."""
    from workbench.models import resolve

    return resolve(str(source), REGISTRY_KINDS[kind])


def is_random(kind: Literal["base", "controlnet", "pose"], source: str | Path) -> bool:
    """Whether ``source`` is a tiny random-weight test model (its output is noise)."""
    from workbench.models import is_tiny

    path = Path(resolve_source(kind, source))
    return path.exists() and is_tiny(path)


def load_model(kind: Literal["base", "controlnet", "pose"], source: str | Path, dtype: Any = None) -> Any:
    """Load (once per process) a base Stable Diffusion pipeline, a ControlNet, or an OpenPose annotator.

    ``source`` is a registry name (``tiny-sd``, ``sd15`` ...), a hub id, a local folder, or for a
    base also a single ``.safetensors``/``.ckpt`` file (``from_single_file``). Loading goes through
    ``models.loading``: when the hub cannot be reached nothing is fetched, and a missing model
    fails in seconds with the registry's fix for its kind.
    """
    from workbench.models import ModelNotReady, loading

    text = str(source)
    path = Path(text).expanduser()
    if (text.startswith((".", "/", "~")) or path.suffix in (".safetensors", ".ckpt")) and not path.exists():
        raise GenerateError(f"{WHAT[kind]} {text}: no such file or folder; give an existing folder or file, "
                            "a registry name (Models page) or a hub id")
    resolved = resolve_source(kind, text)
    key = (kind, resolved, str(dtype))
    if key in _loaded:
        return _loaded[key]
    single_file = Path(resolved).is_file()
    try:
        # a single-file checkpoint may still fetch its component configs from the hub
        name = text if re.fullmatch(r"[\w.-]+", text) else None  # a registry name, not a path or hub id
        with loading(REGISTRY_KINDS[kind], resolved, name=name, asks_hub=single_file) as load:
            if kind == "base":
                from diffusers import StableDiffusionPipeline

                if single_file:
                    model = StableDiffusionPipeline.from_single_file(resolved, torch_dtype=dtype, **load.kwargs)
                else:
                    model = StableDiffusionPipeline.from_pretrained(resolved, dtype=dtype, safety_checker=None,
                                                                    requires_safety_checker=False, **load.kwargs)
                model.set_progress_bar_config(disable=True)
            elif kind == "controlnet":
                from diffusers import ControlNetModel

                model = ControlNetModel.from_pretrained(resolved, dtype=dtype, **load.kwargs)
            else:
                from controlnet_aux.open_pose import OpenposeDetector

                model = OpenposeDetector.from_pretrained(resolved, **load.kwargs)
    except ModelNotReady as exc:
        raise GenerateError(f"{WHAT[kind]} {text}: {exc}") from exc
    _loaded[key] = model
    return model


def forget_models() -> None:
    """Drop the loaded models (frees their memory)."""
    _loaded.clear()


def pick_device(device: str = "auto"):
    """The torch device and dtype to generate with: CUDA in half precision when there is one."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    return dev, (torch.float16 if dev.type == "cuda" else torch.float32)


def make_scheduler(name: str, config: Any):
    """The named scheduler (unipc, ddim, euler-a, dpm++2m) from the base model's scheduler config."""
    import diffusers

    if name not in SCHEDULERS:
        raise GenerateError(f"scheduler {name!r} is not one of {', '.join(SCHEDULERS)}")
    return getattr(diffusers, SCHEDULERS[name]).from_config(config)


def build_pipeline(base: Any, controlnets: list[Any], scheduler: str):
    """A ControlNet pipeline sharing the base's components; several ControlNets make a multi-ControlNet."""
    from diffusers import StableDiffusionControlNetPipeline

    pipe = StableDiffusionControlNetPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
        controlnet=controlnets[0] if len(controlnets) == 1 else list(controlnets),
        scheduler=make_scheduler(scheduler, base.scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- masks -------------------------------------------------------------------------------------------
@dataclass
class ConditioningMask:
    """A class-id mask at the generation resolution, what it is in, and where it came from."""

    array: np.ndarray  # (H, W) uint8 class values
    palette: np.ndarray  # (256, 3) uint8 colours of the control input (palette conditioning) and preview
    scheme: str | None
    legend: dict[str, str] | None
    source: dict[str, Any] = field(default_factory=dict)
    photo: PILImage.Image | None = None  # the photo with the same geometry (for the pose), if any
    prompt: str = ""  # the training prompt of the image, where known

    def colourised(self) -> np.ndarray:
        """An ``(H, W, 3)`` RGB preview in the palette's colours."""
        return self.palette[self.array]

    def sha256(self) -> str:
        """Checksum of the class ids (and shape): equal masks, equal checksums."""
        digest = hashlib.sha256(f"{self.array.shape}".encode())
        digest.update(np.ascontiguousarray(self.array).tobytes())
        return digest.hexdigest()


def control_palette(info: ControlNetInfo, fallback: np.ndarray | None = None) -> np.ndarray:
    """The (256, 3) colours the trainer fed this ControlNet (``train.data.palette_table`` of its export)."""
    from train.data import DataError, palette_table, read_records, read_scheme

    if info.export_dir is not None:
        try:
            return palette_table(read_scheme(info.export_dir), read_records(info.export_dir, 0.0))
        except DataError as exc:
            raise GenerateError(f"ControlNet {info.path}: its training export {info.export_dir} cannot be read "
                                f"({exc}); restore the export, or use a ControlNet folder without one") from None
    if fallback is not None:
        return fallback
    from workbench.palette import FINE_PALETTE

    return np.array(FINE_PALETTE, np.uint8).reshape(256, 3)


def _export_item(info: ControlNetInfo, image_id: int) -> tuple[dict[str, Any], str] | None:
    """The export's manifest item and training prompt of stored image ``image_id``, if it was exported."""
    from train.data import read_records

    if info.export_dir is None:
        return None
    items = _read_json(info.export_dir / "manifest.json").get("items") or []
    for item in items:
        if isinstance(item, dict) and item.get("image_id") == image_id:
            records = read_records(info.export_dir, 0.0)
            index = int(item["index"])
            return item, records[index].prompt if index < len(records) else ""
    return None


def export_images(info: ControlNetInfo) -> list[dict[str, Any]]:
    """The images of the ControlNet's training export: image id, file name, split and prompt."""
    from train.data import read_records

    if info.export_dir is None:
        return []
    records = read_records(info.export_dir, 0.0)
    items = _read_json(info.export_dir / "manifest.json").get("items") or []
    return [{"image_id": item.get("image_id"), "file_name": item.get("file_name"), "split": item.get("split"),
             "prompt": records[int(item["index"])].prompt if int(item["index"]) < len(records) else ""}
            for item in items if isinstance(item, dict) and "index" in item]


def _fit(mask: np.ndarray, photo: PILImage.Image | None, resolution: int) -> tuple[np.ndarray, PILImage.Image | None]:
    """Mask (and photo) resized and centre-cropped to the resolution exactly as the trainer does."""
    from train.data import DataError, fit_mask, prepare_pair

    if photo is None:
        return fit_mask(mask, resolution, False), None
    try:
        pixels, fitted = prepare_pair(photo, mask, resolution, False)
    except DataError as exc:
        raise GenerateError(f"the photo and the mask do not match: {exc}; "
                            "give the photo the mask was made from") from None
    return fitted, PILImage.fromarray(pixels)


def dataset_mask(session: Session, info: ControlNetInfo, source: MaskSource, resolution: int) -> ConditioningMask:
    """A stored image's masks rendered in the ControlNet's scheme (with the export's crop when it was exported)."""
    from db.models import Dataset, Image
    from workbench.masks import MaskError, render_image_mask

    scheme = info.scheme or source.scheme
    if scheme is None:
        raise GenerateError(f"ControlNet {info.path} names no training export (no {TRAIN_CONFIG} beside it), so its "
                            "mask scheme is unknown; choose the scheme it was trained on (--scheme) or upload a mask")
    if info.scheme and source.scheme and source.scheme != info.scheme:
        raise GenerateError(f"ControlNet {info.label} was trained on {info.scheme} masks, not {source.scheme}; "
                            f"render the mask in {info.scheme}")
    if source.image_id is None:
        raise GenerateError("a dataset mask needs the stored image's id (--image-id)")
    image = session.get(Image, source.image_id)
    if image is None:
        raise GenerateError(f"image id {source.image_id} is not in the store; pick an image of the training export")
    try:
        rendered = render_image_mask(session, image.id, scheme,
                                     scheme_version=info.scheme_version if info.scheme else None)
    except (MaskError, LookupError, ValueError) as exc:
        raise GenerateError(f"image {image.file_name}: cannot render its mask in {scheme}: {exc}") from None
    if info.legend and rendered.legend != info.legend:
        raise GenerateError(f"ControlNet {info.label} was trained on {scheme} with classes {info.legend}, but the "
                            f"stored {scheme} now has {rendered.legend}; pin the version it was trained on")
    dataset = session.get(Dataset, image.dataset_id)
    photo_path = image_file(Path(dataset.images_root), image.file_name)
    photo = None
    if photo_path is not None and photo_path.is_file():
        with PILImage.open(photo_path) as opened:
            photo = opened.convert("RGB")
    array = rendered.array
    exported = _export_item(info, image.id)
    prompt = ""
    if exported is not None:
        item, prompt = exported
        if item.get("size") and item.get("box"):  # the export's crop and size (workbench/export.py)
            size, box = tuple(item["size"]), tuple(item["box"])
            array = np.asarray(PILImage.fromarray(array).resize(size, PILImage.Resampling.NEAREST, box=box))
            if photo is not None:
                photo = photo.resize(size, PILImage.Resampling.BICUBIC, box=box)
    array, photo = _fit(array, photo, resolution)
    palette = np.asarray(rendered.palette, np.uint8).reshape(256, 3)
    return ConditioningMask(array, palette, scheme, rendered.legend,
                            {"kind": "dataset", "dataset": dataset.name, "image_id": image.id,
                             "file_name": image.file_name}, photo, prompt)


def read_image(data: bytes, what: str) -> PILImage.Image:
    """An uploaded file as an image (loaded), or a clear error when it is not one."""
    try:
        image = PILImage.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise GenerateError(f"{what} is not an image Pillow can read ({type(exc).__name__}); "
                            "upload a PNG or JPEG") from None
    return image


def mask_from_image(image: PILImage.Image, palette: np.ndarray, what: str) -> np.ndarray:
    """Class ids of a mask image: a palette or greyscale PNG directly, an RGB one by its colours."""
    if image.mode == "P" or image.mode in ("L", "I", "I;16"):
        return np.asarray(image).astype(np.uint8)
    rgb = np.asarray(image.convert("RGB"))
    keys = (palette[:, 0].astype(np.int64) << 16) | (palette[:, 1].astype(np.int64) << 8) | palette[:, 2]
    pixels = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    # the first class with a colour wins (unused palette entries are black, like the background)
    unique_keys, first = np.unique(keys, return_index=True)
    position = np.searchsorted(unique_keys, pixels)
    position = np.clip(position, 0, len(unique_keys) - 1)
    known = unique_keys[position] == pixels
    if not known.all():
        y, x = np.argwhere(~known)[0]
        raise GenerateError(f"{what}: pixel ({x}, {y}) has colour {tuple(int(c) for c in rgb[y, x])}, which is no "
                            "class colour of the ControlNet's scheme; upload a single-channel label PNG "
                            "(pixel value = class id) or a mask in the scheme's colours")
    return first[position].astype(np.uint8)


def predict_photo_mask(photo: PILImage.Image, scheme: str | None, segmenter: str | None = None) -> np.ndarray:
    """The cloth segmenter's mask of a photo in ``scheme`` (``workbench.segment.predict.predict_mask``)."""
    from workbench.segment.loaders import CLOTH_SCHEME, SegmentError
    from workbench.segment.predict import predict_mask

    try:
        return np.asarray(predict_mask(photo, scheme or CLOTH_SCHEME, segmenter), np.uint8)
    except SegmentError as exc:
        raise GenerateError(f"the photo's mask: {exc}; or upload the photo's mask as a PNG instead") from None


def file_mask(info: ControlNetInfo, source: MaskSource, resolution: int) -> ConditioningMask:
    """A mask PNG (or a photo's predicted mask), with its photo when there is one."""
    if not source.path:
        raise GenerateError(f"a {source.kind} mask needs a file (--mask or --photo)")
    path = Path(source.path)
    if not path.is_file():
        raise GenerateError(f"{path}: no such file")
    palette = control_palette(info)
    data = path.read_bytes()
    photo = None
    if source.kind == "photo":
        photo = read_image(data, f"photo {path.name}").convert("RGB")
        array = predict_photo_mask(photo, info.scheme or source.scheme, source.segmenter)
    else:
        image = read_image(data, f"mask {path.name}")
        if image.mode == "P" and info.export_dir is None:
            palette = np.asarray((image.getpalette() or []) + [0] * 768, np.uint8)[:768].reshape(256, 3)
        array = mask_from_image(image, palette, f"mask {path.name}")
        if source.photo:
            photo = read_image(Path(source.photo).read_bytes(), f"photo {Path(source.photo).name}").convert("RGB")
    array, photo = _fit(array, photo, resolution)
    return ConditioningMask(array, palette, info.scheme or source.scheme, info.legend,
                            {"kind": source.kind, "path": str(path), "sha256": hashlib.sha256(data).hexdigest(),
                             **({"photo": source.photo} if source.photo else {})}, photo)


def check_mask(mask: ConditioningMask, info: ControlNetInfo) -> None:
    """Refuse a mask the ControlNet cannot take: another scheme, classes it has no channel or name for."""
    if info.scheme and mask.scheme and mask.scheme != info.scheme:
        raise GenerateError(f"ControlNet {info.label} was trained on {info.scheme} masks but this mask is "
                            f"{mask.scheme}; "
                            f"render or predict the mask in {info.scheme}")
    values = sorted(int(v) for v in np.unique(mask.array))
    if info.conditioning == "onehot":
        if info.legend and len(info.legend) != info.channels:
            raise GenerateError(f"ControlNet {info.label} takes {info.channels} conditioning channels but its scheme "
                                f"{info.scheme} has {len(info.legend)} classes; it was trained on another scheme")
        if values[-1] >= info.channels:
            raise GenerateError(f"the mask holds class {values[-1]} but ControlNet {info.label} takes "
                                f"{info.channels} one-hot channels (classes 0-{info.channels - 1}); use a mask "
                                f"in its scheme{' ' + info.scheme if info.scheme else ''}")
    elif info.channels != 3:
        raise GenerateError(f"ControlNet {info.label} takes {info.channels} conditioning channels; a palette "
                            "(RGB) control input has 3")
    if info.legend:
        unknown = [v for v in values if str(v) not in info.legend]
        if unknown:
            raise GenerateError(f"the mask holds class {unknown[0]}, which scheme {info.scheme} of ControlNet "
                                f"{info.label} does not have (classes {', '.join(sorted(info.legend, key=int))})")


def conditioning_mask(session: Session, info: ControlNetInfo, source: MaskSource, resolution: int) -> ConditioningMask:
    """The checked, edited class-id mask for ``info`` from ``source`` at ``resolution``."""
    if source.kind == "dataset":
        mask = dataset_mask(session, info, source, resolution)
    else:
        mask = file_mask(info, source, resolution)
    if source.edits:
        classes = [int(v) for v in info.legend] if info.legend else None
        try:
            mask.array = apply_edits(mask.array, source.edits, classes)
        except MaskEditError as exc:
            raise GenerateError(str(exc)) from None
        mask.source["edits"] = list(source.edits)
    check_mask(mask, info)
    return mask


def control_tensor(mask: ConditioningMask, info: ControlNetInfo):
    """The control input (1, C, H, W) in [0, 1], made as the trainer makes it (``train.data.control_input``)."""
    import torch

    from train.data import control_input

    ids = torch.from_numpy(mask.array.astype(np.int64))[None]
    return control_input(ids, info.conditioning, info.channels, torch.from_numpy(mask.palette.astype(np.int64)))


def pose_tensor(detector: Any, photo: PILImage.Image | None, resolution: int):
    """The OpenPose drawing of ``photo`` as a (1, 3, H, W) control input in [0, 1]."""
    import torch

    if photo is None:
        raise GenerateError("pose control needs a photo: pick a dataset image whose photo is on disk, or give "
                            "the photo beside the mask (--photo)")
    drawn = detector(np.asarray(photo.convert("RGB")), detect_resolution=resolution, image_resolution=resolution,
                     include_hand=False, include_face=False, output_type="pil")
    drawn = drawn.convert("RGB").resize((resolution, resolution), PILImage.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(drawn).copy()).permute(2, 0, 1)[None].float().div(255)


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"1, 2, 10-12"`` (ranges inclusive, seeds 0 or more); a clear error for anything else."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if not part:
            continue
        try:
            first, _, last = part.partition("-")
            low, high = int(first), int(last or first)
            if low < 0 or high < low or high > MAX_SEED or high - low >= MAX_SEEDS:
                raise ValueError
        except ValueError:
            raise GenerateError(f"seeds: {part[:40]!r} is not a seed (0 to {MAX_SEED}) or a range like 10-12 "
                                f"(at most {MAX_SEEDS} seeds)") from None
        seeds.extend(range(low, high + 1))
        if len(seeds) > MAX_SEEDS:
            raise GenerateError(f"seeds: {len(seeds)}+ seeds; give at most {MAX_SEEDS} in one request")
    if not seeds:
        raise GenerateError("seeds: give at least one seed (e.g. 1, 2, 10-12)")
    return seeds


def save_upload(data_dir: Path, name: str, data: bytes) -> Path:
    """Keep an uploaded file (a mask or a photo) under ``data_dir/generations/uploads``, named by its checksum."""
    suffix = Path(name).suffix.lower()[:8] or ".bin"
    return write_atomically(generations_dir(data_dir) / "uploads" / f"{hashlib.sha256(data).hexdigest()}{suffix}", data)


# -- generating ----------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """One ControlNet ready to generate: its pipeline, checked mask and control inputs."""

    info: ControlNetInfo
    pipe: Any
    mask: ConditioningMask
    controls: list[Any]
    scales: list[float]
    resolution: int
    device: Any
    mask_path: Path
    mask_sha256: str
    prompt: str


@dataclass(frozen=True)
class GenerationResult:
    """One saved image and its store row id."""

    id: int
    path: Path
    controlnet: str
    label: str
    step: int | None
    seed: int
    seconds: float


def generations_dir(data_dir: Path) -> Path:
    """Where generated images and their masks are written."""
    return Path(data_dir) / GENERATIONS_DIR


def _png_bytes(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def prepare(session: Session, request: GenerateRequest, controlnet: str, data_dir: Path,
            pose: tuple[Any, Any] | None = None) -> Prepared:
    """Load and check one ControlNet for ``request``: pipeline, mask, control inputs."""
    _device, dtype = pick_device(request.device)
    info = resolve_controlnet(controlnet)
    resolution = request.resolution or info.resolution or 512
    if resolution % 8:
        raise GenerateError(f"resolution {resolution} is not a multiple of 8; set --resolution")
    mask = conditioning_mask(session, info, request.mask, resolution)
    if info.export_dir is not None:
        mask.palette = control_palette(info)
    base = load_model("base", request.base_model, dtype)
    models = [load_model("controlnet", info.path, dtype)]
    controls = [control_tensor(mask, info)]
    scales = [request.conditioning_scale]
    if pose is not None:
        detector, pose_cn = pose
        models.append(pose_cn)
        controls.append(pose_tensor(detector, mask.photo, resolution))
        scales.append(request.pose.scale)
    return assemble(request, info, mask, base, models, controls, scales, resolution, data_dir)


def assemble(request: GenerateRequest, info: ControlNetInfo, mask: ConditioningMask, base: Any, models: list[Any],
             controls: list[Any], scales: list[float], resolution: int, data_dir: Path) -> Prepared:
    """The pipeline on its device with its control inputs, and the mask saved for the record."""
    device, dtype = pick_device(request.device)
    pipe = build_pipeline(base, models, request.scheduler).to(device)  # the models were loaded in dtype
    controls = [c.to(device, dtype) for c in controls]
    mask_sha = mask.sha256()
    mask_path = generations_dir(data_dir) / "masks" / f"{mask_sha}.png"
    if not mask_path.is_file():
        write_atomically(mask_path, _png_bytes(PILImage.fromarray(mask.colourised())))
    prompt = request.prompt if request.prompt is not None else mask.prompt
    return Prepared(info, pipe, mask, controls, scales, resolution, device, mask_path, mask_sha, prompt)


def run_pipeline(prepared: Prepared, request: GenerateRequest, seed: int) -> PILImage.Image:
    """One image from the prepared pipeline (the plain diffusers call, nothing added)."""
    import torch

    single = len(prepared.controls) == 1
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return prepared.pipe(
        prompt=prepared.prompt, negative_prompt=request.negative_prompt or None,
        image=prepared.controls[0] if single else prepared.controls,
        controlnet_conditioning_scale=prepared.scales[0] if single else prepared.scales,
        height=prepared.resolution, width=prepared.resolution, num_inference_steps=request.steps,
        guidance_scale=request.guidance, generator=generator).images[0]


def random_weights(request: GenerateRequest, info: ControlNetInfo) -> bool:
    """Whether a tiny random-weight test model takes part (base, ControlNet, its training base, or the
    pose models): then the image is noise and is labelled so."""
    from workbench.models import is_tiny

    return (is_random("base", request.base_model) or is_tiny(info.path) or is_tiny(info.path.parent)
            or bool(info.base_model and is_random("base", info.base_model))
            or bool(request.pose and (is_random("pose", request.pose.detector)
                                      or is_random("controlnet", request.pose.controlnet))))


def generate_one(engine: Engine, prepared: Prepared, request: GenerateRequest, seed: int, run: str,
                 data_dir: Path, job_id: int | None = None) -> GenerationResult:
    """Generate, save and record one image (PNG under ``data_dir/generations/<run>/``, a store row)."""
    started = time.perf_counter()
    image = run_pipeline(prepared, request, seed)
    seconds = time.perf_counter() - started
    info = prepared.info
    data = _png_bytes(image)
    tag = f"step{info.step}" if info.step is not None else "final"
    folder_key = hashlib.sha1(str(info.path).encode()).hexdigest()[:8]  # two runs can share a step
    path = generations_dir(data_dir) / run / f"{folder_key}-{tag}-seed{seed}.png"
    write_atomically(path, data)
    settings = {"steps": request.steps, "guidance": request.guidance, "conditioning_scale": request.conditioning_scale,
                "scheduler": request.scheduler, "resolution": prepared.resolution, "conditioning": info.conditioning,
                "channels": info.channels, "scheme_version": info.scheme_version, "label": info.label,
                "device": str(prepared.device), "dtype": str(prepared.controls[0].dtype).removeprefix("torch."),
                "pose": request.pose.model_dump() if request.pose else None,
                "random_weights": random_weights(request, info)}
    with session_scope(engine) as session:
        row = Generation(job_id=job_id, run=run, path=str(path), image_sha256=hashlib.sha256(data).hexdigest(),
                         mask_path=str(prepared.mask_path), mask_sha256=prepared.mask_sha256,
                         base_model=request.base_model, controlnet=str(info.path), checkpoint_step=info.step,
                         export_manifest_sha256=info.manifest_sha256, scheme=prepared.mask.scheme, seed=int(seed),
                         prompt=prepared.prompt, negative_prompt=request.negative_prompt, settings=settings,
                         mask_source=prepared.mask.source, seconds=round(seconds, 4))
        session.add(row)
        session.flush()
        row_id = row.id
    return GenerationResult(row_id, path, str(info.path), info.label, info.step, int(seed), seconds)


def load_pose(request: GenerateRequest) -> tuple[Any, Any] | None:
    """The OpenPose annotator and the pose ControlNet of the request (None without pose control)."""
    if request.pose is None:
        return None
    _device, dtype = pick_device(request.device)
    detector = load_model("pose", request.pose.detector)
    pose_cn = load_model("controlnet", request.pose.controlnet, dtype)
    if pose_cn.config.conditioning_channels != 3:
        raise GenerateError(f"pose ControlNet {request.pose.controlnet} takes {pose_cn.config.conditioning_channels} "
                            "conditioning channels; an OpenPose drawing has 3 (RGB); pick an OpenPose ControlNet")
    return detector, pose_cn


def generate(engine: Engine, data_dir: Path, request: GenerateRequest, *, progress: ProgressFn | None = None,
             should_stop: StopFn | None = None, job_id: int | None = None,
             on_image: Any = None) -> list[GenerationResult]:
    """Generate every seed with every ControlNet of ``request``, saving and recording each image.

    ``progress(done, total)`` after each image; ``should_stop`` is checked between images (what
    was generated stays saved and recorded). Every ControlNet is checked before the first image.
    """
    infos = [resolve_controlnet(c) for c in request.controlnets]
    with session_scope(engine) as session:
        for info in infos:  # a bad mask or checkpoint fails now, not after minutes of generating
            conditioning_mask(session, info, request.mask, request.resolution or info.resolution or 512)
    pose = load_pose(request)
    run = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    total = len(infos) * len(request.seeds)
    done = 0
    results: list[GenerationResult] = []
    report(progress, 0, total)
    for info in infos:
        check_stop(should_stop)
        with session_scope(engine) as session:
            prepared = prepare(session, request, str(info.path), data_dir, pose)
        for seed in request.seeds:
            check_stop(should_stop)
            result = generate_one(engine, prepared, request, seed, run, data_dir, job_id)
            results.append(result)
            done += 1
            if on_image is not None:
                on_image(result)
            report(progress, done, total)
    return results


# -- reading back -----------------------------------------------------------------------------------
def list_generations(session: Session, *, run: str | None = None, job_id: int | None = None,
                     limit: int = 200) -> list[Generation]:
    """Generated images, newest first, optionally of one run or job."""
    query = select(Generation).order_by(Generation.id.desc()).limit(limit)
    if run is not None:
        query = query.where(Generation.run == run)
    if job_id is not None:
        query = query.where(Generation.job_id == job_id)
    return list(session.scalars(query))


def side_by_side(session: Session, generation_id: int) -> list[Generation]:
    """The same mask + prompt + seed across ControlNets (the newest image of each), by checkpoint step."""
    anchor = session.get(Generation, generation_id)
    if anchor is None:
        raise GenerateError(f"no generated image {generation_id}")
    rows = session.scalars(select(Generation).where(
        Generation.mask_sha256 == anchor.mask_sha256, Generation.prompt == anchor.prompt,
        Generation.seed == anchor.seed).order_by(Generation.id.desc())).all()
    newest: dict[str, Generation] = {}
    for row in rows:
        newest.setdefault(row.controlnet, row)
    return sorted(newest.values(), key=lambda r: (r.checkpoint_step is None, r.checkpoint_step or 0, r.controlnet))


def provenance(row: Generation) -> dict[str, Any]:
    """A generated image's provenance as plain data (``--json``, the page's details)."""
    return {"id": row.id, "path": row.path, "run": row.run, "job_id": row.job_id, "base_model": row.base_model,
            "controlnet": row.controlnet, "checkpoint_step": row.checkpoint_step,
            "export_manifest_sha256": row.export_manifest_sha256, "scheme": row.scheme, "seed": row.seed,
            "prompt": row.prompt, "negative_prompt": row.negative_prompt, "settings": row.settings,
            "mask_source": row.mask_source, "mask_path": row.mask_path, "mask_sha256": row.mask_sha256,
            "image_sha256": row.image_sha256, "random_weights": bool((row.settings or {}).get("random_weights")),
            "seconds": row.seconds, "created_at": row.created_at}


def result_caption(row: dict[str, Any]) -> str:
    """A generated image's short caption (``#12 · step 200 · seed 3``), marked when made with random weights."""
    from workbench.models import TINY_LABEL

    step = row["checkpoint_step"] if row["checkpoint_step"] is not None else "final"
    mark = f" · 🎲 {TINY_LABEL}" if row["random_weights"] else ""
    return f"#{row['id']} · step {step} · seed {row['seed']}{mark}"


def generate_argv(request: GenerateRequest) -> list[str]:
    """The ``python -m workbench`` arguments that run ``request`` in the foreground (what a job runs)."""
    return ["generate", "run", "--request-json", request.model_dump_json()]

