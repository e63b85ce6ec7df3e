"""Model of controllability evaluations: how well a ControlNet checkpoint obeys its masks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from db.models import Base, utcnow


class Evaluation(Base):
    """One evaluation of one ControlNet checkpoint on its export's validation masks.

    ``miou`` / ``iou`` (per class name) score the segmenter's reading of the generated images
    against the masks that conditioned them; ``ceiling_miou`` / ``ceiling`` are the same
    segmenter against the real validation photos (the best a perfect ControlNet could score).
    ``run_dir`` is the training run's output folder, so a run's checkpoints line up by step.
    ``worst_cases`` lists the lowest-scoring images with their mask, generated image and
    segmentation files (under ``data_dir/evaluations/``); ``settings`` every generation setting.
    """

    __tablename__ = "evaluation"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    run_dir: Mapped[str | None] = mapped_column(Text, nullable=True, index=True)
    controlnet: Mapped[str] = mapped_column(Text)
    checkpoint_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    base_model: Mapped[str] = mapped_column(Text)
    export_manifest_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    scheme: Mapped[str | None] = mapped_column(String(100), nullable=True)
    segmenter: Mapped[str] = mapped_column(Text)
    split: Mapped[str] = mapped_column(String(40))
    masks: Mapped[int] = mapped_column(Integer)
    images: Mapped[int] = mapped_column(Integer)
    miou: Mapped[float | None] = mapped_column(Float, nullable=True)
    miou_foreground: Mapped[float | None] = mapped_column(Float, nullable=True)
    pixel_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    iou: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    clip_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    ceiling_miou: Mapped[float | None] = mapped_column(Float, nullable=True)
    ceiling: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    worst_cases: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    notes: Mapped[list[str]] = mapped_column(JSON, default=list)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
