"""Load: 8 curators at once on the same items, on SQLite and PostgreSQL: every save is stored
or refused with a conflict message, the audit log accounts for every stored one, and no
database error ("database is locked") reaches a curator."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select

from db.engine import is_transient, session_scope, with_retries
from db.models import AuditLog
from db.people import PeopleDecision
from workbench.load import audit_mismatches, prepare, run_curators

pytestmark = pytest.mark.both_databases

CURATORS = 8
OPERATIONS = 12  # per curator: 6 people decisions and 6 caption edits
ITEMS = 3  # so every item is worked on by several curators at once


def test_eight_curator_processes_lose_nothing_and_see_no_database_error(demo_engine):
    url = demo_engine.url.render_as_string(hide_password=False)
    plan = prepare(demo_engine, "demo", ITEMS)
    results, _wall = run_curators(url, plan, curators=CURATORS, operations=OPERATIONS)

    assert len(results) == CURATORS * OPERATIONS
    errors = [r for r in results if r.outcome == "error"]
    assert errors == [], errors[:3]
    for r in results:
        if r.stored:
            assert r.outcome in ({"applied", "agreed", "conflict"} if r.kind == "people" else {"saved"})
        else:  # refused: the message says what changed and what to do
            assert r.outcome == "refused" and "changed since you opened it" in r.message, r
    assert audit_mismatches(demo_engine, results) == []
    outcomes = Counter(r.outcome for r in results)
    assert outcomes["refused"] > 0, "overlapping edits must produce conflicts"
    with session_scope(demo_engine) as session:
        decisions = session.scalars(select(PeopleDecision).where(PeopleDecision.action == "decide")).all()
        assert len(decisions) == sum(1 for r in results if r.kind == "people" and r.stored)


def test_a_busy_database_is_retried_not_shown(engine):
    """The shared retry: a transient conflict runs the work again; any other error is raised."""
    from sqlalchemy.exc import OperationalError

    class Busy(Exception):
        sqlstate = "40P01" if engine.dialect.name == "postgresql" else None

        def __str__(self) -> str:
            return "deadlock detected" if self.sqlstate else "database is locked"

    calls = []

    def work(session):
        calls.append(1)
        session.add(AuditLog(curator="ana", action="test", entity="t", entity_id="1"))
        if len(calls) < 3:
            raise OperationalError("INSERT ...", {}, Busy())
        return "done"

    assert is_transient(OperationalError("x", {}, Busy()))
    assert with_retries(engine, work, first_wait_s=0.001) == "done"
    assert len(calls) == 3
    with session_scope(engine) as session:  # the failed attempts were rolled back
        assert len(session.scalars(select(AuditLog).where(AuditLog.action == "test")).all()) == 1
    with pytest.raises(ZeroDivisionError):
        with_retries(engine, lambda s: 1 / 0)
