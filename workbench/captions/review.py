"""Reviewing captions: accept, edit, reject, each a new version with curator and time in the
audit log; bulk operations with a preview before they apply.

Saves are optimistic: each names the version the curator saw, and a save against a version
that has changed since is refused with :class:`CaptionConflict`, which carries the other
version, so that two curators never lose an edit silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.captions import Caption, CaptionVersion
from db.models import Image, utcnow
from workbench.audit import record
from workbench.captions.store import CaptionView, list_captions, view
from workbench.datasets import get_dataset

Decision = Literal["accept", "reject", "edit"]
REVIEWED = ("accepted", "edited", "rejected")
USABLE = ("accepted", "edited")  # reviewed captions a prompt may be built from


class CaptionConflict(RuntimeError):
    """A save against a stale version; ``current`` is the caption as it is now."""

    def __init__(self, caption_id: int, expected: int, current: CaptionView):
        self.caption_id, self.expected, self.current = caption_id, expected, current
        super().__init__(
            f"caption {caption_id} changed since you opened it (you had version {expected}, it is now "
            f"version {current.version} by {current.curator or 'the captioner'}: {current.text!r}, "
            f"{current.status}); reload it and apply your change again")


class ReviewError(ValueError):
    """A review request that cannot be done (unknown caption, empty edit ...)."""


def _current(session: Session, caption_id: int) -> CaptionView:
    row = session.execute(select(Caption, Image.file_name).join(Image, Image.id == Caption.image_id)
                          .where(Caption.id == caption_id)).first()
    if row is None:
        raise ReviewError(f"no caption {caption_id}")
    session.refresh(row[0])
    return view(row[0], row[1])


def decide(session: Session, caption_id: int, expected_version: int, decision: Decision, curator: str,
           text: str | None = None, action: str | None = None) -> CaptionView:
    """Apply one decision to a caption if it is still at ``expected_version``; returns the new state.

    ``edit`` needs ``text`` (status ``edited``, which counts as accepted); ``accept`` keeps the text;
    ``reject`` marks it unusable for training. Raises
    :class:`CaptionConflict` when someone saved in between.
    """
    if not curator or not curator.strip():
        raise ReviewError("name the curator making the decision")
    before = _current(session, caption_id)
    if decision == "edit":
        if text is None or not text.strip():
            raise ReviewError(f"caption {caption_id}: an edit needs a non-empty text (reject it instead)")
        new_text, status = text.strip(), "edited"
    elif decision == "accept":
        new_text, status = before.text, "accepted"
    elif decision == "reject":
        new_text, status = before.text, "rejected"
    else:
        raise ReviewError(f"unknown decision {decision!r}: accept, edit or reject")
    now = utcnow()
    # The version check and the write are one statement, so it holds across processes too.
    changed = session.execute(
        update(Caption).where(Caption.id == caption_id, Caption.version == expected_version)
        .values(text=new_text, status=status, version=Caption.version + 1, curator=curator, updated_at=now)
        .execution_options(synchronize_session=False)).rowcount
    if changed != 1:
        raise CaptionConflict(caption_id, expected_version, _current(session, caption_id))
    session.add(CaptionVersion(caption_id=caption_id, version=expected_version + 1, text=new_text, status=status,
                               action=action or decision, curator=curator, at=now))
    record(session, curator, f"caption.{action or decision}", "caption", caption_id, at=now,
           dataset=session.scalar(select(Image.dataset_id).join(Caption, Caption.image_id == Image.id)
                                  .where(Caption.id == caption_id)),
           before={"text": before.text, "status": before.status, "version": before.version},
           after={"text": new_text, "status": status, "version": expected_version + 1})
    session.flush()
    return _current(session, caption_id)


def accept(session: Session, caption_id: int, expected_version: int, curator: str) -> CaptionView:
    """Accept a caption as it is."""
    return decide(session, caption_id, expected_version, "accept", curator)


def reject(session: Session, caption_id: int, expected_version: int, curator: str) -> CaptionView:
    """Reject a caption (kept, but never used for training)."""
    return decide(session, caption_id, expected_version, "reject", curator)


def edit(session: Session, caption_id: int, expected_version: int, text: str, curator: str) -> CaptionView:
    """Replace a caption's text (status ``edited``, which counts as accepted)."""
    return decide(session, caption_id, expected_version, "edit", curator, text=text)


def history(session: Session, caption_id: int) -> list[CaptionVersion]:
    """Every version of a caption, oldest first."""
    return list(session.scalars(select(CaptionVersion).where(CaptionVersion.caption_id == caption_id)
                                .order_by(CaptionVersion.version)))


def review_progress(session: Session, dataset_name: str) -> tuple[int, int]:
    """``(images with at least one reviewed caption, images)`` of a dataset."""
    dataset = get_dataset(session, dataset_name)
    images = session.scalar(select(func.count()).select_from(Image).where(Image.dataset_id == dataset.id)) or 0
    reviewed = session.scalar(select(func.count(func.distinct(Caption.image_id))).where(
        Caption.dataset_id == dataset.id, Caption.status.in_(REVIEWED))) or 0
    return reviewed, images


def reviewed_image_ids(session: Session, dataset_name: str) -> set[int]:
    """Ids of the images that have at least one accepted or edited caption."""
    dataset = get_dataset(session, dataset_name)
    return set(session.scalars(select(Caption.image_id).distinct().where(
        Caption.dataset_id == dataset.id, Caption.status.in_(USABLE))))


# -- bulk operations -------------------------------------------------------------------------------
class BulkOperation(BaseModel):
    """One text operation over many captions: ``replace`` (regex), ``strip`` (phrases), ``lower``,
    ``dedupe`` (repeated words and comma-separated phrases)."""

    kind: Literal["replace", "strip", "lower", "dedupe"]
    pattern: str = Field("", description="replace: a regular expression.")
    replacement: str = Field("", description="replace: its replacement (\\1 for groups).")
    phrases: list[str] = Field(default_factory=list, description="strip: phrases to remove, e.g. 'trending on artstation'.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from exc
        return pattern

    def apply(self, text: str) -> str:
        """The text after this operation (whitespace and separators tidied)."""
        if self.kind == "replace":
            if not self.pattern:
                return text
            out = re.sub(self.pattern, self.replacement, text)
        elif self.kind == "strip":
            out = text
            for phrase in self.phrases:
                if phrase.strip():
                    out = re.sub(rf"(?<!\w){re.escape(phrase.strip())}(?!\w)", "", out, flags=re.IGNORECASE)
        elif self.kind == "lower":
            out = text.lower()
        else:
            out = dedupe_words(text)
        return tidy(out)


def tidy(text: str) -> str:
    """Collapse spaces and empty comma-separated parts left by removals."""
    parts = [" ".join(part.split()) for part in text.split(",")]
    return ", ".join(p for p in parts if p)


def dedupe_words(text: str) -> str:
    """Drop repeated comma-separated phrases and immediately repeated words ("the the")."""
    seen: set[str] = set()
    parts = []
    for part in text.split(","):
        words = part.split()
        kept = [w for i, w in enumerate(words) if i == 0 or w.lower() != words[i - 1].lower()]
        phrase = " ".join(kept)
        if phrase and phrase.lower() not in seen:
            seen.add(phrase.lower())
            parts.append(phrase)
    return ", ".join(parts)


@dataclass
class BulkChange:
    """One caption a bulk operation would change: its id, the version seen, before and after."""

    caption_id: int
    image_id: int
    file_name: str
    source: str
    version: int
    before: str
    after: str


def preview_bulk(session: Session, dataset_name: str, operation: BulkOperation, **filters: Any) -> list[BulkChange]:
    """The captions (matching ``filters`` as in :func:`list_captions`) that ``operation`` would change."""
    changes = []
    for caption in list_captions(session, dataset_name, **filters):
        after = operation.apply(caption.text)
        if after != caption.text:
            changes.append(BulkChange(caption.id, caption.image_id, caption.file_name, caption.source,
                                      caption.version, caption.text, after))
    return changes


@dataclass
class BulkResult:
    """Captions changed, and the changes refused because the caption moved on since the preview."""

    applied: list[CaptionView]
    conflicts: list[CaptionConflict]
    skipped_empty: list[int]


def apply_bulk(session: Session, changes: list[BulkChange], curator: str, action: str = "bulk-edit") -> BulkResult:
    """Apply a previewed bulk change, each caption at the version the preview saw (stale ones are
    reported as conflicts, not overwritten; texts that became empty are left alone)."""
    applied, conflicts, empty = [], [], []
    for change in changes:
        if not change.after.strip():
            empty.append(change.caption_id)
            continue
        try:
            with session.begin_nested():
                applied.append(decide(session, change.caption_id, change.version, "edit", curator,
                                      text=change.after, action=action))
        except CaptionConflict as conflict:
            conflicts.append(conflict)
    return BulkResult(applied, conflicts, empty)
