"""torchvision's Mask R-CNN / Keypoint R-CNN with COCO weights: person instances only.

Weights: a local state-dict file (``weights_path``: ``.pth``/``.pt`` or ``.safetensors``), or
torchvision's own COCO weights from its cache (``$TORCH_HOME/hub/checkpoints``; filled once by
building the model with ``weights="DEFAULT"`` on a machine with internet, or here when
``download`` is on). Mask R-CNN gives each person a mask, so coverage is measured on the
silhouette; Keypoint R-CNN gives boxes and keypoints (kept in the proposal's details).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from workbench.people.detectors import Detector, DetectorError, ImageSample, Proposal, clip_box

COCO_PERSON = 1
_WEIGHTS = {
    "maskrcnn_resnet50_fpn": "MaskRCNN_ResNet50_FPN_Weights",
    "maskrcnn_resnet50_fpn_v2": "MaskRCNN_ResNet50_FPN_V2_Weights",
    "keypointrcnn_resnet50_fpn": "KeypointRCNN_ResNet50_FPN_Weights",
}
ARCHITECTURES = tuple(_WEIGHTS)
_loaded: dict[tuple[str, str, str], Any] = {}


class TorchvisionSettings(BaseModel):
    """Which R-CNN, where its weights are, and its cut-offs."""

    architecture: Literal["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "keypointrcnn_resnet50_fpn"] = Field(
        "maskrcnn_resnet50_fpn_v2", description="torchvision detection model builder.")
    weights_path: str | None = Field(None, description="Local state dict or model registry name; default: "
                                     "torchvision's COCO weights from its cache.")
    download: bool = Field(False, description="Let torchvision download its COCO weights when not cached.")
    score_threshold: float = Field(0.5, ge=0, le=1, description="Keep persons at least this confident.")
    mask_threshold: float = Field(0.5, ge=0, le=1, description="Mask probability that counts as the person.")
    device: str = Field("auto", description="auto, cpu, cuda ...")
    batch_size: int = Field(2, ge=1, description="Images per forward pass.")


class TorchvisionDetector(Detector):
    """COCO persons from a torchvision R-CNN; pass ``model`` to use one already built."""

    name = "torchvision"

    def __init__(self, settings: TorchvisionSettings | None = None, *, model: Any = None) -> None:
        self.settings = settings or TorchvisionSettings()
        self._model = model

    def runtime_fields(self) -> set[str]:
        """Device, batch size and the download switch do not change what is found."""
        return {"device", "batch_size", "download"}

    def load(self) -> Any:
        """The model in eval mode (loaded once per architecture, weights and device)."""
        if self._model is not None:
            return self._model
        import torch

        s = self.settings
        device = s.device if s.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        key = (s.architecture, s.weights_path or "coco", device)
        if key not in _loaded:
            _loaded[key] = self._build().to(device).eval()
        self._model = _loaded[key]
        return self._model

    def _build(self) -> Any:
        import torch
        from torchvision.models import detection

        from workbench.models import fix_text, is_tiny, resolve

        s = self.settings
        builder = getattr(detection, s.architecture)
        if s.weights_path:
            path = Path(resolve(s.weights_path, "torchvision")).expanduser()
            if path.is_dir() and is_tiny(path):
                from workbench.tiny.detectors import load_tiny_rcnn

                return load_tiny_rcnn(path)
            if not path.is_file():
                raise DetectorError(f"torchvision weights {s.weights_path!r}: {path} does not exist. Fix: give the "
                                    f"path of a {s.architecture} state dict (.pth or .safetensors) or a registry "
                                    f"name; {fix_text('torchvision', s.architecture)}")
            model = builder(weights=None, weights_backbone=None)
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
            try:
                model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
            except RuntimeError as exc:
                raise DetectorError(f"{path} is not a {s.architecture} state dict: {str(exc)[:300]}") from exc
            return model
        weights = getattr(detection, _WEIGHTS[s.architecture]).DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cached.is_file() and not s.download:
            raise DetectorError(
                f"torchvision's COCO weights for {s.architecture} are not in its cache ({cached}). Fix: "
                f"{fix_text('torchvision', s.architecture)}; or allow the download (download=True)")
        return builder(weights=weights)

    def detect(self, samples: Sequence[ImageSample]) -> list[list[Proposal]]:
        """Person instances (box, mask or keypoints) in each image."""
        import torch

        model = self.load()
        device = next(model.parameters()).device
        s = self.settings
        results: list[list[Proposal]] = []
        for start in range(0, len(samples), s.batch_size):
            chunk = samples[start:start + s.batch_size]
            tensors = [torch.from_numpy(x.pixels().copy()).permute(2, 0, 1).float().div(255).to(device)
                       for x in chunk]
            with torch.no_grad():
                outputs = model(tensors)
            for sample, out in zip(chunk, outputs):
                results.append(self._persons(sample, out))
        return results

    def _persons(self, sample: ImageSample, out: dict[str, Any]) -> list[Proposal]:
        s = self.settings
        keep = (out["labels"] == COCO_PERSON) & (out["scores"] >= s.score_threshold)
        proposals = []
        masks = out.get("masks")
        keypoints = out.get("keypoints")
        for i in keep.nonzero().flatten().tolist():
            x0, y0, x1, y1 = out["boxes"][i].tolist()
            mask = None
            if masks is not None:
                mask = (masks[i, 0] >= s.mask_threshold).cpu().numpy()
            details: dict[str, Any] = {}
            if keypoints is not None:
                details["keypoints"] = [[round(v, 1) for v in kp] for kp in keypoints[i].tolist()]
            proposals.append(Proposal(clip_box((x0, y0, x1 - x0, y1 - y0), sample.width, sample.height),
                                      float(out["scores"][i]), "person", mask=mask, details=details))
        return [p for p in proposals if p.box[2] > 0 and p.box[3] > 0]
