"""The people review queue: order, claims, decisions, undo, audit rows, concurrent curators."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import AuditLog, Image, utcnow
from db.people import PeopleDecision, PeopleFlag
from workbench.people.queue import (
    Decision,
    QueueError,
    decide,
    flag_image,
    get_item,
    list_flags,
    next_item,
    people_decisions,
    queue_counts,
    release_claims,
    review_progress,
    skip,
    undo_last,
)


# The store tests run on SQLite and on PostgreSQL (tests/conftest.py).
pytestmark = pytest.mark.both_databases


def add_flags(engine, scores: list[float]) -> list[int]:
    """Flag the first demo images with the given detector scores; returns the flag ids."""
    with session_scope(engine) as session:
        images = list(session.scalars(select(Image).order_by(Image.id)))[: len(scores)]
        flags = [PeopleFlag(dataset_id=img.dataset_id, image_id=img.id, score=s, scores={"opencv": s})
                 for img, s in zip(images, scores)]
        session.add_all(flags)
        session.flush()
        return [f.id for f in flags]


def audit_rows(engine, flag_id: int) -> list[AuditLog]:
    with session_scope(engine) as session:
        return list(session.scalars(select(AuditLog).where(AuditLog.entity == "people_flag",
                                                           AuditLog.entity_id == str(flag_id))
                                    .order_by(AuditLog.id)))


def test_queue_gives_the_worst_image_first_and_keeps_a_curators_claim(demo_engine):
    ids = add_flags(demo_engine, [0.5, 0.9, 0.7])
    with session_scope(demo_engine) as session:
        first = next_item(session, "demo", "ana")
        again = next_item(session, "demo", "ana")
        other = next_item(session, "demo", "ben")
    assert first.flag_id == ids[1] and first.claimed_by == "ana"
    assert again.flag_id == ids[1]  # ana keeps the image she holds
    assert other.flag_id == ids[2]  # ben gets the next worst, not ana's
    with session_scope(demo_engine) as session:
        assert [i.flag_id for i in list_flags(session, "demo")] == [ids[1], ids[2], ids[0]]


def test_an_expired_claim_frees_the_image(demo_engine):
    ids = add_flags(demo_engine, [0.9])
    with session_scope(demo_engine) as session:
        assert next_item(session, "demo", "ana").flag_id == ids[0]
        assert next_item(session, "demo", "ben") is None
        later = utcnow() + timedelta(seconds=601)
        assert next_item(session, "demo", "ben", now=later).flag_id == ids[0]
        release_claims(session, "ben")
        assert get_item(session, ids[0]).claimed_by is None


def test_decide_records_curator_decision_history_and_audit_rows(demo_engine):
    ids = add_flags(demo_engine, [0.9, 0.8])
    with session_scope(demo_engine) as session:
        item = next_item(session, "demo", "ana")
        result = decide(session, item.flag_id, "ana", "mask-region", regions=[[10, 20, 30, 40]],
                        seen_version=item.version, note="child on the left")
    assert result.outcome == "applied"
    after = result.item
    assert (after.status, after.decision, after.curator) == ("decided", "mask-region", "ana")
    assert after.regions == [[10.0, 20.0, 30.0, 40.0]] and after.version == item.version + 1
    assert after.claimed_by is None and "child on the left" in after.note
    [audit] = audit_rows(demo_engine, ids[0])
    assert (audit.curator, audit.action) == ("ana", "people.decide")
    assert audit.before["status"] == "pending" and audit.after["decision"] == "mask-region"
    with session_scope(demo_engine) as session:
        assert next_item(session, "demo", "ana").flag_id == ids[1]  # the decided one left the queue
        assert review_progress(session, "demo") == (1, 2)


def test_bad_decisions_are_refused_with_the_fix(demo_engine):
    [flag_id] = add_flags(demo_engine, [0.9])
    with session_scope(demo_engine) as session:
        with pytest.raises(QueueError, match="choose one of ok, exclude, mask-region"):
            decide(session, flag_id, "ana", "maybe")
        with pytest.raises(QueueError, match="needs at least one region"):
            decide(session, flag_id, "ana", "mask-region")
        with pytest.raises(QueueError, match="takes no regions"):
            decide(session, flag_id, "ana", "ok", regions=[[0, 0, 5, 5]])
        with pytest.raises(QueueError, match="curator name is needed"):
            decide(session, flag_id, "  ", "ok")
        with pytest.raises(QueueError, match="no people flag 999"):
            decide(session, 999, "ana", "ok")


def test_undo_restores_the_flag_and_hands_the_image_back(demo_engine):
    ids = add_flags(demo_engine, [0.9, 0.8])
    with session_scope(demo_engine) as session:
        decide(session, ids[0], "ana", "exclude")
        item = undo_last(session, "demo", "ana")
        assert (item.flag_id, item.status, item.decision, item.claimed_by) == (ids[0], "pending", None, "ana")
        assert next_item(session, "demo", "ana").flag_id == ids[0]
        with pytest.raises(QueueError, match="no decision to undo"):
            undo_last(session, "demo", "ana")
        rows = list(session.scalars(select(PeopleDecision).where(PeopleDecision.flag_id == ids[0])))
    assert [(r.action, r.undone_at is not None) for r in rows] == [("decide", True), ("undo", False)]
    assert [a.action for a in audit_rows(demo_engine, ids[0])] == ["people.decide", "people.undo"]


def test_undo_refuses_to_overwrite_someone_elses_later_decision(demo_engine):
    [flag_id] = add_flags(demo_engine, [0.9])
    with session_scope(demo_engine) as session:
        decide(session, flag_id, "ana", "exclude")
        decide(session, flag_id, "ben", "ok")  # ben saw ana's decision and changed it
        with pytest.raises(QueueError, match="ben changed .* decide it again"):
            undo_last(session, "demo", "ana")
        assert get_item(session, flag_id).decision == "ok"


def test_skip_leaves_the_image_to_others(demo_engine):
    ids = add_flags(demo_engine, [0.9, 0.8])
    with session_scope(demo_engine) as session:
        skipped = skip(session, ids[0], "ana")
        assert skipped.status == "skipped"
        assert next_item(session, "demo", "ana").flag_id == ids[1]  # not given her skip again
        release_claims(session, "ana")
        assert next_item(session, "demo", "ben").flag_id == ids[1]  # pending before others' skips
        decide(session, ids[1], "ben", "ok")
        assert next_item(session, "demo", "ben").flag_id == ids[0]
        assert queue_counts(session, "demo")["skipped"] == 1


def test_a_stale_contrary_decision_is_a_conflict_that_keeps_both(demo_engine):
    [flag_id] = add_flags(demo_engine, [0.9])
    with session_scope(demo_engine) as session:
        seen = get_item(session, flag_id).version  # both curators opened the image at this version
        first = decide(session, flag_id, "ana", "exclude", seen_version=seen)
        second = decide(session, flag_id, "ben", "ok", seen_version=seen)
        assert (first.outcome, second.outcome) == ("applied", "conflict")
        item = second.item
        assert item.conflict and item.status == "pending"
        assert [(h["curator"], h["decision"], h["outcome"]) for h in item.history] == [
            ("ana", "exclude", "applied"), ("ben", "ok", "conflict")]
        assert people_decisions(session, "demo")[item.image_id] == Decision(None, [])
        assert next_item(session, "demo", "cleo").flag_id == flag_id  # conflicts come first
        resolved = decide(session, flag_id, "cleo", "exclude", seen_version=item.version)
        assert resolved.outcome == "applied" and not resolved.item.conflict
    assert [a.after["outcome"] for a in audit_rows(demo_engine, flag_id)] == ["applied", "conflict", "applied"]


def test_a_stale_matching_decision_is_agreement(demo_engine):
    [flag_id] = add_flags(demo_engine, [0.9])
    with session_scope(demo_engine) as session:
        seen = get_item(session, flag_id).version
        decide(session, flag_id, "ana", "ok", seen_version=seen)
        agreed = decide(session, flag_id, "ben", "ok", seen_version=seen)
        assert agreed.outcome == "agreed" and not agreed.item.conflict
        assert agreed.item.curator == "ana" and agreed.item.status == "decided"


def test_people_decisions_is_what_the_export_reads(demo_engine):
    ids = add_flags(demo_engine, [0.9, 0.8, 0.7, 0.6])
    with session_scope(demo_engine) as session:
        decide(session, ids[0], "ana", "ok")
        decide(session, ids[1], "ana", "exclude")
        decide(session, ids[2], "ana", "mask-region", regions=[[1, 2, 3, 4], [5, 6, 7, 8]])
        image_of = {f.id: f.image_id for f in session.scalars(select(PeopleFlag))}
        decisions = people_decisions(session, "demo")
        n_images = session.scalar(select(func.count()).select_from(Image))
    assert decisions == {
        image_of[ids[0]]: Decision("ok", []),
        image_of[ids[1]]: Decision("exclude", []),
        image_of[ids[2]]: Decision("mask-region", [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]),
        image_of[ids[3]]: Decision(None, []),
    }
    assert n_images > len(decisions)  # unflagged images are not listed


def test_a_manual_flag_joins_the_queue_and_reopens_an_ok(demo_engine):
    ids = add_flags(demo_engine, [0.4])
    with session_scope(demo_engine) as session:
        image_ids = list(session.scalars(select(Image.id).order_by(Image.id)))
        new_flag = flag_image(session, image_ids[5], "ana", "a child behind the counter")
        decide(session, ids[0], "ben", "ok")
        reopened = flag_image(session, image_ids[0], "ana", "")
        item = get_item(session, new_flag)
        assert (item.source, item.status, item.score) == ("manual", "pending", 1.0)
        assert "ana: a child behind the counter" in item.note
        assert reopened == ids[0] and get_item(session, ids[0]).status == "pending"
        assert next_item(session, "demo", "cleo").flag_id in (new_flag, ids[0])
        with pytest.raises(QueueError, match="image id 99999"):
            flag_image(session, 99999, "ana")
    assert [a.action for a in audit_rows(demo_engine, new_flag)] == ["people.flag"]


def test_two_curators_at_once_get_different_images_and_lose_no_decision(demo_engine):
    ids = add_flags(demo_engine, [0.9 - 0.05 * i for i in range(10)])
    taken: dict[str, list[int]] = {"ana": [], "ben": []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def review(curator: str, decision: str) -> None:
        try:
            start.wait()
            while True:
                with session_scope(demo_engine) as session:
                    item = next_item(session, "demo", curator)
                    if item is None:
                        return
                    taken[curator].append(item.flag_id)
                with session_scope(demo_engine) as session:
                    decide(session, item.flag_id, curator, decision, seen_version=item.version)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=review, args=("ana", "ok")),
               threading.Thread(target=review, args=("ben", "exclude"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert not set(taken["ana"]) & set(taken["ben"])  # never the same image
    assert sorted(taken["ana"] + taken["ben"]) == sorted(ids)
    with session_scope(demo_engine) as session:
        rows = list(session.scalars(select(PeopleDecision)))
        assert len(rows) == len(ids)
        assert {(r.flag_id, r.curator) for r in rows} == {(f, c) for c in taken for f in taken[c]}
        decided = {i.flag_id: i.decision for i in list_flags(session, "demo")}
    assert all(decided[f] == "ok" for f in taken["ana"]) and all(decided[f] == "exclude" for f in taken["ben"])


def test_two_curators_deciding_the_same_image_in_threads_keep_both(demo_engine):
    [flag_id] = add_flags(demo_engine, [0.9])
    with session_scope(demo_engine) as session:
        seen = get_item(session, flag_id).version
    start = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def act(curator: str, decision: str) -> None:
        start.wait()
        with session_scope(demo_engine) as session:
            outcomes[curator] = decide(session, flag_id, curator, decision, seen_version=seen).outcome

    threads = [threading.Thread(target=act, args=("ana", "ok")), threading.Thread(target=act, args=("ben", "exclude"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes.values()) == ["applied", "conflict"]
    with session_scope(demo_engine) as session:
        item = get_item(session, flag_id)
    assert item.conflict and {h["curator"] for h in item.history} == {"ana", "ben"}
