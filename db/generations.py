"""Model of generated images: each one saved with everything that made it (its provenance)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from db.models import Base, utcnow


class Generation(Base):
    """One generated image and its provenance.

    ``controlnet`` is the ControlNet folder that conditioned it (a training run's
    ``checkpoint-N/controlnet`` or final folder, or any path), ``checkpoint_step`` its step where
    known, ``export_manifest_sha256`` the checksum of the manifest of the export it was trained
    on. ``mask_sha256`` is the checksum of the class-id mask that conditioned it (after edits),
    so the same mask + prompt + seed can be lined up across checkpoints. ``settings`` holds every
    generation setting (steps, guidance, scales, scheduler, resolution, pose, dtype ...) and
    ``mask_source`` where the mask came from (dataset image, upload, predicted) and its edits.
    """

    __tablename__ = "generation"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    run: Mapped[str] = mapped_column(String(40), index=True)
    path: Mapped[str] = mapped_column(Text)
    image_sha256: Mapped[str] = mapped_column(String(64))
    mask_path: Mapped[str] = mapped_column(Text)
    mask_sha256: Mapped[str] = mapped_column(String(64), index=True)
    base_model: Mapped[str] = mapped_column(Text)
    controlnet: Mapped[str] = mapped_column(Text)
    checkpoint_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    export_manifest_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    scheme: Mapped[str | None] = mapped_column(String(100), nullable=True)
    seed: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    mask_source: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
