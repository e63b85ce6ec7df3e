"""Checking the model registry: load each model once, record ready / missing / broken with the fix.

A check loads what is on this machine, on the CPU, through the same loaders the workbench uses
(so a model that passes here loads in a job too). It never downloads: a model with no local copy
is recorded as missing with its fix. Runs as ``python -m workbench models check`` (a background
job from the Models page).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from db.engine import session_scope
from workbench.models import ModelNotReady, ModelStatus, fix_text, is_tiny, list_models, loading, record_check
from workbench.progress import ProgressFn, StopFn, check_stop, report
from workbench.settings import Settings


def _sd(source: str, status: ModelStatus) -> Any:
    from diffusers import StableDiffusionPipeline

    with loading("sd", source, name=status.spec.name) as load:
        if Path(source).is_file():
            return StableDiffusionPipeline.from_single_file(source, safety_checker=None)
        return StableDiffusionPipeline.from_pretrained(source, safety_checker=None, requires_safety_checker=False,
                                                       **load.kwargs)


def _controlnet(source: str, status: ModelStatus) -> Any:
    from diffusers import ControlNetModel

    with loading("controlnet", source, name=status.spec.name) as load:
        return ControlNetModel.from_pretrained(source, **load.kwargs)


def _clip(source: str, status: ModelStatus) -> Any:
    from workbench.captions.interrogator import load_clip

    return load_clip(source, "cpu")


def _caption(source: str, status: ModelStatus) -> Any:
    from workbench.captions.blip import load_caption_model

    return load_caption_model(source, "cpu", fp16=False)


def _kosmos2(source: str, status: ModelStatus) -> Any:
    from workbench.captions.kosmos2 import Kosmos2Captioner, Kosmos2Settings

    return Kosmos2Captioner(Kosmos2Settings(model=source, device="cpu")).load()


def _grounding_dino(source: str, status: ModelStatus) -> Any:
    from workbench.people.grounding_dino import GroundingDinoDetector, GroundingDinoSettings

    return GroundingDinoDetector(GroundingDinoSettings(model=source, device="cpu")).load()


def _torchvision(source: str, status: ModelStatus) -> Any:
    from workbench.people.torchvision_rcnn import TorchvisionDetector, TorchvisionSettings

    arch = status.spec.spec or "maskrcnn_resnet50_fpn_v2"
    cached = status.where == "torch cache"
    return TorchvisionDetector(TorchvisionSettings(architecture=arch, device="cpu",
                                                   weights_path=None if cached else source)).load()


def _segmenter(source: str, status: ModelStatus) -> Any:
    with loading("segmenter", source, name=status.spec.name) as load:
        if source.endswith(".onnx"):
            import onnxruntime

            return onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

        return (AutoModelForSemanticSegmentation.from_pretrained(source, **load.kwargs),
                AutoImageProcessor.from_pretrained(source, **load.kwargs))


def _openpose(source: str, status: ModelStatus) -> Any:
    with loading("openpose", source, name=status.spec.name):
        from controlnet_aux import OpenposeDetector

        return OpenposeDetector.from_pretrained(source)


def _sam(source: str, status: ModelStatus) -> Any:
    from workbench.repair_models import load_sam

    return load_sam(source, "cpu")


def _inpaint(source: str, status: ModelStatus) -> Any:
    from workbench.repair_models import load_inpaint

    return load_inpaint(source, "cpu")


LOADERS: dict[str, Callable[[str, ModelStatus], Any]] = {
    "sd": _sd, "controlnet": _controlnet, "clip": _clip, "caption": _caption, "kosmos2": _kosmos2,
    "grounding-dino": _grounding_dino, "torchvision": _torchvision, "segmenter": _segmenter, "openpose": _openpose,
    "sam": _sam, "inpaint": _inpaint,
}


def _not_ready(exc: BaseException) -> ModelNotReady | None:
    """The :class:`ModelNotReady` behind ``exc`` (loaders wrap it in their own error types)."""
    while exc is not None:
        if isinstance(exc, ModelNotReady):
            return exc
        exc = exc.__cause__
    return None


def check_one(status: ModelStatus) -> tuple[str, str, str]:
    """Load ``status``'s model once: ``(state, reason, fix)``; a model with no local copy is not
    downloaded (state ``missing``)."""
    if status.location is None:
        return "missing", status.reason, status.fix
    source = str(status.location)
    try:
        LOADERS[status.spec.kind](source, status)
    except ImportError as exc:
        return "broken", f"{type(exc).__name__}: {exc}", f"install the package it needs: pip install {exc.name or '...'}"
    except Exception as exc:  # any failure of a load is what a check reports
        found = _not_ready(exc)
        if found is not None:
            return ("broken" if found.state == "missing" else found.state), found.reason, found.fix
        return "broken", f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}", \
            fix_text(status.spec.kind, source, name=status.spec.name, spec=status.spec)
    note = " (tiny test model: random weights)" if is_tiny(source) else ""
    return "ready", f"loaded from {source}{note}", ""


def check_models(engine: Engine, settings: Settings, names: list[str] | None = None, kind: str | None = None,
                 progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> list[dict[str, Any]]:
    """Check every model (or ``names`` / those of ``kind``), record each result; returns them."""
    with session_scope(engine) as session:
        todo = [m for m in list_models(session, settings, kind) if names is None or m.spec.name in names]
    unknown = sorted(set(names or []) - {m.spec.name for m in todo})
    if unknown:
        raise LookupError(f"no model named {', '.join(unknown)} in the registry; `python -m workbench models list`")
    results = []
    report(progress, 0, len(todo))
    for done, status in enumerate(todo, start=1):
        check_stop(should_stop)
        start = time.monotonic()
        state, reason, fix = check_one(status)
        seconds = time.monotonic() - start
        with session_scope(engine) as session:
            record_check(session, status, state, reason, fix, seconds)
        results.append({"name": status.spec.name, "kind": status.spec.kind, "state": state, "reason": reason,
                        "fix": fix, "seconds": round(seconds, 2)})
        report(progress, done, len(todo))
    return results
