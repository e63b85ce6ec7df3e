"""The tools of a people repair, on one photo and one box: erase (inpaint or fill) and segment (SAM, cloth).

- :func:`erase_fill`: OpenCV's Telea inpainting of the box; no model, instant, a smooth smear;
- :func:`erase_inpaint`: a diffusers ``StableDiffusionInpaintPipeline`` (model registry kind
  ``inpaint``, default ``sd15-inpaint``) repaints the box from a prompt;
- :func:`segment_sam`: ``transformers``' ``SamModel`` prompted with the box (kind ``sam``, default
  ``sam-vit-base``) gives the person's mask;
- :func:`segment_cloth`: the project's cloth segmenter (:func:`workbench.segment.predict.predict_mask`)
  on the box's crop gives upper / lower / full-body garments.

Every result stays inside the box: pixels and masks outside it are never changed. Models are
resolved through the registry and loaded through :func:`workbench.models.loading`, so a model
that is not on this machine fails in seconds offline with the registry's fix; loaded models are
kept per source and device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from workbench.progress import ProgressFn, StopFn, check_stop, report

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive

DEFAULT_SAM = "sam-vit-base"
DEFAULT_INPAINT = "sd15-inpaint"
DEFAULT_CLOTH = "u2net-cloth-seg"  # the name a cloth-segmenter repair records when no model was given
FILL_RADIUS = 5
_loaded: dict[tuple[str, str, str], Any] = {}


class RepairError(ValueError):
    """A repair that cannot be done as asked; the message names the thing, the place and the fix."""


class InpaintSettings(BaseModel):
    """How the inpainting pipeline repaints the erased box."""

    prompt: str = Field("empty background, nobody", description="What to paint where the person was.")
    negative_prompt: str = Field("person, people, human, body, face", description="What not to paint.")
    steps: int = Field(25, ge=1, le=200)
    guidance: float = Field(7.5, ge=0.0, le=30.0)
    seed: int = Field(0, ge=0)
    resolution: int = Field(512, ge=8, le=2048, description="Long side the photo is inpainted at (then scaled back).")
    grow: int = Field(8, ge=0, le=128, description="Pixels the box is grown by for the pipeline's mask.")


def box_mask(height: int, width: int, box: Box, grow: int = 0) -> np.ndarray:
    """``(height, width)`` bool mask of the box (grown by ``grow`` pixels, clipped to the image)."""
    x0, y0, x1, y1 = box
    mask = np.zeros((height, width), dtype=bool)
    mask[max(0, y0 - grow):min(height, y1 + grow), max(0, x0 - grow):min(width, x1 + grow)] = True
    return mask


def _device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _cached(kind: str, ref: str, device: str, load) -> Any:
    """The ``kind`` model ``ref`` on ``device``: resolved through the registry, loaded once (a model
    missing offline fails in :func:`~workbench.models.loading` before torch is imported)."""
    from workbench.models import ModelNotReady, loading, resolve

    source = resolve(ref, kind)
    key = (kind, source, device)
    if key not in _loaded:
        try:
            with loading(kind, source, name=ref if ref != source else None) as how:
                _loaded[key] = load(source, how.kwargs)
        except ModelNotReady as exc:
            raise RepairError(str(exc)) from exc
    return _loaded[key]


def load_sam(model: str = DEFAULT_SAM, device: str = "auto") -> tuple[Any, Any]:
    """``(SamModel, SamProcessor)`` of a registry name, hub id or folder."""

    def load(source: str, kwargs: dict[str, Any]) -> tuple[Any, Any]:
        from transformers import SamModel, SamProcessor

        return (SamModel.from_pretrained(source, **kwargs).to(_device(device)).eval(),
                SamProcessor.from_pretrained(source, **kwargs))

    return _cached("sam", model, device, load)


def load_inpaint(model: str = DEFAULT_INPAINT, device: str = "auto") -> Any:
    """A ``StableDiffusionInpaintPipeline`` of a registry name, hub id, diffusers folder or single file."""
    from pathlib import Path

    def load(source: str, kwargs: dict[str, Any]) -> Any:
        import torch
        from diffusers import StableDiffusionInpaintPipeline

        on = _device(device)
        dtype = torch.float16 if on.startswith("cuda") else torch.float32
        if Path(source).is_file():
            pipe = StableDiffusionInpaintPipeline.from_single_file(source, dtype=dtype, safety_checker=None)
        else:
            pipe = StableDiffusionInpaintPipeline.from_pretrained(source, dtype=dtype, safety_checker=None,
                                                                  requires_safety_checker=False, **kwargs)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(on)

    return _cached("inpaint", model, device, load)


def clear_models() -> None:
    """Forget every loaded SAM and inpainting pipeline (tests, freeing memory)."""
    _loaded.clear()


# -- erase --------------------------------------------------------------------------------------
def erase_fill(photo: Image.Image, box: Box, radius: int = FILL_RADIUS) -> Image.Image:
    """The photo with the box filled from its surroundings (OpenCV Telea inpainting); no model."""
    import cv2

    rgb = np.asarray(photo.convert("RGB"))
    mask = box_mask(rgb.shape[0], rgb.shape[1], box).astype(np.uint8) * 255
    filled = cv2.inpaint(np.ascontiguousarray(rgb), mask, radius, cv2.INPAINT_TELEA)
    return Image.fromarray(np.where(mask[..., None] > 0, filled, rgb))


def erase_inpaint(photo: Image.Image, box: Box, model: str = DEFAULT_INPAINT,
                  settings: InpaintSettings | None = None, device: str = "auto", *,
                  progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> Image.Image:
    """The photo with the box repainted by an inpainting pipeline; pixels outside the box unchanged.

    ``progress(step, steps)`` after each denoising step; ``should_stop`` is checked there too
    (:class:`~workbench.progress.Cancelled`)."""
    settings = settings or InpaintSettings()
    pipe = load_inpaint(model, device)
    import torch

    def step_done(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        report(progress, step + 1, settings.steps)
        check_stop(should_stop)
        return tensors

    photo = photo.convert("RGB")
    width, height = photo.size
    scale = settings.resolution / max(width, height)
    size = (max(8, round(width * scale / 8) * 8), max(8, round(height * scale / 8) * 8))
    grown = Image.fromarray(box_mask(height, width, box, settings.grow).astype(np.uint8) * 255)
    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    painted = pipe(prompt=settings.prompt, negative_prompt=settings.negative_prompt or None,
                   image=photo.resize(size, Image.Resampling.LANCZOS),
                   mask_image=grown.resize(size, Image.Resampling.NEAREST), height=size[1], width=size[0],
                   num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                   generator=generator, callback_on_step_end=step_done).images[0]
    painted = painted.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    inside = Image.fromarray(box_mask(height, width, box).astype(np.uint8) * 255)
    out = photo.copy()
    out.paste(painted, (0, 0), inside)
    return out


# -- segment ------------------------------------------------------------------------------------
def segment_sam(photo: Image.Image, box: Box, model: str = DEFAULT_SAM, device: str = "auto") -> np.ndarray:
    """The ``(height, width)`` bool mask SAM gives for the box prompt, kept inside the box."""
    sam, processor = load_sam(model, device)
    import torch

    photo = photo.convert("RGB")
    inputs = processor(images=photo, input_boxes=[[[float(v) for v in box]]], return_tensors="pt")
    inputs = {k: v.to(sam.device) if hasattr(v, "to") else v for k, v in inputs.items()}
    with torch.inference_mode():
        outputs = sam(**inputs, multimask_output=False)
    masks = processor.image_processor.post_process_masks(outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(),
                                                         inputs["reshaped_input_sizes"].cpu())
    mask = masks[0][0, 0].numpy().astype(bool)
    return mask & box_mask(photo.height, photo.width, box)


def segment_cloth(photo: Image.Image, box: Box, model: str | None = None) -> dict[str, np.ndarray]:
    """Garment masks of the box's crop by the cloth segmenter: ``{cloth-seg class name: bool mask}``
    at the photo's size (classes it found only; background left out)."""
    from workbench.segment.loaders import SegmentError
    from workbench.segment.predict import predict_mask, scheme_class_names

    x0, y0, x1, y1 = box
    try:
        label_map = predict_mask(photo.convert("RGB").crop(box), "cloth-seg", model)
    except SegmentError as exc:
        raise RepairError(str(exc)) from exc
    found: dict[str, np.ndarray] = {}
    for name, value in scheme_class_names("cloth-seg").items():
        if value == 0 or not (label_map == value).any():
            continue
        full = np.zeros((photo.height, photo.width), dtype=bool)
        full[y0:y1, x0:x1] = label_map == value
        found[name] = full
    return found
