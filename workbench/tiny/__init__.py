"""Tiny test models of every kind, written into the models folder so every page can run on a laptop.

Each is built from a small config with random weights (nothing is downloaded), saved where the
model registry looks (``models_dir/<name>``), and marked with ``workbench_tiny.json`` so that
anything made with it is labelled "random weights (tiny test model)". Their output is noise: they
exercise the real loading and running code, nothing more. The OpenPose annotator's architecture
is fixed; its tiny copy stays small on disk (about 5 MB a file) by sharing one random buffer
(:mod:`workbench.tiny.openpose`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.models import TINY_LABEL, TINY_MARKER

# name -> kind, in the order they are written (the ControlNet is made from the tiny SD).
TINY_MODELS: dict[str, str] = {
    "tiny-sd": "sd",
    "tiny-controlnet": "controlnet",
    "tiny-clip": "clip",
    "tiny-blip": "caption",
    "tiny-kosmos2": "kosmos2",
    "tiny-grounding-dino": "grounding-dino",
    "tiny-maskrcnn": "torchvision",
    "tiny-segformer": "segmenter",
    "tiny-u2net-cloth": "segmenter",
    "tiny-openpose": "openpose",
    "tiny-sam": "sam",
    "tiny-sd-inpaint": "inpaint",
}


def mark_tiny(folder: Path, kind: str, **info: Any) -> Path:
    """Mark ``folder`` as a tiny random-weight model of ``kind`` (``info``: what its loader needs)."""
    (Path(folder) / TINY_MARKER).write_text(json.dumps({"kind": kind, "label": TINY_LABEL, **info}, indent=2))
    return Path(folder)


def _build(name: str, folder: Path, models_dir: Path) -> dict[str, Any]:
    """Write the tiny model ``name`` into ``folder``; returns what its marker records."""
    if name == "tiny-sd":
        from workbench.tiny.sd import build_tiny_sd

        build_tiny_sd(folder)
        shutil.rmtree(folder.parent / "_tokenizer_src", ignore_errors=True)
        return {}
    if name == "tiny-controlnet":
        from workbench.tiny.sd import save_tiny_controlnet

        save_tiny_controlnet(folder, models_dir / "tiny-sd")
        return {"base": "tiny-sd"}
    if name == "tiny-clip":
        from workbench.tiny.captioners import save_tiny_clip, write_label_lists

        save_tiny_clip(folder)
        write_label_lists(folder / "labels")
        # The Interrogator's own label lists (100k flavours) would take minutes to embed: the
        # tiny CLIP brings short ones, and the tiny BLIP as its caption model.
        return {"labels": "labels", "caption_model": "tiny-blip"}
    if name == "tiny-blip":
        from workbench.tiny.captioners import save_tiny_blip

        save_tiny_blip(folder)
        return {}
    if name == "tiny-kosmos2":
        from workbench.tiny.captioners import save_tiny_kosmos2

        save_tiny_kosmos2(folder)
        return {}
    if name == "tiny-grounding-dino":
        from workbench.tiny.detectors import save_tiny_grounding_dino

        save_tiny_grounding_dino(folder)
        return {}
    if name == "tiny-maskrcnn":
        from workbench.tiny.detectors import save_tiny_rcnn

        save_tiny_rcnn(folder, "mask", favour_class=1)
        return {"rcnn": "mask", "favour_class": 1}
    if name == "tiny-segformer":
        from workbench.segment.tiny import build_tiny_cloth_segformer

        build_tiny_cloth_segformer(folder)
        return {}
    if name == "tiny-u2net-cloth":
        from workbench.segment.tiny import CLOTH_ONNX_NAME, build_tiny_cloth_onnx

        build_tiny_cloth_onnx(folder / CLOTH_ONNX_NAME)
        return {"file": CLOTH_ONNX_NAME}
    if name == "tiny-openpose":
        from workbench.tiny.openpose import build_tiny_openpose

        build_tiny_openpose(folder)
        return {}
    if name == "tiny-sam":
        from workbench.tiny.repair import save_tiny_sam

        save_tiny_sam(folder)
        return {}
    if name == "tiny-sd-inpaint":
        from workbench.tiny.repair import build_tiny_inpaint

        build_tiny_inpaint(folder)
        shutil.rmtree(folder.parent / "_tokenizer_src", ignore_errors=True)
        return {}
    raise ValueError(f"unknown tiny model {name!r}; choose from {', '.join(TINY_MODELS)}")


def write_tiny_models(models_dir: Path, progress: Callable[[int, int | None], None] | None = None,
                      names: list[str] | None = None) -> dict[str, Path]:
    """Write every tiny model (or ``names``) into ``models_dir/<name>``, each built in a temporary
    folder and moved into place when complete; returns ``{name: path}``: the folder, or for a
    single-file model (the cloth ONNX) the file in it, as the registry should record it."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    todo = names or list(TINY_MODELS)
    unknown = [n for n in todo if n not in TINY_MODELS]
    if unknown:
        raise ValueError(f"unknown tiny model {', '.join(unknown)}; choose from {', '.join(TINY_MODELS)}")
    if "tiny-controlnet" in todo and "tiny-sd" not in todo and not (models_dir / "tiny-sd").is_dir():
        todo = ["tiny-sd", *todo]
    out: dict[str, Path] = {}
    if progress:
        progress(0, len(todo))
    for done, name in enumerate(todo, start=1):
        final = models_dir / name
        with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=models_dir) as tmp:
            folder = Path(tmp) / name
            folder.mkdir()
            info = _build(name, folder, models_dir)
            mark_tiny(folder, TINY_MODELS[name], **info)
            if final.exists():
                shutil.rmtree(final)
            folder.rename(final)
        out[name] = final / info["file"] if "file" in info else final
        if progress:
            progress(done, len(todo))
    return out
