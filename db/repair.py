"""Models of people repairs: a curator's fix of an image where a person was not labelled.

A :class:`PeopleRepair` is one repair of one image: a box around the unlabelled person and what
was done there, either ``erase`` (the person painted out of the photo: ``photo_path`` is the
edited copy, the original is never touched) or ``label`` (new garment masks for that person:
:class:`RepairAnnotation` rows). Who did it, with which tool (``source``) and model, and when,
are on the row. Removing a repair marks it (``removed_at``/``removed_by``); nothing is deleted.

Repair masks live in their own table, never in ``annotation``: every existing query (EDA,
rendering, people flagging, export, training data) keeps seeing the dataset's own masks only,
and the export reads repairs only when asked (``repaired="include"``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from db.models import Base, MaskColumns, utcnow


class PeopleRepair(Base):
    """One repair of an image: ``action`` erase | label, the ``box`` ``[x0, y0, x1, y1]`` it acted on.

    ``source``: for erase ``inpaint`` | ``fill``; for label ``sam`` | ``cloth-segmenter`` | ``manual``.
    """

    __tablename__ = "people_repair"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), index=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(40))
    model: Mapped[str | None] = mapped_column(Text, nullable=True)
    box: Mapped[list[float]] = mapped_column(JSON)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    photo_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    curator: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    removed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class RepairAnnotation(MaskColumns, Base):
    """A garment mask a repair added (COCO compressed RLE of the image, like ``annotation.counts``)."""

    __tablename__ = "repair_annotation"

    id: Mapped[int] = mapped_column(primary_key=True)
    repair_id: Mapped[int] = mapped_column(ForeignKey("people_repair.id", ondelete="CASCADE"), index=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), index=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"))
