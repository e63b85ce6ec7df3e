"""Score a segmenter against a dataset's real masks: per-class IoU and mIoU (its ceiling as a judge).

The truth is each image's real annotations rendered under the scheme (``workbench/masks.py``);
the prediction is the segmenter's label map in the same scheme, at the photo's size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import Engine

from db.engine import session_scope
from workbench.datasets import get_dataset
from workbench.progress import ProgressFn, report
from workbench.segment.loaders import SegmentError
from workbench.segment.metrics import ConfusionMatrix, iou_report
from workbench.segment.predict import Segmenter, to_scheme
from workbench.segment.store import scheme_target, images_to_predict


def score_segmenter(engine: Engine, dataset_name: str, segmenter: Segmenter, *, scheme: str | None = None,
                    split: str | None = None, limit: int | None = None, batch_size: int = 8,
                    progress: ProgressFn | None = None) -> dict[str, Any]:
    """mIoU, per-class IoU and pixel accuracy of ``segmenter`` on the dataset's images with real masks."""
    from workbench.formats.images import image_file
    from workbench.masks import render_image_mask

    scheme = scheme or segmenter.scheme.name
    with session_scope(engine) as session:
        dataset = get_dataset(session, dataset_name)
        version, target, legend = scheme_target(session, scheme, dataset.id)
        rows = images_to_predict(session, dataset, split, True, limit)
        root = Path(dataset.images_root)
    if not rows:
        raise SegmentError(f"dataset {dataset_name!r} has no image with real masks"
                           + (f" in split {split!r}" if split else "") + " to score against")
    values = sorted(int(v) for v in legend)
    confusion = ConfusionMatrix(max(values) + 1, ignore_index=None)
    report(progress, 0, len(rows))
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        photos = []
        for _id, file_name, _w, _h in batch:
            path = image_file(root, file_name)
            if path is None:
                raise SegmentError(f"dataset {dataset_name!r}: image {file_name!r} leads out of its images folder {root}")
            with PILImage.open(path) as photo:
                photos.append(photo.convert("RGB"))
        predictions = segmenter.predict(photos)
        with session_scope(engine) as session:
            for (image_id, _name, width, height), predicted in zip(batch, predictions):
                truth = render_image_mask(session, image_id, scheme, scheme_version=version).array
                predicted = to_scheme(predicted, segmenter.scheme, scheme, target)
                if predicted.shape != truth.shape:
                    predicted = PILImage.fromarray(predicted).resize((truth.shape[1], truth.shape[0]),
                                                                     PILImage.Resampling.NEAREST)
                confusion.add(truth, predicted)
        report(progress, start + len(batch), len(rows))
    result = iou_report(confusion, {int(k): v for k, v in legend.items()})
    result["iou"] = {legend[str(v)]: result["iou"][legend[str(v)]] for v in values}
    return {"dataset": dataset_name, "scheme": scheme, "scheme_version": version, "model": segmenter.source,
            "images": len(rows), **result}
