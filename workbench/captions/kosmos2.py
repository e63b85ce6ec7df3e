"""Kosmos-2 grounded captions through transformers: the caption plus phrases with boxes, and the
check of garment phrases against the image's garment masks.

Kosmos-2 writes ``<phrase> a red dress</phrase><object><patch_index_0044><patch_index_0863></object>``:
two indices of a 32x32 grid give the top-left and bottom-right patches of the phrase's box.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field
from PIL import Image as PILImage

from workbench.captions.base import Captioner, CaptionResult, Phrase, load_model, resolve_device
from workbench.captions.dataset_prompts import Garment


class Kosmos2Settings(BaseModel):
    """A Kosmos-2 model, its prompt, and how strictly boxes must meet the garment masks."""

    model: str = Field("microsoft/kosmos-2-patch14-224", description="Hub id, local folder or model registry name.")
    prompt: str = Field("<grounding>An image of", description="Kosmos-2's grounding prompt.")
    max_new_tokens: int = Field(64, ge=1)
    num_beams: int = Field(1, ge=1)
    device: str = "auto"
    min_overlap: float = Field(0.3, ge=0, le=1, description="Box IoU under which a garment phrase disagrees with its mask.")


def parse_grounded(text: str, width: int, height: int, patches_per_side: int = 32) -> tuple[str, list[Phrase]]:
    """The clean caption and its phrases (boxes in pixels of a ``width`` x ``height`` image) from
    Kosmos-2's decoded output (anything up to ``</image>`` is dropped)."""
    from transformers.models.kosmos2.processing_kosmos2 import clean_text_and_extract_entities_with_bboxes

    text = text.split("</image>")[-1]
    caption, entities = clean_text_and_extract_entities_with_bboxes(text, num_patches_per_side=patches_per_side)
    phrases = []
    for name, (start, end), boxes in entities:
        for x0, y0, x1, y1 in boxes:
            phrases.append(Phrase(name, start, end, (x0 * width, y0 * height, x1 * width, y1 * height)))
    return caption, phrases


class Kosmos2Captioner(Captioner):
    """Batched Kosmos-2 grounded captions (source ``kosmos2``)."""

    def __init__(self, settings: Kosmos2Settings | None = None, batch_size: int = 8):
        self.settings = settings or Kosmos2Settings()
        self.model = self.settings.model
        self.sources = ["kosmos2"]
        self.batch_size = batch_size

    def settings_for(self, source: str) -> dict[str, Any]:
        """What shapes the text (not the device, not the overlap threshold)."""
        return self.settings.model_dump(exclude={"device", "model", "min_overlap"})

    def load(self) -> tuple[Any, Any, str]:
        """``(model, processor, device)``, loaded once per process."""
        from workbench.models import resolve

        device = resolve_device(self.settings.device)
        source = resolve(self.settings.model, "kosmos2")

        def loader():
            from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

            model = Kosmos2ForConditionalGeneration.from_pretrained(source).eval().to(device)
            return model, AutoProcessor.from_pretrained(source), device

        return load_model("kosmos2", source, loader, device)

    def caption_batch(self, images: list[PILImage.Image]) -> dict[str, list[CaptionResult]]:
        """Caption and grounded phrases of every image, one ``generate`` call."""
        import torch

        model, processor, device = self.load()
        inputs = processor(text=[self.settings.prompt] * len(images), images=images, return_tensors="pt")
        with torch.inference_mode():
            generated = model.generate(
                pixel_values=inputs["pixel_values"].to(device), input_ids=inputs["input_ids"].to(device),
                attention_mask=inputs["attention_mask"].to(device), image_embeds=None,
                image_embeds_position_mask=inputs["image_embeds_position_mask"].to(device),
                max_new_tokens=self.settings.max_new_tokens, num_beams=self.settings.num_beams)
        texts = processor.batch_decode(generated, skip_special_tokens=True)
        side = int(round(getattr(processor, "num_patch_index_tokens", 1024) ** 0.5))
        results = []
        for image, raw in zip(images, texts):
            caption, phrases = parse_grounded(raw, image.width, image.height, side)
            results.append(CaptionResult(caption, phrases, extra={"raw": raw.split("</image>")[-1].strip()}))
        return {"kosmos2": results}


@dataclass
class PhraseCheck:
    """A phrase checked against the garment masks: the garment it names, the best box overlap
    (IoU with that garment's mask box), whether they agree, and why not."""

    phrase: Phrase
    garment: str | None
    overlap: float | None
    agrees: bool | None
    note: str


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def garment_names(garments_vocabulary: list[str]) -> dict[str, str]:
    """``{lower-case alternative: category name}`` for category names like "top, t-shirt, sweatshirt"."""
    names: dict[str, str] = {}
    for category in garments_vocabulary:
        for part in category.split(","):
            if part.strip():
                names[part.strip().lower()] = category
    return names


def named_garment(phrase: str, names: dict[str, str]) -> str | None:
    """The category a phrase names ("a red dress" -> "dress"; plurals count), or ``None``."""
    words = re.findall(r"[a-z][a-z\-]*", phrase.lower())
    text = " ".join(words)
    for alternative in sorted(names, key=len, reverse=True):
        for form in (alternative, alternative + "s", alternative + "es"):
            if re.search(rf"(?<![a-z\-]){re.escape(form)}(?![a-z\-])", text):
                return names[alternative]
    return None


def check_phrases(phrases: list[Phrase], garments: list[Garment], categories: list[str],
                  min_overlap: float = 0.3) -> list[PhraseCheck]:
    """Each phrase against the image's garment masks: a phrase naming a garment agrees when a mask
    of that garment has a box overlapping the phrase's box by at least ``min_overlap`` (IoU)."""
    names = garment_names(categories)
    checks = []
    for phrase in phrases:
        category = named_garment(phrase.text, names)
        if category is None:
            checks.append(PhraseCheck(phrase, None, None, None, ""))
            continue
        boxes = [(g.box[0], g.box[1], g.box[0] + g.box[2], g.box[1] + g.box[3]) for g in garments if g.category == category]
        if not boxes:
            checks.append(PhraseCheck(phrase, category, None, False, f"no {category!r} mask in this image"))
            continue
        best = max(_iou(phrase.box, box) for box in boxes)
        agrees = best >= min_overlap
        note = "" if agrees else f"box overlaps the {category!r} mask by IoU {best:.2f} (< {min_overlap:g})"
        checks.append(PhraseCheck(phrase, category, best, agrees, note))
    return checks
