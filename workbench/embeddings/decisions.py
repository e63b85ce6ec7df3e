"""Curator decisions of the similarity tools: recorded as rows (never overwritten) and in the audit log."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.curation import CurationDecision
from db.models import Image
from workbench.audit import record
from workbench.datasets import get_dataset

SOURCES = ("duplicate", "outlier", "label")
DECISIONS = ("keep", "exclude")
# The export's exclusion reason for each source (counted in the manifest).
EXPORT_REASONS = {"duplicate": "duplicate: excluded by a curator", "outlier": "outlier: excluded by a curator",
                  "label": "label problem: excluded by a curator"}


class DecisionError(ValueError):
    """A decision that cannot be recorded (unknown image, source, decision or no curator)."""


def record_decision(session: Session, dataset: str, image_id: int, source: str, decision: str, curator: str,
                    *, details: dict[str, Any] | None = None, note: str = "") -> CurationDecision | None:
    """Record ``curator``'s ``decision`` on an image; returns the row, or ``None`` when the image's latest
    decision of that source already says so (nothing new to record)."""
    from workbench.people.queue import QueueError, ensure_curator

    if source not in SOURCES:
        raise DecisionError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    if decision not in DECISIONS:
        raise DecisionError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    try:
        curator = ensure_curator(session, curator)
    except QueueError as exc:
        raise DecisionError(str(exc)) from None
    ds = get_dataset(session, dataset)
    file_name = session.scalar(select(Image.file_name).where(Image.id == image_id, Image.dataset_id == ds.id))
    if file_name is None:
        raise DecisionError(f"dataset {ds.name!r} has no image with id {image_id}")
    before = latest_decisions(session, ds.id, source).get(image_id)
    if before is not None and before.decision == decision:
        return None
    row = CurationDecision(dataset_id=ds.id, image_id=image_id, source=source, decision=decision, curator=curator,
                           details=details or {}, note=note)
    session.add(row)
    record(session, curator, f"{source}.decide", "image", image_id, dataset=ds.name,
           before={"decision": before.decision, "curator": before.curator} if before else None,
           after={"decision": decision, "file_name": file_name, **(details or {})})
    return row


def latest_decisions(session: Session, dataset_id: int, source: str | None = None) -> dict[int, CurationDecision]:
    """The decision that holds for each decided image (of ``source``, or of any source: the latest)."""
    query = select(CurationDecision).where(CurationDecision.dataset_id == dataset_id)
    if source is not None:
        query = query.where(CurationDecision.source == source)
    latest: dict[tuple[int, str], CurationDecision] = {}
    for row in session.scalars(query.order_by(CurationDecision.id)):
        latest[(row.image_id, row.source)] = row
    return {image_id: row for (image_id, _), row in latest.items()}


def excluded_images(session: Session, dataset_id: int) -> dict[int, str]:
    """Image id -> the source of the curator decision that excludes it (duplicate, outlier, label)."""
    out: dict[int, str] = {}
    for source in SOURCES:
        for image_id, row in latest_decisions(session, dataset_id, source).items():
            if row.decision == "exclude":
                out.setdefault(image_id, source)
    return out
