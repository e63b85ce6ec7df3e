"""Image captions from BLIP (and BLIP-2, GIT) through transformers, a whole batch per call.

The same loader and batched ``generate`` serve the CLIP Interrogator's caption step.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from PIL import Image as PILImage

from workbench.captions.base import Captioner, CaptionerError, CaptionResult, load_model, resolve_device

# Short names the CLIP Interrogator's settings use, with the package's own names too.
CAPTION_MODEL_ALIASES = {
    "blip-base": "Salesforce/blip-image-captioning-base",
    "blip-large": "Salesforce/blip-image-captioning-large",
    "blip2": "Salesforce/blip2-opt-2.7b",
    "blip2-2.7b": "Salesforce/blip2-opt-2.7b",
    "blip2-flan-t5-xl": "Salesforce/blip2-flan-t5-xl",
    "git": "microsoft/git-large-coco",
    "git-large-coco": "microsoft/git-large-coco",
}


class BlipSettings(BaseModel):
    """A BLIP-family caption model and how it generates."""

    model: str = Field("Salesforce/blip-image-captioning-large", description="Hub id, local folder or alias (blip-base ...).")
    prefix: str | None = Field(None, description="Conditional captioning: the text the caption continues.")
    max_new_tokens: int = Field(30, ge=1)
    num_beams: int = Field(1, ge=1)
    device: str = "auto"
    fp16: bool = Field(True, description="Half precision on a GPU.")


class CaptionModel:
    """A loaded caption model with its processor, kind (blip, blip-2, git), device and dtype."""

    def __init__(self, model: Any, processor: Any, kind: str, device: str, dtype: Any):
        self.model, self.processor, self.kind, self.device, self.dtype = model, processor, kind, device, dtype

    def to(self, device: str) -> None:
        """Move the model (low-VRAM offloading)."""
        self.model.to(device)
        self.device = device

    def generate(self, images: list[PILImage.Image], prefix: str | None = None, max_new_tokens: int = 30,
                 num_beams: int = 1) -> list[str]:
        """One caption per image, generated for the whole batch at once."""
        import torch

        if prefix and self.kind == "git":
            raise CaptionerError("a conditional prefix is not supported for GIT caption models; drop --prefix")
        kwargs: dict[str, Any] = {"images": images, "return_tensors": "pt"}
        if prefix:
            kwargs["text"] = [prefix] * len(images)
        inputs = self.processor(**kwargs)
        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items() if hasattr(v, "to")}
        with torch.inference_mode():
            tokens = self.model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams)
        return [text.strip() for text in self.processor.batch_decode(tokens, skip_special_tokens=True)]


def caption_model_source(name: str) -> str:
    """An alias (``blip-large``) as its hub id; hub ids and folders as they are."""
    return CAPTION_MODEL_ALIASES.get(name, name)


def caption_model_location(name: str) -> str:
    """What loads for ``name``: a registry name, alias or hub id as its local copy when there is one."""
    from workbench.models import resolve

    local = resolve(name, "caption")
    return local if local != name else resolve(caption_model_source(name), "caption")


def load_caption_model(name: str, device: str = "auto", fp16: bool = True) -> CaptionModel:
    """A BLIP / BLIP-2 / GIT caption model from an alias, hub id or folder (cached per process)."""
    source = caption_model_location(name)
    device = resolve_device(device)

    def loader() -> CaptionModel:
        import torch
        from transformers import (AutoConfig, AutoModelForCausalLM, AutoProcessor, Blip2ForConditionalGeneration,
                                  BlipForConditionalGeneration)

        model_type = AutoConfig.from_pretrained(source).model_type
        dtype = torch.float16 if fp16 and device.startswith("cuda") else torch.float32
        if model_type == "blip":
            model, kind = BlipForConditionalGeneration.from_pretrained(source, dtype=dtype), "blip"
        elif model_type == "blip-2":
            model, kind = Blip2ForConditionalGeneration.from_pretrained(source, dtype=dtype), "blip2"
        elif model_type == "git":
            # GIT is unstable in half precision (the package loads it in float32 too).
            dtype = torch.float32
            model, kind = AutoModelForCausalLM.from_pretrained(source, dtype=dtype), "git"
        else:
            raise CaptionerError(f"{source}: model type {model_type!r} is not a caption model "
                                 "(use a BLIP, BLIP-2 or GIT model)")
        processor = AutoProcessor.from_pretrained(source)
        model.eval().to(device)
        return CaptionModel(model, processor, kind, device, dtype)

    return load_model("caption", source, loader, device)


class BlipCaptioner(Captioner):
    """Batched BLIP captions (source ``blip``), optionally continuing a prefix."""

    def __init__(self, settings: BlipSettings | None = None, batch_size: int = 8):
        self.settings = settings or BlipSettings()
        self.model = caption_model_source(self.settings.model)
        self.sources = ["blip"]
        self.batch_size = batch_size
        self._loaded: CaptionModel | None = None

    def settings_for(self, source: str) -> dict[str, Any]:
        """Everything but the device, which does not change the text."""
        return self.settings.model_dump(exclude={"device", "model"})

    def load(self) -> CaptionModel:
        """The caption model, loaded on first use."""
        if self._loaded is None:
            self._loaded = load_caption_model(self.settings.model, self.settings.device, self.settings.fp16)
        return self._loaded

    def caption_batch(self, images: list[PILImage.Image]) -> dict[str, list[CaptionResult]]:
        """One BLIP caption per image."""
        texts = self.load().generate(images, self.settings.prefix, self.settings.max_new_tokens, self.settings.num_beams)
        return {"blip": [CaptionResult(text) for text in texts]}
