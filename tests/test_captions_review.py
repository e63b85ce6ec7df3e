"""Review: accept/edit/reject as versions in the audit log, stale saves refused with the other
version, bulk operations previewed then applied, review progress."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.engine import session_scope
from db.models import AuditLog
from workbench.captions.review import (BulkOperation, CaptionConflict, ReviewError, accept, apply_bulk, dedupe_words,
                                       edit, history, preview_bulk, reject, review_progress)
from workbench.captions.run import store_dataset_prompts
from workbench.captions.store import list_captions, save_captions
from workbench.datasets import get_dataset


# The store tests run on SQLite and on PostgreSQL (tests/conftest.py).
pytestmark = pytest.mark.both_databases

@pytest.fixture
def captions(demo_engine):
    """Three captions per demo image: dataset prompt, a BLIP-like and a CLIP-like text."""
    store_dataset_prompts(demo_engine, "demo")
    with session_scope(demo_engine) as session:
        dataset = get_dataset(session, "demo")
        ids = [c.image_id for c in list_captions(session, "demo")]
        rows = []
        for n, image_id in enumerate(ids):
            rows.append({"image_id": image_id, "source": "blip", "settings_key": "b", "model": "m",
                         "text": f"a woman woman in a dress number {n}"})
            rows.append({"image_id": image_id, "source": "clip-fast", "settings_key": "c", "model": "m",
                         "text": f"a photo {n}, trending on artstation, Trending on ArtStation, soft light, soft light"})
        save_captions(session, dataset.id, rows)
    return demo_engine


def one(engine, source: str):
    with session_scope(engine) as session:
        return list_captions(session, "demo", sources=[source])[0]


def test_decisions_are_versions_with_curator_in_the_audit_log(captions) -> None:
    first = one(captions, "blip")
    with session_scope(captions) as session:
        edited = edit(session, first.id, 1, "a woman in a red dress", "ana")
        accepted = accept(session, first.id, edited.version, "bo")
    assert (edited.status, edited.version, edited.curator) == ("edited", 2, "ana")
    assert (accepted.status, accepted.version, accepted.text) == ("accepted", 3, "a woman in a red dress")
    with session_scope(captions) as session:
        versions = history(session, first.id)
        log = session.scalars(select(AuditLog).where(AuditLog.entity_id == str(first.id)).order_by(AuditLog.id)).all()
        rejected = reject(session, one(captions, "clip-fast").id, 1, "ana")
    assert [(v.version, v.status, v.curator) for v in versions] == [(1, "pending", None), (2, "edited", "ana"), (3, "accepted", "bo")]
    assert versions[0].text == first.text
    assert [(e.curator, e.action, e.before["text"], e.after["text"]) for e in log] == [
        ("ana", "caption.edit", first.text, "a woman in a red dress"),
        ("bo", "caption.accept", "a woman in a red dress", "a woman in a red dress")]
    assert rejected.status == "rejected"


def test_a_stale_save_is_refused_and_shows_the_other_version(captions) -> None:
    target = one(captions, "blip")
    with session_scope(captions) as session:  # curator A saves first
        edit(session, target.id, target.version, "text by ana", "ana")
    with pytest.raises(CaptionConflict) as caught, session_scope(captions) as session:  # B still had version 1
        edit(session, target.id, target.version, "text by bo", "bo")
    assert caught.value.current.text == "text by ana" and caught.value.current.curator == "ana"
    assert caught.value.current.version == 2 and "version 1" in str(caught.value)
    assert one(captions, "blip").text == "text by ana"
    with session_scope(captions) as session:  # B saves again on top of what they now see
        assert edit(session, target.id, 2, "text by bo", "bo").version == 3


def test_decisions_need_a_curator_and_a_text(captions) -> None:
    target = one(captions, "blip")
    with pytest.raises(ReviewError, match="curator"), session_scope(captions) as session:
        accept(session, target.id, 1, " ")
    with pytest.raises(ReviewError, match="non-empty"), session_scope(captions) as session:
        edit(session, target.id, 1, "  ", "ana")


@pytest.mark.parametrize("operation, before, after", [
    (BulkOperation(kind="strip", phrases=["trending on artstation"]), "a photo 0, trending on artstation, Trending on ArtStation, soft light, soft light", "a photo 0, soft light, soft light"),
    (BulkOperation(kind="replace", pattern=r"soft (\w+)", replacement=r"warm \1"), "x, soft light", "x, warm light"),
    (BulkOperation(kind="lower"), "A Red DRESS", "a red dress"),
    (BulkOperation(kind="dedupe"), "a woman woman in red, soft light, Soft light", "a woman in red, soft light"),
])
def test_bulk_operations_change_text_as_named(operation, before, after) -> None:
    assert operation.apply(before) == after


def test_bulk_preview_then_apply_with_conflicts_reported(captions) -> None:
    strip = BulkOperation(kind="strip", phrases=["trending on artstation"])
    with session_scope(captions) as session:
        changes = preview_bulk(session, "demo", strip, sources=["clip-fast"])
    assert len(changes) == 12 and all("artstation" not in c.after.lower() for c in changes)
    assert one(captions, "clip-fast").text == changes[0].before  # a preview changes nothing
    with session_scope(captions) as session:  # someone edits one caption after the preview
        edit(session, changes[0].caption_id, changes[0].version, "changed meanwhile", "bo")
    with session_scope(captions) as session:
        result = apply_bulk(session, changes, "ana")
    assert len(result.applied) == 11 and [c.caption_id for c in result.conflicts] == [changes[0].caption_id]
    with session_scope(captions) as session:
        texts = {c.id: c.text for c in list_captions(session, "demo", sources=["clip-fast"])}
        assert all(s == "edited" for s in [c.status for c in list_captions(session, "demo", sources=["clip-fast"]) if c.id != changes[0].caption_id])
    assert texts[changes[0].caption_id] == "changed meanwhile"
    with pytest.raises(ValueError, match="not a valid regular expression"):
        BulkOperation(kind="replace", pattern="(")


def test_filters_by_source_status_length_and_word(captions) -> None:
    with session_scope(captions) as session:
        target = list_captions(session, "demo", sources=["blip"])[0]
        accept(session, target.id, 1, "ana")
        assert [c.id for c in list_captions(session, "demo", statuses=["accepted"])] == [target.id]
        assert len(list_captions(session, "demo", sources=["blip"], word="NUMBER")) == 12
        assert list_captions(session, "demo", sources=["blip"], word="numb") == []
        assert len(list_captions(session, "demo", sources=["blip"], min_words=8, max_words=8)) == 12
        assert list_captions(session, "demo", sources=["blip"], max_words=7) == []


def test_review_progress_counts_images_with_a_reviewed_caption(captions) -> None:
    with session_scope(captions) as session:
        assert review_progress(session, "demo") == (0, 12)
        first, second = list_captions(session, "demo", sources=["blip"])[:2]
        accept(session, first.id, 1, "ana")
        reject(session, second.id, 1, "ana")
        blip_same_image = [c for c in list_captions(session, "demo", sources=["clip-fast"]) if c.image_id == first.image_id][0]
        accept(session, blip_same_image.id, 1, "ana")
        assert review_progress(session, "demo") == (2, 12)
    assert dedupe_words("the the dress") == "the dress"
