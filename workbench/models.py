"""The model registry: every model the workbench loads, where it is, whether it is ready, the fix.

One list of named models of every kind (Stable Diffusion base, ControlNet, CLIP, BLIP-family
captioners, Kosmos-2, Grounding DINO, torchvision detectors, cloth segmenters, OpenPose, SAM,
Stable Diffusion inpainting): the built-in defaults below, ControlNets trained here, and folders,
files or hub ids a user adds (stored in ``db.models_registry``). A model is looked for, in order,
at the path the user gave, in the models folder (``WORKBENCH_MODELS_DIR``, default
``data/models``: ``NAME/``, a file, or the Hugging Face cache layout
``models--org--name/snapshots/REV``), in the Hugging Face cache and, for torchvision and rembg,
in their own caches.

Every model load in the project goes through :func:`loading`: it finds out in about two seconds
whether the hub can be reached (or sees ``HF_HUB_OFFLINE``), goes local-only at once when it
cannot, and turns a failed load into :class:`ModelNotReady`, whose message holds the reason and
the exact fix for that kind (:func:`fix_text`). Nothing here imports torch or streamlit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models_registry import ModelEntry
from db.models import utcnow
from workbench.settings import Settings, get_settings

TINY_MARKER = "workbench_tiny.json"
TINY_LABEL = "random weights (tiny test model)"
HUB_PROBE_SECONDS = 2.0
_PROBE_TTL = 60.0
STATES = ("ready", "unchecked", "missing", "broken")
WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


class ModelNotReady(RuntimeError):
    """A model that cannot be loaded: what, why, and the exact fix (all in the message)."""

    def __init__(self, kind: str, source: str, state: str, reason: str, fix: str, offline: bool = False):
        self.kind, self.source, self.state, self.reason, self.fix, self.offline = kind, source, state, reason, fix, offline
        where = (" (the Hugging Face hub cannot be reached, so only local files were tried)" if offline else "")
        super().__init__(f"{KINDS[kind].label if kind in KINDS else kind} {source!r} is {state}{where}: {reason}. "
                         f"Fix: {fix}")


class ModelLookupError(LookupError):
    """A registry name that is not known, or an entry that cannot be added; the message says why."""


@dataclass(frozen=True)
class Kind:
    """A kind of model: its label, and what a folder (``needs`` every file, ``weights`` one of
    them) or a single file (``suffixes``) of that kind holds."""

    key: str
    label: str
    needs: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    hub: bool = True  # its default source is a Hugging Face repo


KINDS: dict[str, Kind] = {k.key: k for k in (
    Kind("sd", "Stable Diffusion base", ("model_index.json", "unet/config.json"), (), (".safetensors", ".ckpt")),
    Kind("controlnet", "ControlNet", ("config.json",),
         ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"), (".safetensors",)),
    Kind("clip", "CLIP (open_clip)", ("open_clip_config.json",),
         ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"), (".safetensors", ".bin", ".pt")),
    Kind("caption", "BLIP / BLIP-2 / GIT captioner", ("config.json",), WEIGHTS),
    Kind("kosmos2", "Kosmos-2", ("config.json",), WEIGHTS),
    Kind("grounding-dino", "Grounding DINO", ("config.json",), WEIGHTS),
    Kind("torchvision", "torchvision detector", (), ("weights.safetensors",), (".pth", ".pt", ".safetensors"), hub=False),
    Kind("segmenter", "cloth segmenter", ("config.json",), WEIGHTS, (".onnx",)),
    Kind("openpose", "OpenPose annotator", ("body_pose_model.pth",)),
    Kind("sam", "SAM (segment anything)", ("config.json",), WEIGHTS),
    Kind("inpaint", "Stable Diffusion inpainting", ("model_index.json", "unet/config.json"), (), (".safetensors", ".ckpt")),
)}


@dataclass(frozen=True)
class ModelSpec:
    """A named model: its kind, default hub repo, and where else it may be.

    ``spec`` is what the loader takes when no local copy exists: the open_clip ``ARCH/TAG`` for
    CLIP, the builder name for torchvision; ``file_name`` a single file looked for in the models
    folder and the kind's own cache (rembg's ``.onnx``, torchvision's checkpoint).
    """

    name: str
    kind: str
    hub_id: str | None = None
    spec: str | None = None
    path: str | None = None
    file_name: str | None = None
    url: str | None = None
    md5: str | None = None
    aliases: tuple[str, ...] = ()
    note: str = ""
    tiny: bool = False
    added: bool = False
    trained: bool = False

    @property
    def default_source(self) -> str:
        """What is loaded when nothing local is found (hub repo, open_clip spec, builder)."""
        return self.spec or self.hub_id or self.path or self.name


_TV = "https://download.pytorch.org/models/"
BUILTIN: tuple[ModelSpec, ...] = (
    ModelSpec("sd15", "sd", "stable-diffusion-v1-5/stable-diffusion-v1-5", aliases=("runwayml/stable-diffusion-v1-5",),
              note="Stable Diffusion 1.5, the base the ControlNet is trained on"),
    ModelSpec("controlnet-seg", "controlnet", "lllyasviel/sd-controlnet-seg", note="ADE20K segmentation ControlNet (SD 1.5)"),
    ModelSpec("controlnet-openpose", "controlnet", "lllyasviel/sd-controlnet-openpose",
              note="OpenPose ControlNet (SD 1.5), the Generate page's pose control"),
    ModelSpec("clip-vit-l-14", "clip", "timm/vit_large_patch14_clip_224.openai", spec="ViT-L-14/openai",
              note="the CLIP Interrogator's CLIP for SD 1.x"),
    ModelSpec("blip-large", "caption", "Salesforce/blip-image-captioning-large", note="BLIP large (Interrogator default)"),
    ModelSpec("blip-base", "caption", "Salesforce/blip-image-captioning-base", note="BLIP base (low VRAM)"),
    ModelSpec("blip2", "caption", "Salesforce/blip2-opt-2.7b", note="BLIP-2 OPT 2.7B"),
    ModelSpec("git-large-coco", "caption", "microsoft/git-large-coco", note="GIT large, COCO captions"),
    ModelSpec("kosmos2", "kosmos2", "microsoft/kosmos-2-patch14-224", note="grounded captions"),
    ModelSpec("grounding-dino-tiny", "grounding-dino", "IDEA-Research/grounding-dino-tiny"),
    ModelSpec("grounding-dino-base", "grounding-dino", "IDEA-Research/grounding-dino-base"),
    ModelSpec("maskrcnn_resnet50_fpn_v2", "torchvision", spec="maskrcnn_resnet50_fpn_v2",
              file_name="maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth", url=_TV + "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth",
              note="COCO Mask R-CNN v2 (torchvision)"),
    ModelSpec("maskrcnn_resnet50_fpn", "torchvision", spec="maskrcnn_resnet50_fpn",
              file_name="maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth", url=_TV + "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"),
    ModelSpec("keypointrcnn_resnet50_fpn", "torchvision", spec="keypointrcnn_resnet50_fpn",
              file_name="keypointrcnn_resnet50_fpn_coco-fc266e95.pth",
              url=_TV + "keypointrcnn_resnet50_fpn_coco-fc266e95.pth"),
    ModelSpec("segformer-clothes", "segmenter", "mattmdjaga/segformer_b2_clothes", note="SegFormer B2 clothes (ATR)"),
    ModelSpec("u2net-cloth-seg", "segmenter", file_name="u2net_cloth_seg.onnx",
              url="https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net_cloth_seg.onnx",
              md5="2434d1f3cb744e0e49386c906e5a08bb",
              note="rembg's cloth-segmentation U2NET (ONNX)"),
    ModelSpec("openpose", "openpose", "lllyasviel/Annotators", note="controlnet_aux OpenPose annotator"),
    ModelSpec("sam-vit-base", "sam", "facebook/sam-vit-base", note="Segment Anything (ViT-B): a person's mask from a box"),
    ModelSpec("sd15-inpaint", "inpaint", "stable-diffusion-v1-5/stable-diffusion-inpainting",
              aliases=("runwayml/stable-diffusion-inpainting",), note="SD 1.5 inpainting: erase a person from a photo"),
)


# -- where models are -------------------------------------------------------------------------------
@dataclass
class Location:
    """Where a model was found: the path, which place that is, and a problem with its files if any."""

    path: Path
    where: str
    problem: str | None = None


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache (``HF_HUB_CACHE`` / ``HF_HOME``), read now, not at import."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def torch_cache_dir() -> Path:
    """torchvision's checkpoint folder (``$TORCH_HOME/hub/checkpoints``)."""
    home = os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch"
    return Path(home).expanduser() / "hub" / "checkpoints"


def u2net_dir() -> Path:
    """rembg's flat model folder (``U2NET_HOME``, default ``~/.u2net``)."""
    return Path(os.environ.get("U2NET_HOME") or Path.home() / ".u2net").expanduser()


def rembg_model_dir(model: str) -> Path:
    """rembg's own folder for ``model`` (``<home>/models/<model>``; ``U2NET_HOME`` wins, as in rembg)."""
    if os.environ.get("U2NET_HOME"):
        home = u2net_dir()
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        home = Path(os.environ.get("REMBG_HOME") or (Path(xdg) / "rembg" if xdg else Path.home() / ".rembg"))
    return Path(home).expanduser() / "models" / model


def cache_snapshot(root: Path, repo: str, kind: str) -> Path | None:
    """The snapshot folder of ``repo`` in a hub cache laid out as ``models--org--name/snapshots/REV``:
    the revision ``refs/main`` names, as huggingface_hub itself finds it offline, else the newest,
    holding one of the files a ``kind`` model has (``None``: not there)."""
    from huggingface_hub import try_to_load_from_cache

    k = KINDS[kind]
    for name in (*k.needs, *k.weights):
        found = try_to_load_from_cache(repo, name, cache_dir=root)
        if isinstance(found, str):
            return Path(found).parents[len(Path(name).parts) - 1]  # "unet/config.json" lies a level down
    # A download pinned to a commit (`hf download --revision SHA`) writes no refs/main: its newest snapshot.
    snapshots = cache_folder(root, repo) / "snapshots"
    holding = [s for s in snapshots.iterdir() if any((s / n).is_file() for n in (*k.needs, *k.weights))] \
        if snapshots.is_dir() else []
    return max(holding, key=lambda s: s.stat().st_mtime) if holding else None


def cache_folder(root: Path, repo: str) -> Path:
    """``repo``'s folder in a hub cache (``models--org--name``), whether or not it is there."""
    from huggingface_hub.file_download import repo_folder_name

    return Path(root) / repo_folder_name(repo_id=repo, repo_type="model")


def problem_with(kind: str, path: Path) -> str | None:
    """What is wrong with ``path`` as a model of ``kind`` (``None``: it looks complete)."""
    k = KINDS[kind]
    if path.is_file():
        if k.suffixes and path.suffix.lower() in k.suffixes:
            return None if path.stat().st_size > 0 else f"{path} is empty"
        return f"{path} is a file; a {k.label} is " + (f"a {'/'.join(k.suffixes)} file or a folder" if k.suffixes else "a folder")
    if not path.is_dir():
        return f"{path} does not exist"
    missing = [n for n in k.needs if not (path / n).is_file()]
    if missing:
        return f"{path} has no {', '.join(missing)}"
    if k.weights and not any((path / n).is_file() for n in k.weights) \
            and not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        return f"{path} holds no weights ({' or '.join(k.weights[:2])})"
    return None


def _candidates(spec: ModelSpec, settings: Settings) -> Iterator[tuple[Path, str]]:
    """Every place ``spec`` may be, in the order they are tried."""
    models = Path(settings.models_dir)
    if spec.path:
        yield Path(spec.path).expanduser(), "added"
    yield models / spec.name, "models folder"
    if spec.file_name:
        yield models / spec.file_name, "models folder"
    for repo in [r for r in (spec.hub_id, *spec.aliases) if r]:
        yield models / repo.split("/")[-1], "models folder"
        for root, where in ((models, "models folder (hub cache layout)"), (hf_cache_dir(), "Hugging Face cache")):
            yield cache_snapshot(root, repo, spec.kind) or cache_folder(root, repo), where
    if spec.file_name and spec.kind == "torchvision":
        yield torch_cache_dir() / spec.file_name, "torch cache"
    if spec.file_name and spec.file_name.endswith(".onnx"):
        yield rembg_model_dir(Path(spec.file_name).stem) / spec.file_name, "rembg folder"
        yield u2net_dir() / spec.file_name, "rembg folder"


def locate(spec: ModelSpec, settings: Settings | None = None) -> Location | None:
    """Where ``spec`` is on this machine: the first complete copy, else the first incomplete one."""
    settings = settings or get_settings()
    first_bad: Location | None = None
    for path, where in _candidates(spec, settings):
        if not path.exists():
            if where == "added" and first_bad is None:
                first_bad = Location(path, where, f"{path} does not exist (any more)")
            continue
        problem = problem_with(spec.kind, path)
        if problem is None:
            return Location(path, where)
        first_bad = first_bad or Location(path, where, problem)
    return first_bad


def disk_size(path: Path) -> int:
    """Bytes on disk of a file or a folder (links followed, each file counted once)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    seen: set[str] = set()
    total = 0
    for root, _, files in os.walk(path, followlinks=True):
        for name in files:
            real = os.path.realpath(os.path.join(root, name))
            if real not in seen and os.path.isfile(real):
                seen.add(real)
                total += os.path.getsize(real)
    return total


def is_tiny(path: str | Path) -> bool:
    """Whether ``path`` (a model folder or a file in one) is a tiny random-weight test model."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    return (folder / TINY_MARKER).is_file()


def tiny_info(path: str | Path) -> dict[str, Any]:
    """The tiny marker's contents (kind, builder ...); empty when ``path`` is not tiny."""
    path = Path(path)
    marker = (path if path.is_dir() else path.parent) / TINY_MARKER
    try:
        return json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


# -- the registry -------------------------------------------------------------------------------------
def trained_controlnets(settings: Settings) -> list[ModelSpec]:
    """ControlNets the trainer wrote under ``data_dir/train`` (a run's final ``output_dir``)."""
    out = []
    root = Path(settings.data_dir) / "train"
    for config in sorted(root.glob("*/config.json")) if root.is_dir() else []:
        try:
            if json.loads(config.read_text()).get("_class_name") == "ControlNetModel":
                out.append(ModelSpec(f"trained-{config.parent.name}", "controlnet", path=str(config.parent),
                                     trained=True, tiny=is_tiny(config.parent), note="trained here"))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def _added_spec(row: ModelEntry) -> ModelSpec:
    hub_id, spec = row.hub_id, None
    if row.kind == "clip" and not row.path and row.hub_id:
        # An open_clip ARCH/TAG or hf-hub:org/name is loaded as given, and looked for (like every
        # kind's hub id) in the hub caches under the repo that holds its files.
        hub_id, spec = clip_repo(row.hub_id) or row.hub_id, row.hub_id
    return ModelSpec(row.name, row.kind, hub_id=hub_id, spec=spec, path=row.path, tiny=row.tiny, added=True,
                     note="added")


def registry(session: Session | None, settings: Settings | None = None) -> list[ModelSpec]:
    """Every named model: built-in, trained here, and added by the user (added names win)."""
    settings = settings or get_settings()
    specs = {s.name: s for s in (*BUILTIN, *trained_controlnets(settings))}
    if session is not None:
        for row in session.scalars(select(ModelEntry).where(ModelEntry.added.is_(True))):
            specs[row.name] = _added_spec(row)
    return list(specs.values())


@dataclass
class ModelStatus:
    """A model as the Models page shows it: where it is, its size, its state, why, and the fix."""

    spec: ModelSpec
    location: Path | None
    where: str | None
    size: int | None
    state: str
    reason: str
    fix: str
    checked_at: datetime | None = None
    tiny: bool = False

    @property
    def ready(self) -> bool:
        """Usable: its files are here and the last check (if any) loaded them."""
        return self.state in ("ready", "unchecked")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON and tables."""
        return {"name": self.spec.name, "kind": self.spec.kind, "state": self.state, "ready": self.ready,
                "tiny": self.tiny, "hub_id": self.spec.hub_id, "spec": self.spec.spec, "location": str(self.location or "") or None,
                "where": self.where, "size": self.size, "reason": self.reason, "fix": self.fix,
                "checked_at": self.checked_at, "added": self.spec.added, "note": self.spec.note}


def status_of(spec: ModelSpec, settings: Settings | None = None, row: ModelEntry | None = None) -> ModelStatus:
    """``spec``'s status now: located on disk, with the last check of that location if there is one."""
    settings = settings or get_settings()
    loc = locate(spec, settings)
    tiny = spec.tiny or (loc is not None and is_tiny(loc.path))
    size = disk_size(loc.path) if loc is not None and loc.path.exists() else None
    fix = fix_text(spec.kind, spec.default_source, name=spec.name, settings=settings, spec=spec)
    if loc is None:
        places = dict.fromkeys(f"{w} ({p})" for p, w in _candidates(spec, settings))
        state, reason = "missing", "not found in " + "; ".join(places)
    elif loc.problem:
        state, reason = "broken", loc.problem
    else:
        state, reason = "unchecked", "files found; not loaded by a check yet"
    checked = None
    if row is not None and row.check_state and (row.check_location or None) == (str(loc.path) if loc else None):
        state, reason, fix, checked = row.check_state, row.check_reason or "", row.check_fix or fix, row.checked_at
    return ModelStatus(spec, loc.path if loc else None, loc.where if loc else None, size, state, reason,
                       "" if state == "ready" else fix, checked, tiny)


def list_models(session: Session | None, settings: Settings | None = None, kind: str | None = None) -> list[ModelStatus]:
    """Every model (of ``kind``), ready ones first, then by kind and name."""
    settings = settings or get_settings()
    rows = {r.name: r for r in session.scalars(select(ModelEntry))} if session is not None else {}
    found = [status_of(s, settings, rows.get(s.name)) for s in registry(session, settings) if kind in (None, s.kind)]
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(found, key=lambda m: (order.get(m.spec.kind, 99), not m.ready, not m.tiny, m.spec.name))


def get_model(session: Session | None, name: str, settings: Settings | None = None) -> ModelStatus:
    """The model registered as ``name``."""
    settings = settings or get_settings()
    for spec in registry(session, settings):
        if spec.name == name:
            row = session.scalars(select(ModelEntry).where(ModelEntry.name == name)).first() if session else None
            return status_of(spec, settings, row)
    raise ModelLookupError(f"no model named {name!r} in the registry; `python -m workbench models list` shows them")


def guess_kind(path: Path) -> str | None:
    """The kind a folder or file holds, from its files (``None``: cannot tell)."""
    path = Path(path)
    if is_tiny(path) and tiny_info(path).get("kind") in KINDS:
        return tiny_info(path)["kind"]
    if path.is_file():
        return {".onnx": "segmenter", ".ckpt": "sd", ".pth": "torchvision", ".pt": "torchvision"}.get(path.suffix.lower())
    if (path / "model_index.json").is_file():
        try:
            pipeline = json.loads((path / "model_index.json").read_text()).get("_class_name", "")
        except (OSError, json.JSONDecodeError):
            pipeline = ""
        return "inpaint" if "Inpaint" in pipeline else "sd"
    if (path / "open_clip_config.json").is_file():
        return "clip"
    if (path / "body_pose_model.pth").is_file():
        return "openpose"
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if config.get("_class_name") == "ControlNetModel":
        return "controlnet"
    model_type = config.get("model_type", "")
    return {"blip": "caption", "blip-2": "caption", "git": "caption", "kosmos-2": "kosmos2",
            "grounding-dino": "grounding-dino", "segformer": "segmenter", "sam": "sam"}.get(model_type)


def add_model(session: Session, name: str, *, path: str | Path | None = None, hub_id: str | None = None,
              kind: str | None = None, tiny: bool = False) -> ModelSpec:
    """Register a folder or file (or a hub id) under ``name``; the kind is read from the files
    unless given. Adding a name again replaces its entry."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", name or ""):
        raise ModelLookupError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (no spaces or slashes)")
    if (path is None) == (hub_id is None):
        raise ModelLookupError("give a local folder or file, or a hub id (one of them)")
    if path is not None:
        path = Path(path).expanduser().resolve()
        if not path.exists():
            raise ModelLookupError(f"{path} does not exist; give the folder or file that holds the model")
        kind = kind or guess_kind(path)
        if kind is None:
            raise ModelLookupError(f"{path}: cannot tell which kind of model this is; pass the kind "
                                   f"({', '.join(KINDS)})")
        tiny = tiny or is_tiny(path)
    if kind not in KINDS:
        raise ModelLookupError(f"unknown model kind {kind!r}; choose from {', '.join(KINDS)}")
    if path is not None and (problem := problem_with(kind, Path(path))):
        raise ModelLookupError(f"not a {KINDS[kind].label}: {problem}")
    row = session.scalars(select(ModelEntry).where(ModelEntry.name == name)).first()
    if row is None:
        row = ModelEntry(name=name, kind=kind)
        session.add(row)
    row.kind, row.added, row.tiny = kind, True, tiny
    row.path, row.hub_id = (str(path) if path is not None else None), hub_id
    row.check_state = row.check_reason = row.check_fix = row.check_location = None
    row.checked_at = None
    session.flush()
    return _added_spec(row)


def remove_model(session: Session, name: str) -> None:
    """Forget a model the user added (its files stay)."""
    row = session.scalars(select(ModelEntry).where(ModelEntry.name == name, ModelEntry.added.is_(True))).first()
    if row is None:
        raise ModelLookupError(f"no added model named {name!r} (built-in models cannot be removed)")
    session.delete(row)


def record_check(session: Session, status: ModelStatus, state: str, reason: str, fix: str, seconds: float) -> None:
    """Store the result of loading ``status``'s model (the latest check replaces the one before)."""
    spec = status.spec
    row = session.scalars(select(ModelEntry).where(ModelEntry.name == spec.name)).first()
    if row is None:
        row = ModelEntry(name=spec.name, kind=spec.kind, added=False, tiny=spec.tiny)
        session.add(row)
    row.check_state, row.check_reason, row.check_fix = state, reason, fix
    row.check_location = str(status.location) if status.location is not None else None
    row.check_seconds, row.checked_at = round(seconds, 3), utcnow()
    session.flush()


def _added_in_store(ref: str, settings: Settings) -> ModelSpec | None:
    """The entry the user added as ``ref``, read straight from the store (loaders have no session;
    a store without the registry's table has no added entries)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and (not url.database or not Path(url.database).is_file()):
        return None  # no store yet (and connecting would create an empty file)
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            row = session.scalars(select(ModelEntry).where(ModelEntry.name == ref, ModelEntry.added.is_(True))).first()
            return _added_spec(row) if row is not None else None
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()


def resolve(ref: str, kind: str, session: Session | None = None, settings: Settings | None = None) -> str:
    """What a loader should be given for ``ref`` (a registry name, a path, a hub id or a spec):
    an existing path as it is; a name or a hub id found on this machine as that local copy;
    anything else unchanged (a hub id or spec the loader fetches when the hub is reachable)."""
    settings = settings or get_settings()
    if Path(ref).expanduser().exists():
        return str(Path(ref).expanduser())
    specs = [s for s in registry(session, settings) if s.kind == kind]
    if session is None and re.fullmatch(r"[\w.-]+", ref) and (added := _added_in_store(ref, settings)) is not None:
        specs.insert(0, added)
    spec = next((s for s in specs if s.name == ref), None) \
        or next((s for s in specs if ref in (s.hub_id, s.spec, *s.aliases)), None)
    if spec is None and kind in KINDS and "/" in ref and KINDS[kind].hub and not ref.startswith("hf-hub:") \
            and kind != "clip" and re.fullmatch(r"[\w.-]+/[\w.-]+", ref):
        spec = ModelSpec(ref.split("/")[-1], kind, hub_id=ref)
    if spec is None:
        own = Path(settings.models_dir) / ref
        if re.fullmatch(r"[\w.-]+", ref) and own.exists() and problem_with(kind, own) is None:
            return str(own)  # a model put in the models folder under its own name
        return ref
    loc = locate(spec, settings)
    return str(loc.path) if loc is not None and loc.problem is None else spec.default_source


# -- fixes ----------------------------------------------------------------------------------------------
def hub_cli() -> str:
    """The hub download command this environment has: ``hf download`` (huggingface_hub >= 0.34)
    or the older ``huggingface-cli download``."""
    here = Path(sys.executable).parent
    if (here / "hf").exists() or (here / "hf.exe").exists() or shutil.which("hf"):
        return "hf download"
    return "huggingface-cli download"


def _builtin_for(kind: str, source: str) -> ModelSpec | None:
    return next((s for s in BUILTIN if s.kind == kind and source in (s.name, s.hub_id, s.spec, *s.aliases)), None)


def clip_repo(spec: str) -> str | None:
    """The hub repo that holds the open_clip pretrained file of ``ARCH/TAG`` (``hf-hub:`` given as is)."""
    if spec.startswith("hf-hub:"):
        return spec[len("hf-hub:"):]
    known = _builtin_for("clip", spec)
    if known is not None:
        return known.hub_id
    arch, _, tag = spec.partition("/")
    return _open_clip_repo(arch, tag)


@lru_cache(maxsize=64)
def _open_clip_repo(arch: str, tag: str) -> str | None:
    """open_clip's hub repo for ``arch``/``tag`` (kept: the registry asks on every listing)."""
    try:
        import open_clip

        repo = (open_clip.get_pretrained_cfg(arch, tag) or {}).get("hf_hub", "")
    except Exception:  # an unknown arch, or open_clip missing: no repo to name
        return None
    return repo.strip("/") or None


def fix_text(kind: str, source: str, *, name: str | None = None, settings: Settings | None = None,
             spec: ModelSpec | None = None) -> str:
    """The exact steps that make ``source`` (a hub id, an open_clip spec, a path) loadable here."""
    settings = settings or get_settings()
    models = Path(settings.models_dir)
    spec = spec or _builtin_for(kind, source)
    if spec is None and source.lower().endswith(".onnx"):  # a local copy of a built-in single-file model
        spec = next((s for s in BUILTIN if s.kind == kind and s.file_name == Path(source).name), None)
    name = name or (spec.name if spec else re.sub(r"[^\w.-]+", "-", source.rstrip("/").split("/")[-1]) or kind)
    add = f"or register a copy you have: `python -m workbench models add {name} PATH`"
    cli = hub_cli()
    if spec is not None and spec.path and not spec.hub_id:
        return (f"the {KINDS[kind].label} folder or file {spec.path} is missing or incomplete: put it back or "
                f"re-add it (`python -m workbench models add {name} PATH`)")
    if kind == "torchvision":
        if spec is not None and spec.url:
            return (f"copy {spec.url} to {torch_cache_dir() / spec.file_name} (or into {models}/), "
                    f"or pass a local state dict: --weights FILE; {add}")
        return f"give the path of a torchvision state dict (.pth or .safetensors) with --weights FILE; {add}"
    if spec is not None and spec.file_name and spec.file_name.endswith(".onnx"):
        md5 = f" (md5 {spec.md5})" if spec.md5 else ""
        return (f"on a machine with access download it from {spec.url}{md5} and put it here as "
                f"{models / spec.file_name} or {u2net_dir() / spec.file_name} (or set U2NET_HOME to the folder "
                f"holding it), {add}")
    if Path(source).expanduser().exists() or source.startswith(("/", "./", "~")):
        need = KINDS[kind].needs + KINDS[kind].weights[:1]
        return (f"the local {KINDS[kind].label} at {source} must hold {', '.join(need)}; fix or replace it, "
                f"or pick a ready model on the Models page")
    if kind == "clip":
        repo = clip_repo(source)
        if repo is None:
            return (f"{source!r} is no open_clip ARCH/TAG with a hub file; use e.g. ViT-L-14/openai, a folder with "
                    f"open_clip_config.json and its weights, or ARCH//path/to/open_clip_model.safetensors "
                    f"(a local pretrained= file)")
        return (f"get the open_clip pretrained file on a machine with internet: `{cli} {repo} "
                f"open_clip_config.json open_clip_model.safetensors --local-dir {models / name}` and copy that "
                f"folder here (the registry finds it as {name!r}), or pass the file as open_clip's pretrained=: "
                f"--model {source.split('/')[0]}//PATH/open_clip_model.safetensors; {add}")
    repo = spec.hub_id if spec is not None and spec.hub_id else source
    return (f"on a machine with internet run `{cli} {repo} --local-dir {models / name}` and copy that folder "
            f"here (the registry finds it as {name!r}), {add}")


# -- offline detection and loading -----------------------------------------------------------------------
_probe_lock = threading.Lock()
_probe_cache: dict[str, tuple[float, bool]] = {}


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_endpoint() -> str:
    """The hub's address (``HF_ENDPOINT`` or huggingface.co)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_offline(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether the hub cannot be used: ``HF_HUB_OFFLINE`` is set, or a connection to it does not open
    within ``timeout`` seconds (the answer is kept for a minute)."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return True
    endpoint = hub_endpoint()
    with _probe_lock:
        cached = _probe_cache.get(endpoint)
        if cached and time.monotonic() - cached[0] < _PROBE_TTL:
            return cached[1]
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    opened: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((url.hostname or "", port), timeout=timeout):
                opened.append(True)
        except OSError:
            pass

    # In a thread: the socket's timeout does not cover the name look-up, which can hang offline.
    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout + 0.5)
    offline = not opened
    with _probe_lock:
        _probe_cache[endpoint] = (time.monotonic(), offline)
    return offline


@contextmanager
def _hub_offline_switched(on: bool) -> Iterator[None]:
    """``HF_HUB_OFFLINE`` on for this block (environment and huggingface_hub's flag), then as before."""
    if not on:
        yield
        return
    import huggingface_hub.constants as hf_constants

    env_before, flag_before = os.environ.get("HF_HUB_OFFLINE"), hf_constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = flag_before
        if env_before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = env_before


@dataclass
class Loading:
    """What :func:`loading` hands a loader: whether the hub is off, and ``from_pretrained`` kwargs."""

    kind: str
    source: str
    offline: bool
    kwargs: dict[str, Any] = field(default_factory=dict)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:400]}" + ("…" if len(text) > 400 else "")


@contextmanager
def loading(kind: str, source: str, *, name: str | None = None, asks_hub: bool = False,
            passthrough: tuple[type[BaseException], ...] = ()) -> Iterator[Loading]:
    """Load a ``kind`` model from ``source`` inside this block, never waiting on an unreachable hub.

    A local ``source`` is read local-only; otherwise the hub is probed (about two seconds at most)
    and, when it cannot be reached, every hub call in the block is refused at once
    (``HF_HUB_OFFLINE``) so only cached files are tried. Any error in the block other than
    ``passthrough`` ones becomes :class:`ModelNotReady` with the reason and :func:`fix_text`.
    ``asks_hub``: a local ``source`` whose load may still fetch from the hub (a single-file
    checkpoint's component configs), so the hub is probed for it too.
    """
    local = Path(source).expanduser().exists() and not asks_hub
    offline = not local and hub_offline()
    if offline:
        # Offline only the hub cache can serve a repo: without it there, fail before any import.
        repo = clip_repo(source) if kind == "clip" else source
        if repo and re.fullmatch(r"[\w.-]+/[\w.-]+", repo) and cache_snapshot(hf_cache_dir(), repo, kind) is None:
            raise ModelNotReady(kind, name or source, "missing", f"{repo} is not in the Hugging Face cache "
                                f"({hf_cache_dir()})", fix_text(kind, source, name=name), offline)
    context = Loading(kind, source, offline, {"local_files_only": True} if (offline or local) else {})
    try:
        with _hub_offline_switched(offline):
            yield context
    except ModelNotReady:
        raise
    except passthrough:
        raise
    except Exception as exc:
        state = "broken" if local and not isinstance(exc, FileNotFoundError) else "missing"
        raise ModelNotReady(kind, name or source, state, _reason(exc), fix_text(kind, source, name=name),
                            offline) from exc


def status_rows(models: list[ModelStatus]) -> list[dict[str, Any]]:
    """Table rows (kind, name, state, size in MB, location, hub id, fix) for a page or the CLI."""
    return [{"kind": m.spec.kind, "name": m.spec.name, "state": m.state + (" · tiny" if m.tiny else ""),
             "size_mb": round(m.size / 2**20, 1) if m.size else None, "location": str(m.location or ""),
             "hub_id": m.spec.hub_id or m.spec.spec or "", "reason": m.reason, "fix": m.fix} for m in models]

