"""A process that keeps writing to a store while a test backs it up (spawn-safe: importable)."""

from __future__ import annotations

from sqlalchemy import func, select

from db.engine import make_engine, session_scope
from db.models import AuditLog, Curator

PAIR_ACTION = "pair"


def write_pairs(url: str, started, stop) -> None:
    """Commit transactions of two rows each (a curator and its audit row) until ``stop`` is set;
    a consistent copy holds as many curators named w... as pair audit rows, with equal names."""
    engine = make_engine(url)
    n = 0
    while not stop.is_set():
        with session_scope(engine) as session:
            session.add(Curator(name=f"w{n}"))
            session.add(AuditLog(curator=f"w{n}", action=PAIR_ACTION, entity="pair", entity_id=str(n)))
        n += 1
        if n == 20:
            started.set()
    started.set()
    engine.dispose()


def pairs_match(engine) -> tuple[int, bool]:
    """``(pairs, whether every written curator has its audit row and no more)`` in a store."""
    with session_scope(engine) as session:
        names = set(session.scalars(select(Curator.name).where(Curator.name.like("w%"))))
        audited = set(session.scalars(select(AuditLog.curator).where(AuditLog.action == PAIR_ACTION)))
        count = session.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.action == PAIR_ACTION))
    return len(names), names == audited and count == len(names)
