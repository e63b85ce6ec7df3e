"""Grounding DINO (open-set detection, transformers) asked for "person".

Weights come from a hub id or a local folder holding what ``save_pretrained`` writes (the
model and its processor). The same model grounds any phrase, so :meth:`GroundingDinoDetector.ground`
also serves the caption checks ("is there a red dress?").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from workbench.people.detectors import Detector, DetectorError, ImageSample, Proposal, clip_box

_loaded: dict[tuple[str, str], tuple[Any, Any]] = {}


class GroundingDinoSettings(BaseModel):
    """Which Grounding DINO, what to ask it, and its cut-offs."""

    model: str = Field("IDEA-Research/grounding-dino-tiny", description="Hub id, local folder or model registry name.")
    query: str = Field("person", description="The text to ground; one phrase.")
    box_threshold: float = Field(0.35, ge=0, le=1, description="Keep boxes at least this confident.")
    text_threshold: float = Field(0.25, ge=0, le=1, description="Keep text tokens at least this confident.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1 ...")
    batch_size: int = Field(4, ge=1, description="Images per forward pass.")


def _device(name: str) -> str:
    import torch

    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def _prompt(phrases: Sequence[str]) -> str:
    # Grounding DINO expects lower-case phrases each ended by a full stop.
    return " ".join(p.strip().lower().rstrip(".") + "." for p in phrases if p.strip())


class GroundingDinoDetector(Detector):
    """People from Grounding DINO; pass ``model``/``processor`` to use ones already built."""

    name = "grounding-dino"

    def __init__(self, settings: GroundingDinoSettings | None = None, *, model: Any = None,
                 processor: Any = None) -> None:
        self.settings = settings or GroundingDinoSettings()
        self._model, self._processor = model, processor

    def runtime_fields(self) -> set[str]:
        """Device and batch size do not change what is found."""
        return {"device", "batch_size"}

    def load(self) -> tuple[Any, Any]:
        """The model and processor (loaded once per model and device in this process)."""
        if self._model is not None and self._processor is not None:
            return self._model, self._processor
        from workbench.models import ModelNotReady, loading, resolve

        device = _device(self.settings.device)
        source = resolve(self.settings.model, "grounding-dino")
        key = (source, device)
        if key not in _loaded:
            try:
                with loading("grounding-dino", source) as load:
                    from transformers import AutoProcessor, GroundingDinoForObjectDetection

                    processor = AutoProcessor.from_pretrained(source, **load.kwargs)
                    model = GroundingDinoForObjectDetection.from_pretrained(source, **load.kwargs)
            except ModelNotReady as exc:
                raise DetectorError(str(exc)) from exc
            _loaded[key] = (model.to(device).eval(), processor)
        self._model, self._processor = _loaded[key]
        return self._model, self._processor

    def ground(self, images: Sequence[Any], phrases: Sequence[str]) -> list[list[dict[str, Any]]]:
        """For each RGB image, ``{"box": (x, y, w, h), "score", "label"}`` of every grounded phrase."""
        import torch
        from PIL import Image as PILImage

        model, processor = self.load()
        prompt = _prompt(phrases)
        if not prompt:
            raise DetectorError("Grounding DINO needs a phrase to ground (e.g. 'person')")
        results: list[list[dict[str, Any]]] = []
        step = self.settings.batch_size
        for start in range(0, len(images), step):
            chunk = [PILImage.fromarray(a) if not isinstance(a, PILImage.Image) else a
                     for a in images[start:start + step]]
            inputs = processor(images=chunk, text=[prompt] * len(chunk), return_tensors="pt", padding=True)
            inputs = inputs.to(next(model.parameters()).device)
            with torch.no_grad():
                outputs = model(**inputs)
            sizes = [(img.height, img.width) for img in chunk]
            found = processor.post_process_grounded_object_detection(
                outputs, inputs["input_ids"], threshold=self.settings.box_threshold,
                text_threshold=self.settings.text_threshold, target_sizes=sizes)
            for (height, width), res in zip(sizes, found):
                labels = res["text_labels"] if "text_labels" in res else res.get("labels", [])
                items = []
                for box, score, label in zip(res["boxes"].tolist(), res["scores"].tolist(), labels):
                    x0, y0, x1, y1 = box
                    items.append({"box": clip_box((x0, y0, x1 - x0, y1 - y0), width, height),
                                  "score": float(score), "label": str(label)})
                results.append(items)
        return results

    def detect(self, samples: Sequence[ImageSample]) -> list[list[Proposal]]:
        """Boxes grounded to the query ("person") in each image."""
        found = self.ground([s.pixels() for s in samples], [self.settings.query])
        return [[Proposal(f["box"], f["score"], "person", details={"label": f["label"]})
                 for f in per_image if f["box"][2] > 0 and f["box"][3] > 0]
                for per_image in found]
