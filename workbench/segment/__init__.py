"""Cloth segmenters: SegFormer and the public cloth U2NET, predicted masks in the store, IoU metrics.

- :mod:`~workbench.segment.predict`: ``predict_mask`` and the segmenters; :mod:`~workbench.segment.loaders`
  loads their models; :mod:`~workbench.segment.tiny` builds tiny random ones;
- :mod:`~workbench.segment.store`: predictions of a dataset (kept apart from real annotations) or a folder;
- :mod:`~workbench.segment.metrics`: per-class IoU and mIoU; :mod:`~workbench.segment.scoring`: a
  segmenter against real masks; :mod:`~workbench.segment.jobs`: training and prediction as jobs.

Importing this package is cheap (the EDA page reads its facets); models load on first use.
"""

from __future__ import annotations

from typing import Any


def eda_facets() -> list[Any]:
    """The EDA facets of predicted masks: which masks an image has, and which source predicted it."""
    from workbench.eda import ImageFacet
    from workbench.segment.store import mask_kind, predicted_by

    return [
        ImageFacet("masks", "Masks (real / predicted)", mask_kind, missing="none"),
        ImageFacet("predicted_by", "Predicted masks from", predicted_by, missing="not predicted"),
    ]
