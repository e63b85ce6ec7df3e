"""Model of the people who sign in: a name, a bcrypt password hash and a role.

A removed user keeps their row (``disabled_at`` set), so the audit log's names stay theirs and
the name cannot be taken over silently.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from db.models import Base, utcnow


class User(Base):
    """Someone who can sign in: ``role`` is viewer, curator or admin (see :mod:`workbench.users`)."""

    __tablename__ = "user"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # None for users who sign in through an identity provider (OIDC) and have no password here.
    password_hash: Mapped[str | None] = mapped_column(String(100), nullable=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(nullable=True)
