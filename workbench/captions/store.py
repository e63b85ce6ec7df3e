"""Captions in the store: save captioner output (idempotently), list and filter captions."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.captions import Caption, CaptionPhrase, CaptionVersion
from db.models import Category, Image, utcnow
from workbench.datasets import get_dataset


@dataclass
class CaptionView:
    """A caption as plain data for pages, the CLI and JSON."""

    id: int
    image_id: int
    file_name: str
    source: str
    model: str
    text: str
    status: str
    version: int
    curator: str | None
    settings: dict[str, Any]
    extra: dict[str, Any]
    updated_at: Any

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        return asdict(self)


def view(caption: Caption, file_name: str) -> CaptionView:
    """A caption row as a :class:`CaptionView`."""
    return CaptionView(caption.id, caption.image_id, file_name, caption.source, caption.model, caption.text,
                       caption.status, caption.version, caption.curator, dict(caption.settings or {}),
                       dict(caption.extra or {}), caption.updated_at)


def done_image_ids(session: Session, dataset_id: int, source: str, key: str) -> set[int]:
    """Images that already have a caption from ``source`` with these model + settings."""
    return set(session.scalars(select(Caption.image_id).where(
        Caption.dataset_id == dataset_id, Caption.source == source, Caption.settings_key == key)))


def save_captions(session: Session, dataset_id: int, rows: Iterable[dict[str, Any]], min_overlap: float = 0.3) -> int:
    """Store captioner output rows (``image_id, source, model, settings, settings_key, text,
    extra, phrases, run``); rows already stored are skipped. Kosmos-2 phrases are checked against
    the garment masks here. Returns how many were added."""
    from workbench.captions.dataset_prompts import load_garments
    from workbench.captions.kosmos2 import check_phrases
    from workbench.captions.base import Phrase

    rows = list(rows)
    if not rows:
        return 0
    existing = set(session.execute(
        select(Caption.image_id, Caption.source, Caption.settings_key).where(
            Caption.dataset_id == dataset_id, Caption.image_id.in_({r["image_id"] for r in rows}))).all())
    grounded = [r for r in rows if r.get("phrases")]
    garments = load_garments(session, dataset_id, {r["image_id"] for r in grounded}) if grounded else {}
    categories = list(session.scalars(select(Category.name).where(Category.dataset_id == dataset_id))) if grounded else []
    added = 0
    for row in rows:
        key = (row["image_id"], row["source"], row["settings_key"])
        if key in existing:
            continue
        existing.add(key)
        now = utcnow()
        caption = Caption(dataset_id=dataset_id, image_id=row["image_id"], source=row["source"],
                          model=row.get("model", ""), settings=row.get("settings", {}),
                          settings_key=row["settings_key"], text=row["text"], status="pending", version=1,
                          extra=row.get("extra", {}), run=row.get("run", ""), created_at=now, updated_at=now)
        session.add(caption)
        session.flush()
        session.add(CaptionVersion(caption_id=caption.id, version=1, text=caption.text, status="pending",
                                   action="generated", curator=None, at=now))
        phrases = [Phrase(p["text"], p["start"], p["end"], tuple(p["box"])) for p in row.get("phrases") or []]
        if phrases:
            image_garments = garments[row["image_id"]].garments if row["image_id"] in garments else []
            disagreements = 0
            for check in check_phrases(phrases, image_garments, categories, min_overlap):
                x0, y0, x1, y1 = check.phrase.box
                session.add(CaptionPhrase(caption_id=caption.id, phrase=check.phrase.text, start=check.phrase.start,
                                          end=check.phrase.end, x0=x0, y0=y0, x1=x1, y1=y1, garment=check.garment,
                                          overlap=check.overlap, agrees=check.agrees, note=check.note))
                disagreements += check.agrees is False
            caption.extra = {**caption.extra, "disagreements": disagreements}
        added += 1
    return added


def list_captions(session: Session, dataset_name: str, *, sources: Iterable[str] | None = None,
                  statuses: Iterable[str] | None = None, min_words: int | None = None,
                  max_words: int | None = None, word: str | None = None,
                  image_ids: Iterable[int] | None = None) -> list[CaptionView]:
    """Captions of a dataset, filtered by source, status, length in words, and a word they contain
    (case-insensitive, whole word); ordered by image, then source."""
    dataset = get_dataset(session, dataset_name)
    query = (select(Caption, Image.file_name).join(Image, Image.id == Caption.image_id)
             .where(Caption.dataset_id == dataset.id).order_by(Caption.image_id, Caption.source, Caption.id))
    if sources:
        query = query.where(Caption.source.in_(list(sources)))
    if statuses:
        query = query.where(Caption.status.in_(list(statuses)))
    if image_ids is not None:
        query = query.where(Caption.image_id.in_(list(image_ids)))
    if word:
        query = query.where(func.lower(Caption.text).contains(word.lower(), autoescape=True))  # % and _ are literal
    pattern = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE) if word else None
    out = []
    for caption, file_name in session.execute(query):
        words = len(caption.text.split())
        if min_words is not None and words < min_words:
            continue
        if max_words is not None and words > max_words:
            continue
        if pattern is not None and not pattern.search(caption.text):
            continue
        out.append(view(caption, file_name))
    return out


def caption_phrases(session: Session, caption_id: int) -> list[CaptionPhrase]:
    """The grounded phrases of a caption, in caption order."""
    return list(session.scalars(select(CaptionPhrase).where(CaptionPhrase.caption_id == caption_id)
                                .order_by(CaptionPhrase.start, CaptionPhrase.id)))


def caption_sources(session: Session, dataset_name: str) -> list[str]:
    """The caption sources a dataset has captions from."""
    dataset = get_dataset(session, dataset_name)
    return list(session.scalars(select(Caption.source).where(Caption.dataset_id == dataset.id).distinct().order_by(Caption.source)))
