"""Models of the people-flagging work: person proposals and curator decisions on them.

- :class:`PeopleScan`: one detector (with its settings) has looked at one image; its image-level
  score "probably an unlabelled person here". Detection skips images that already have a scan
  for the same detector and settings, which is what makes a run resumable.
- :class:`PersonProposal`: one person a detector proposed, with how much of it the garment
  masks cover.
- :class:`PeopleFlag`: an image in the review queue (from a detector or flagged by hand), its
  current decision, a version for optimistic concurrency, and a claim so that two curators
  are given different images.
- :class:`PeopleDecision`: every decision ever made on a flag, in order: nothing a curator
  decided is overwritten, undone decisions and conflicting ones included.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from db.models import Base, utcnow


class PeopleScan(Base):
    """A detector (``detector`` + ``settings_key``) has processed an image."""

    __tablename__ = "people_scan"
    __table_args__ = (UniqueConstraint("image_id", "detector", "settings_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), index=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    detector: Mapped[str] = mapped_column(String(40))
    settings_key: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    score: Mapped[float] = mapped_column(Float)
    proposals: Mapped[int] = mapped_column(Integer, default=0)
    labelled_people: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PersonProposal(Base):
    """One person a detector proposed in an image, and how much of it the garment masks cover.

    ``kind`` says what was seen: ``person`` (a detector's person), ``body`` (HOG), ``face``
    (a face, the box being the person it implies), ``upper-body``, ``labelled`` (a cluster of
    garment masks: a labelled person) or ``free-space`` (room beside the labelled people).
    ``mask_rle`` holds the detector's person mask in iMaterialist run-length text, if any.
    """

    __tablename__ = "person_proposal"
    __table_args__ = (Index("ix_person_proposal_image_detector", "image_id", "detector"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("people_scan.id", ondelete="CASCADE"), index=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    detector: Mapped[str] = mapped_column(String(40))
    settings_key: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20), default="person")
    box_x: Mapped[float] = mapped_column(Float)
    box_y: Mapped[float] = mapped_column(Float)
    box_w: Mapped[float] = mapped_column(Float)
    box_h: Mapped[float] = mapped_column(Float)
    mask_rle: Mapped[str | None] = mapped_column(Text, nullable=True)
    score: Mapped[float] = mapped_column(Float)
    coverage: Mapped[float | None] = mapped_column(Float, nullable=True)
    unlabelled_score: Mapped[float] = mapped_column(Float, default=0.0)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class PeopleFlag(Base):
    """An image in the people review queue and where its review stands.

    ``status``: pending | decided | skipped. ``decision``: ok (every person is labelled) |
    exclude (drop the image) | mask-region (keep it, ``regions`` marking the unlabelled people
    as ``[x, y, w, h]`` boxes). Every change bumps ``version``; a decision made on an older
    version than the current one is a conflict (kept, shown, and the image goes back to the
    queue). ``claimed_by`` / ``claim_expires_at`` hand each curator a different image.
    """

    __tablename__ = "people_flag"
    __table_args__ = (
        UniqueConstraint("image_id"),
        Index("ix_people_flag_queue", "dataset_id", "status", "score"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    score: Mapped[float] = mapped_column(Float, default=0.0)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str] = mapped_column(String(20), default="detector")
    status: Mapped[str] = mapped_column(String(20), default="pending")
    decision: Mapped[str | None] = mapped_column(String(20), nullable=True)
    regions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    curator: Mapped[str | None] = mapped_column(String(200), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    conflict: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    claimed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    claim_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PeopleDecision(Base):
    """One curator action on a flag (decide, skip), with the flag's state before and after.

    ``outcome``: applied (it changed the flag), agreed (the flag already said so), conflict
    (it disagreed with a decision made meanwhile by someone else) or undone (taken back by
    its curator: ``undone_at`` says when).
    """

    __tablename__ = "people_decision"

    id: Mapped[int] = mapped_column(primary_key=True)
    flag_id: Mapped[int] = mapped_column(ForeignKey("people_flag.id", ondelete="CASCADE"), index=True)
    curator: Mapped[str] = mapped_column(String(200), index=True)
    action: Mapped[str] = mapped_column(String(20))
    decision: Mapped[str | None] = mapped_column(String(20), nullable=True)
    regions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    note: Mapped[str] = mapped_column(Text, default="")
    seen_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outcome: Mapped[str] = mapped_column(String(20))
    before: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    after: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    undone_at: Mapped[datetime | None] = mapped_column(nullable=True)
