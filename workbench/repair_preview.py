"""A people repair's preview as files: what the People page's preview job writes and its "Save repair" stores.

Model-backed previews (erase with ``inpaint``; label with ``sam`` or ``cloth-segmenter``) take long
on a CPU, so the page runs them as a background job (kind :data:`PREVIEW_JOB_KIND`): the command
``python -m workbench people repair ... --preview-only --out FOLDER`` (:func:`preview_argv`) writes
the preview into a folder under ``<data_dir>/repairs/previews/``:

- ``preview.json``: the request, the box clipped to the image, the model used, the segments' categories;
- ``edited.png`` (an erase: the whole edited photo) or ``segments.npz`` (a label repair's masks).

``preview.json`` is written last, so a folder without it holds no preview. The page reads the folder
back (:func:`read_preview`) once the job has finished and shows it; "Save repair" stores exactly what
was read (:func:`save_preview`), as ``people repair --from-preview FOLDER`` does. Instant previews
(``fill``, ``manual``) are made in place by the same :func:`make_preview`.
"""

from __future__ import annotations

import io
import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image as PILImage
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from workbench.files import write_atomically
from workbench.progress import StageFn, StopFn, check_stop, report
from workbench.repair import (
    DEFAULT_CLOTH,
    DEFAULT_INPAINT,
    DEFAULT_SAM,
    InpaintSettings,
    RepairError,
    RepairInfo,
    Segment,
    box_text,
    check_repair,
    image_photo,
    preview_erase,
    preview_label,
    preview_picture,
    save_erase,
    save_label,
)
from workbench.repair_models import Box, load_inpaint, load_sam
from workbench.settings import Settings

PREVIEW_JOB_KIND = "repair-preview"
MODEL_BACKED = ("inpaint", "sam", "cloth-segmenter")  # the erase methods and segmenters that load a model
META, EDITED, MASKS = "preview.json", "edited.png", "segments.npz"
KEEP_PREVIEWS = timedelta(days=1)  # preview folders older than this go when a new one is made
# The command line's name of each segmenter (``--segmenter``).
SEGMENTER_OPTION = {"sam": "sam", "cloth-segmenter": "cloth", "manual": "manual"}


class PreviewRequest(BaseModel):
    """One repair of one image to preview, as the page's form or the command line's options give it."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    image: str = Field(description="The image's file name, relative to the dataset's images folder.")
    box: tuple[int, int, int, int] = Field(description="x0, y0, x1, y1 around the unlabelled person, in pixels.")
    action: Literal["erase", "label"]
    method: str = Field("fill", description="erase: fill or inpaint.")
    source: str = Field("sam", description="label: sam, cloth-segmenter or manual.")
    category: str | None = Field(None, description="label: the segment's garment category.")
    model: str | None = Field(None, description="Registry name, hub id or path; None: the tool's default.")
    inpaint: InpaintSettings = Field(default_factory=InpaintSettings)
    device: str = "auto"

    @property
    def tool(self) -> str:
        """The erase method or the segmenter: what does the work."""
        return self.method if self.action == "erase" else self.source

    @property
    def needs_job(self) -> bool:
        """Whether the preview loads a model (slow on a CPU: a background job on the page)."""
        return self.tool in MODEL_BACKED

    @property
    def used_model(self) -> str | None:
        """The model the preview runs, as a repair records it (``None`` for fill and manual)."""
        defaults = {"inpaint": DEFAULT_INPAINT, "sam": DEFAULT_SAM, "cloth-segmenter": DEFAULT_CLOTH}
        return (self.model or defaults[self.tool]) if self.needs_job else None


@dataclass
class Preview:
    """A repair not stored yet: the erased photo, or the new garment masks with their categories."""

    request: PreviewRequest
    box: Box  # the request's box clipped to the image
    edited: PILImage.Image | None = None
    segments: list[Segment] = field(default_factory=list)

    def shown(self, session: Session) -> PILImage.Image:
        """What the page shows: the erased photo, or the masks over the photo; the box outlined."""
        if self.edited is not None:
            return preview_picture(self.edited, box=self.box)
        return preview_picture(image_photo(session, self.request.dataset, self.request.image), self.segments,
                               self.box)

    def summary(self) -> str:
        """"erased", or the segments' categories."""
        return "erased" if self.edited is not None else ", ".join(s.category for s in self.segments)


def make_preview(session: Session, request: PreviewRequest, *, stage: StageFn | None = None,
                 should_stop: StopFn | None = None) -> Preview:
    """The repair ``request`` asks for, made and not stored. Everything that needs no model is checked
    first (:class:`RepairError`); ``stage(what, unit)`` counts "loading the model", then the
    inpainting steps or "segmenting"; ``should_stop`` is checked between them and after each step."""
    box = check_repair(session, request.dataset, request.image, request.box, request.action,
                       method=request.method, source=request.source, category=request.category)
    tool = request.tool
    if tool in ("inpaint", "sam"):  # the cloth segmenter loads as it predicts
        loaded = stage("loading the model", "models") if stage else None
        report(loaded, 0, 1)
        (load_inpaint if tool == "inpaint" else load_sam)(request.used_model, request.device)
        report(loaded, 1, 1)
        check_stop(should_stop)
    if request.action == "erase":
        steps = stage("inpainting", "steps") if stage and tool == "inpaint" else None
        edited = preview_erase(session, request.dataset, request.image, request.box, request.method,
                               model=request.model, settings=request.inpaint, device=request.device,
                               progress=steps, should_stop=should_stop)
        return Preview(request, box, edited=edited)
    segmenting = stage("segmenting", "boxes") if stage and request.needs_job else None
    report(segmenting, 0, 1)
    segments = preview_label(session, request.dataset, request.image, request.box, request.source,
                             category=request.category, model=request.model, device=request.device)
    report(segmenting, 1, 1)
    return Preview(request, box, segments=segments)


def save_preview(session: Session, settings: Settings, preview: Preview, curator: str) -> RepairInfo:
    """Store the repair a preview showed, exactly as shown (the same pixels, the same masks)."""
    request = preview.request
    if request.action == "erase":
        options = request.inpaint.model_dump() if request.method == "inpaint" else {}
        return save_erase(session, settings, request.dataset, request.image, request.box, request.method, curator,
                          preview.edited, model=request.used_model, options=options)
    return save_label(session, request.dataset, request.image, request.box, request.source, curator,
                      preview.segments, model=request.used_model)


# -- files ------------------------------------------------------------------------------------------
def previews_dir(settings: Settings) -> Path:
    """Where the page's preview jobs write: ``<data_dir>/repairs/previews``."""
    return Path(settings.data_dir).resolve() / "repairs" / "previews"


def new_preview_folder(settings: Settings) -> Path:
    """A fresh folder name for one preview (not created); preview folders past :data:`KEEP_PREVIEWS` are removed."""
    root = previews_dir(settings)
    if root.is_dir():
        oldest = time.time() - KEEP_PREVIEWS.total_seconds()
        for old in root.iterdir():
            if old.is_dir() and old.stat().st_mtime < oldest:
                shutil.rmtree(old, ignore_errors=True)
    return root / uuid.uuid4().hex


def preview_argv(request: PreviewRequest, folder: Path) -> list[str]:
    """The ``python -m workbench`` arguments that write ``request``'s preview into ``folder`` (what a job runs)."""
    argv = ["people", "repair", "--dataset", request.dataset, "--image-id", request.image,
            "--box", box_text(request.box), "--preview-only", "--out", str(folder), "--device", request.device]
    if request.action == "erase":
        argv += ["--erase", "--method", request.method]
        defaults = InpaintSettings()
        for name, value in request.inpaint.model_dump().items():  # only what differs from the defaults
            if value != getattr(defaults, name):
                argv += [f"--{name.replace('_', '-')}", str(value)]
    else:
        argv += ["--label", "--segmenter", SEGMENTER_OPTION.get(request.source, request.source)]
    for flag, value in (("--category", request.category), ("--model", request.model)):
        if value is not None:
            argv += [flag, value]
    return argv


def write_preview(folder: Path, preview: Preview) -> Path:
    """Write the preview into ``folder`` (its ``preview.json`` last); returns the folder."""
    folder = Path(folder)
    meta = {"request": preview.request.model_dump(mode="json"), "box": list(preview.box),
            "model": preview.request.used_model, "categories": [s.category for s in preview.segments]}
    buffer = io.BytesIO()
    if preview.edited is not None:
        preview.edited.convert("RGB").save(buffer, format="PNG")
        write_atomically(folder / EDITED, buffer.getvalue())
    else:
        np.savez_compressed(buffer, **{f"mask{k}": s.mask.astype(bool) for k, s in enumerate(preview.segments)})
        write_atomically(folder / MASKS, buffer.getvalue())
    write_atomically(folder / META, json.dumps(meta, indent=2).encode())
    return folder


def read_preview(folder: Path) -> Preview:
    """The preview written into ``folder``; :class:`RepairError` naming the folder when there is none."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / META).read_text())
        request = PreviewRequest.model_validate(meta["request"])
        box = tuple(int(v) for v in meta["box"])
        if request.action == "erase":
            with PILImage.open(folder / EDITED) as edited:
                return Preview(request, box, edited=edited.convert("RGB"))  # type: ignore[arg-type]
        with np.load(folder / MASKS) as masks:
            segments = [Segment(name, masks[f"mask{k}"].astype(bool)) for k, name in enumerate(meta["categories"])]
        return Preview(request, box, segments=segments)  # type: ignore[arg-type]
    except (OSError, ValueError, KeyError, ValidationError) as exc:
        raise RepairError(f"no readable repair preview in {folder} ({type(exc).__name__}: {exc}); "
                          "preview the repair again") from None
