"""Curator decisions that come from the similarity tools: duplicates, outliers, label problems.

One row per decision, never overwritten: the latest row of an image and ``source`` is what holds
(an undo or a change of mind is a newer row). Export leaves out images whose latest decision of any
source is ``exclude``; every decision is also written to the audit log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from db.models import Base, utcnow


class CurationDecision(Base):
    """A curator's decision on one image found by a similarity tool.

    ``source``: duplicate | outlier | label. ``decision``: keep (a duplicate group's kept image,
    or an outlier judged fine) | exclude (left out of exports). ``details`` records what the tool
    showed (the group's other images and similarities, the outlier's score, the likely label).
    """

    __tablename__ = "curation_decision"
    __table_args__ = (Index("ix_curation_decision_image", "dataset_id", "image_id", "source"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(20))
    decision: Mapped[str] = mapped_column(String(20))
    curator: Mapped[str] = mapped_column(String(200))
    note: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow)
