"""Models of predicted masks: where each came from, kept apart from the dataset's real annotations.

Predicted masks live in their own tables, so every query of ``annotation`` (EDA, export,
rendering, people flagging) keeps seeing the dataset's real masks only. A
:class:`PredictionSource` is one segmenter (model, checkpoint, scheme) run over a dataset; its
:class:`PredictedAnnotation` rows hold one mask per (image, predicted class), as COCO compressed
RLE like real annotations, in the scheme's class values. Every class present in the prediction
has a row, background included, so "this image was predicted" is a row's existence (resume).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from db.models import Base, MaskColumns, utcnow


class PredictionSource(Base):
    """One segmenter over one dataset: model, checkpoint, scheme (and its classes)."""

    __tablename__ = "prediction_source"
    __table_args__ = (UniqueConstraint("dataset_id", "model", "checkpoint", "scheme", "scheme_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(Text)
    checkpoint: Mapped[str] = mapped_column(Text, default="")
    scheme: Mapped[str] = mapped_column(String(200))
    scheme_version: Mapped[int] = mapped_column(Integer, default=0)
    legend: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PredictedAnnotation(MaskColumns, Base):
    """The mask of one predicted class in one image (``value`` in the source's scheme)."""

    __tablename__ = "predicted_annotation"
    __table_args__ = (UniqueConstraint("source_id", "image_id", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("prediction_source.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), index=True)
    value: Mapped[int] = mapped_column(Integer)
