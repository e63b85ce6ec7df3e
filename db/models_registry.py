"""Model of the model registry: entries a user added and the latest check of every model."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from db.models import Base, utcnow


class ModelEntry(Base):
    """A model the registry knows by ``name``: one the user added (a folder, a file or a hub id,
    ``added``), or a built-in one that only has a check stored here (``added`` false).

    The ``check_*`` columns hold the latest check (a load of the model in a background job):
    ``ready``, ``missing`` or ``broken``, why, the exact fix, and the location that was loaded,
    so a check of another location (files added since) is not taken for this one.
    """

    __tablename__ = "model_entry"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    added: Mapped[bool] = mapped_column(Boolean, default=False)
    hub_id: Mapped[str | None] = mapped_column(String(300), nullable=True)
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    tiny: Mapped[bool] = mapped_column(Boolean, default=False)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)
    check_state: Mapped[str | None] = mapped_column(String(20), nullable=True)
    check_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    check_fix: Mapped[str | None] = mapped_column(Text, nullable=True)
    check_location: Mapped[str | None] = mapped_column(Text, nullable=True)
    check_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    checked_at: Mapped[datetime | None] = mapped_column(nullable=True)
