"""Load segmentation models, one loader per kind, each from a registry name, a hub id, a local path or a config.

- SegFormer (``transformers.SegformerForSemanticSegmentation``): a registry name
  (``segformer-clothes``, ``tiny-segformer``, one the user added), a hub id, a folder saved with
  ``save_pretrained`` (what ``train/segmenter.py`` writes), or a config (a dict or
  ``SegformerConfig``: random weights).
- The public cloth-segmentation U2NET as rembg's ``u2net_cloth_seg`` session: the ONNX file
  ``u2net_cloth_seg.onnx`` from a local path (a file or the folder holding it; default: where the
  model registry finds ``u2net-cloth-seg``: the models folder or rembg's own folders). Nothing
  is downloaded here: a missing file is an error saying where to get it, never a download attempt.

Names and hub ids go through the model registry (:func:`workbench.models.resolve`) and every
load through :func:`workbench.models.loading`: with the hub unreachable (or ``HF_HUB_OFFLINE``)
only local files are tried, so a model that is not there fails in seconds with the registry's
fix. Loaded models are cached per source, so pages and jobs reuse them.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from workbench.models import BUILTIN, ModelNotReady, ModelStatus, fix_text, loading, resolve, status_of
from workbench.segment.tiny import CLOTH_ONNX_NAME

CLOTH_MODEL = "u2net-cloth-seg"  # the registry's name of the public cloth U2NET
CLOTH_CLASSES = ("background", "upper body", "lower body", "full body")
CLOTH_SCHEME = "cloth-seg-compat"  # what the released weights learnt (see workbench/schemes.py)
SCHEME_KEY = "workbench_scheme"  # where a trained SegFormer's config.json records its scheme

_env_lock = threading.Lock()


class SegmentError(ValueError):
    """A segmenter that cannot be loaded or used; the message names the thing and the fix."""


@dataclass(frozen=True)
class SegmenterScheme:
    """The classes a segmenter predicts: model output k is scheme value ``values[k]``."""

    name: str
    version: int | None
    values: tuple[int, ...]
    names: tuple[str, ...]

    def legend(self) -> dict[str, str]:
        """``{"<value>": "<class name>"}``, as rendered masks' legends are."""
        return {str(v): n for v, n in zip(self.values, self.names)}

    def as_dict(self) -> dict[str, Any]:
        """Plain data (what a trained model's config records)."""
        return {"name": self.name, "version": self.version, "values": list(self.values), "names": list(self.names)}


# -- SegFormer ----------------------------------------------------------------------------------
def load_segformer(source: str | Path | dict | Any):
    """A ``SegformerForSemanticSegmentation`` from a hub id, a saved folder or a config (eval mode)."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    if isinstance(source, dict):
        source = SegformerConfig(**source)
    if isinstance(source, SegformerConfig):
        return SegformerForSemanticSegmentation(source).eval()
    return _load_segformer_cached(resolve(str(source), "segmenter"), str(source))


def _where(source: str, ref: str) -> str:
    """How an error names what was loaded: the folder, or the hub id (and the name it came from)."""
    if Path(source).expanduser().exists():
        return f"folder {Path(source).expanduser()}" + (f" ({ref!r})" if ref != source else "")
    return f"hub id {source!r}" + (f" ({ref!r})" if ref != source else "")


@lru_cache(maxsize=4)
def _load_segformer_cached(source: str, ref: str):
    from transformers import SegformerForSemanticSegmentation

    path = Path(source).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise SegmentError(f"SegFormer folder {path} has no config.json; point at a folder written by "
                           "`save_pretrained` (e.g. a segmenter run's output_dir or its checkpoint-<step>/model)")
    try:
        with loading("segmenter", source, name=ref if ref != source else None) as load:
            model = SegformerForSemanticSegmentation.from_pretrained(source, **load.kwargs)
    except ModelNotReady as exc:
        raise SegmentError(f"cannot load a SegFormer from {_where(source, ref)}: {exc}") from exc
    return model.eval()


def load_segformer_for_training(source: str | Path | dict | Any, names: list[str]):
    """A SegFormer to train on ``names`` (class k = names[k]): pretrained weights with a new head, or a config."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    labels = {"num_labels": len(names), "id2label": dict(enumerate(names)),
              "label2id": {n: i for i, n in enumerate(names)}}
    if isinstance(source, (dict, SegformerConfig)):
        values = source.to_dict() if isinstance(source, SegformerConfig) else dict(source)
        return SegformerForSemanticSegmentation(SegformerConfig(**{**values, **labels}))
    ref = str(source)
    resolved = resolve(ref, "segmenter")
    try:
        with loading("segmenter", resolved, name=ref if ref != resolved else None) as load:
            return SegformerForSemanticSegmentation.from_pretrained(resolved, ignore_mismatched_sizes=True,
                                                                    **labels, **load.kwargs)
    except ModelNotReady as exc:
        raise SegmentError(f"cannot load a SegFormer to train from {_where(resolved, ref)}: {exc}; or give "
                           f"segformer_config (random weights)") from exc


def trains_from(model: ModelStatus) -> bool:
    """Whether a registry segmenter is one a SegFormer training can start from (a SegFormer
    folder or hub repo), not a single-file model such as the cloth U2NET's ``.onnx``."""
    spec = model.spec
    return not any(str(p or "").lower().endswith(".onnx") for p in (spec.file_name, spec.path, model.location))


def segformer_scheme(model: Any, source: str = "") -> SegmenterScheme:
    """The scheme a SegFormer predicts: the one its training recorded, else its own labels."""
    config = model.config
    recorded = getattr(config, SCHEME_KEY, None)
    if isinstance(recorded, dict) and recorded.get("values"):
        return SegmenterScheme(str(recorded["name"]), recorded.get("version"),
                               tuple(int(v) for v in recorded["values"]), tuple(recorded["names"]))
    labels = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    count = config.num_labels
    return SegmenterScheme(f"model:{source or config.name_or_path or 'segformer'}", None, tuple(range(count)),
                           tuple(labels.get(i, str(i)) for i in range(count)))


# -- the public cloth U2NET via rembg ---------------------------------------------------------------
def find_cloth_model(path: str | Path | None = None) -> Path:
    """The local ``u2net_cloth_seg.onnx``: ``path`` (file or folder), else where the registry finds
    ``u2net-cloth-seg``; if absent, an error naming the places looked at and the registry's fix."""
    if path is None:
        status = status_of(next(s for s in BUILTIN if s.name == CLOTH_MODEL))
        if not status.ready or status.location is None:
            raise SegmentError(str(ModelNotReady("segmenter", CLOTH_MODEL, status.state,
                                                 f"{CLOTH_ONNX_NAME}: {status.reason}", status.fix)))
        candidate = status.location
    else:
        candidate = Path(path).expanduser()
        if candidate.is_dir():
            candidate = candidate / CLOTH_ONNX_NAME
        if not candidate.is_file():
            raise SegmentError(str(ModelNotReady("segmenter", str(path), "missing", f"{candidate} does not exist",
                                                 fix_text("segmenter", CLOTH_MODEL))))
    if candidate.name != CLOTH_ONNX_NAME:
        raise SegmentError(f"{candidate}: rembg's u2net_cloth_seg session reads a file named "
                           f"{CLOTH_ONNX_NAME}; rename it (or copy it) to {candidate.parent / CLOTH_ONNX_NAME}")
    return candidate.resolve()


def load_cloth_session(path: str | Path | None = None, name: str | None = None):
    """rembg's ``u2net_cloth_seg`` session on the local ONNX file (never a download)."""
    return _load_cloth_cached(str(find_cloth_model(path)), name)


@lru_cache(maxsize=2)
def _load_cloth_cached(onnx_path: str, name: str | None):
    from rembg import new_session

    folder = str(Path(onnx_path).parent)
    # rembg finds an existing file through U2NET_HOME (its legacy flat folder) before it would
    # download; point it at this file's folder for the session's construction only.
    with _env_lock:
        saved = os.environ.get("U2NET_HOME")
        os.environ["U2NET_HOME"] = folder
        try:
            with loading("segmenter", onnx_path, name=name):
                return new_session("u2net_cloth_seg", providers=["CPUExecutionProvider"]
                                   if not _cuda_onnx() else ["CUDAExecutionProvider", "CPUExecutionProvider"])
        except ModelNotReady as exc:  # onnxruntime raises its own types for a corrupt or foreign file
            raise SegmentError(f"{onnx_path}: onnxruntime cannot load it as the cloth-segmentation model: {exc}") from exc
        finally:
            if saved is None:
                os.environ.pop("U2NET_HOME", None)
            else:
                os.environ["U2NET_HOME"] = saved


def _cuda_onnx() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def cloth_scheme() -> SegmenterScheme:
    """The cloth U2NET's 4 outputs, read with the ``cloth-seg-compat`` scheme (values 0-3)."""
    return SegmenterScheme(CLOTH_SCHEME, None, tuple(range(len(CLOTH_CLASSES))), CLOTH_CLASSES)


def clear_caches() -> None:
    """Forget loaded models (tests; a model file replaced on disk)."""
    _load_segformer_cached.cache_clear()
    _load_cloth_cached.cache_clear()
