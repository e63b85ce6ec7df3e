"""Load segmentation models, one loader per kind, each from a hub id, a local path or a config.

- SegFormer (``transformers.SegformerForSemanticSegmentation``): a hub id, a folder saved with
  ``save_pretrained`` (what ``train/segmenter.py`` writes), or a config (a dict or
  ``SegformerConfig``: random weights).
- The public cloth-segmentation U2NET as rembg's ``u2net_cloth_seg`` session: the ONNX file
  ``u2net_cloth_seg.onnx`` from a local path (a file or the folder holding it; default: rembg's
  own folders under ``U2NET_HOME``). Nothing is downloaded here: a missing file is an error
  saying where to get it, never a download attempt.

With ``HF_HUB_OFFLINE`` set, hub loads use only the local cache (``local_files_only``), so a
model that is not there fails in seconds instead of retrying the network for minutes.
Loaded models are cached per source, so pages and jobs reuse them.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from workbench.segment.tiny import CLOTH_ONNX_NAME

CLOTH_MODEL_URL = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net_cloth_seg.onnx"
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


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for cached files only."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# -- SegFormer ----------------------------------------------------------------------------------
def load_segformer(source: str | Path | dict | Any):
    """A ``SegformerForSemanticSegmentation`` from a hub id, a saved folder or a config (eval mode)."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    if isinstance(source, dict):
        source = SegformerConfig(**source)
    if isinstance(source, SegformerConfig):
        return SegformerForSemanticSegmentation(source).eval()
    return _load_segformer_cached(str(source))


@lru_cache(maxsize=4)
def _load_segformer_cached(source: str):
    from transformers import SegformerForSemanticSegmentation

    path = Path(source).expanduser()
    local = path.exists()
    if local and not (path / "config.json").is_file():
        raise SegmentError(f"SegFormer folder {path} has no config.json; point at a folder written by "
                           "`save_pretrained` (e.g. a segmenter run's output_dir or its checkpoint-<step>/model)")
    try:
        model = SegformerForSemanticSegmentation.from_pretrained(str(path) if local else source,
                                                                 local_files_only=local or hub_offline())
    except (OSError, ValueError) as exc:
        where = f"folder {path}" if local else f"hub id {source!r}"
        fix = ("it is not in the local cache and HF_HUB_OFFLINE is set; download it on a machine with access "
               "(`huggingface-cli download ID`) or pass a local folder" if hub_offline() and not local
               else "pass a SegFormer hub id, a folder saved with save_pretrained, or a config")
        raise SegmentError(f"cannot load a SegFormer from {where}: {fix} ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return model.eval()


def load_segformer_for_training(source: str | Path | dict | Any, names: list[str]):
    """A SegFormer to train on ``names`` (class k = names[k]): pretrained weights with a new head, or a config."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    labels = {"num_labels": len(names), "id2label": dict(enumerate(names)),
              "label2id": {n: i for i, n in enumerate(names)}}
    if isinstance(source, (dict, SegformerConfig)):
        values = source.to_dict() if isinstance(source, SegformerConfig) else dict(source)
        return SegformerForSemanticSegmentation(SegformerConfig(**{**values, **labels}))
    path = Path(str(source)).expanduser()
    local = path.exists()
    try:
        return SegformerForSemanticSegmentation.from_pretrained(
            str(path) if local else str(source), local_files_only=local or hub_offline(),
            ignore_mismatched_sizes=True, **labels)
    except (OSError, ValueError) as exc:
        raise SegmentError(f"cannot load a SegFormer to train from {'folder ' + str(path) if local else repr(str(source))}: "
                           f"pass a hub id in the local cache (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '')!r}), "
                           f"a folder saved with save_pretrained, or segformer_config ({type(exc).__name__})") from None


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
def cloth_model_candidates() -> list[Path]:
    """Where rembg looks for ``u2net_cloth_seg.onnx`` without downloading (its own folders)."""
    from rembg.sessions.u2net_cloth_seg import Unet2ClothSession

    return [Path(Unet2ClothSession.model_dir()) / CLOTH_ONNX_NAME, Path(Unet2ClothSession.legacy_home()) / CLOTH_ONNX_NAME]


def find_cloth_model(path: str | Path | None = None) -> Path:
    """The local ``u2net_cloth_seg.onnx``: ``path`` (file or folder) or rembg's folders; else how to get it."""
    if path is not None:
        candidate = Path(path).expanduser()
        if candidate.is_dir():
            candidate = candidate / CLOTH_ONNX_NAME
        candidates = [candidate]
    else:
        candidates = cloth_model_candidates()
    for candidate in candidates:
        if candidate.is_file():
            if candidate.name != CLOTH_ONNX_NAME:
                raise SegmentError(f"{candidate}: rembg's u2net_cloth_seg session reads a file named "
                                   f"{CLOTH_ONNX_NAME}; rename it (or copy it) to {candidate.parent / CLOTH_ONNX_NAME}")
            return candidate.resolve()
    raise SegmentError(
        f"the cloth-segmentation model {CLOTH_ONNX_NAME} is not at {' or '.join(map(str, candidates))}; "
        f"download it on a machine with access from {CLOTH_MODEL_URL} (md5 2434d1f3cb744e0e49386c906e5a08bb) "
        f"and put it there, or set U2NET_HOME to the folder holding it")


def load_cloth_session(path: str | Path | None = None):
    """rembg's ``u2net_cloth_seg`` session on the local ONNX file (never a download)."""
    return _load_cloth_cached(str(find_cloth_model(path)))


@lru_cache(maxsize=2)
def _load_cloth_cached(onnx_path: str):
    from rembg import new_session

    folder = str(Path(onnx_path).parent)
    # rembg finds an existing file through U2NET_HOME (its legacy flat folder) before it would
    # download; point it at this file's folder for the session's construction only.
    with _env_lock:
        saved = os.environ.get("U2NET_HOME")
        os.environ["U2NET_HOME"] = folder
        try:
            return new_session("u2net_cloth_seg", providers=["CPUExecutionProvider"]
                               if not _cuda_onnx() else ["CUDAExecutionProvider", "CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a corrupt or foreign file
            raise SegmentError(f"{onnx_path}: onnxruntime cannot load it as the cloth-segmentation model "
                               f"({type(exc).__name__}: {exc}); download it again from {CLOTH_MODEL_URL}") from None
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
