"""Models of the caption work: captions per image and source, their versions, Kosmos-2 phrases,
and mixing recipes.

A caption row holds the *current* text and status of one captioner's output for one image
(source + model + settings); every change to it (the model's first text included) is also a
:class:`CaptionVersion` row, so no decision is ever lost. ``version`` is the optimistic lock:
a save names the version it edited, and a save of a stale version is refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from db.models import Base, utcnow

CAPTION_STATUSES = ("pending", "accepted", "rejected", "edited")


class Caption(Base):
    """One source's caption of one image (``source`` e.g. ``blip``, ``clip-fast``, ``dataset``).

    ``settings_key`` is a hash of ``model`` + ``settings``: the same image captioned by the same
    model with the same settings is one row (which makes captioning runs resumable), another
    model or setting gives another row.
    """

    __tablename__ = "caption"
    __table_args__ = (
        UniqueConstraint("image_id", "source", "settings_key"),
        Index("ix_caption_dataset_source", "dataset_id", "source"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(Text, default="")
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    settings_key: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    curator: Mapped[str | None] = mapped_column(String(200), nullable=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    run: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CaptionVersion(Base):
    """One state of a caption: version 1 is the captioner's text, later ones curator decisions."""

    __tablename__ = "caption_version"
    __table_args__ = (UniqueConstraint("caption_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    caption_id: Mapped[int] = mapped_column(ForeignKey("caption.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(40))
    curator: Mapped[str | None] = mapped_column(String(200), nullable=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class CaptionPhrase(Base):
    """A grounded phrase of a Kosmos-2 caption: its span, its box in image pixels, and how it
    agrees with the garment masks (``agrees`` is ``None`` for phrases naming no garment)."""

    __tablename__ = "caption_phrase"

    id: Mapped[int] = mapped_column(primary_key=True)
    caption_id: Mapped[int] = mapped_column(ForeignKey("caption.id", ondelete="CASCADE"), index=True)
    phrase: Mapped[str] = mapped_column(Text)
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    x0: Mapped[float] = mapped_column(Float)
    y0: Mapped[float] = mapped_column(Float)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    garment: Mapped[str | None] = mapped_column(String(200), nullable=True)
    overlap: Mapped[float | None] = mapped_column(Float, nullable=True)
    agrees: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")


class MixRecipe(Base):
    """A named, versioned recipe that turns captions into training prompts (never overwritten)."""

    __tablename__ = "mix_recipe"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    curator: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The dataset it was saved for (the Export page's default); any dataset may use it.
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset.id", ondelete="SET NULL", name="fk_mix_recipe_dataset_id"), nullable=True, index=True)
