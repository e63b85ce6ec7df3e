"""The audit log: one row per write (who, what, which dataset, before, after, when), and reading it back.

Every write of the workbench goes through :func:`record` — curator decisions, imports, exports,
recipe and scheme saves, training launches, dataset deletion, user changes — so that the Audit
page and ``python -m workbench audit`` account for all of them.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, time, timezone
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from db.models import AuditLog, Dataset

COLUMNS = ("id", "at", "user", "action", "dataset", "entity", "entity_id", "before", "after")


def record(session: Session, user: str | None, action: str, entity: str, entity_id: object, *,
           dataset: str | int | None = None, before: Any = None, after: Any = None,
           at: datetime | None = None) -> AuditLog:
    """Add the audit row of one write to ``session`` (committed with the write itself).

    ``dataset`` is the dataset's name or its id (stored as the name, so the row outlives it).
    """
    if isinstance(dataset, int):
        row = session.get(Dataset, dataset)
        dataset = row.name if row is not None else str(dataset)
    audit = AuditLog(curator=user, action=action, entity=entity, entity_id=str(entity_id), dataset=dataset,
                     before=before, after=after)
    if at is not None:
        audit.at = at
    session.add(audit)
    session.flush()
    return audit


def _naive_utc(when: datetime) -> datetime:
    # Rows are stored as naive UTC (SQLite keeps no zone), so bounds are compared the same way.
    return when.astimezone(timezone.utc).replace(tzinfo=None) if when.tzinfo else when


def parse_time(text: str, *, end: bool = False) -> datetime:
    """``2026-12-03`` (the day's start, or its end with ``end``) or an ISO date-time; naive = UTC."""
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day, time.max if end else time.min)
        return _naive_utc(datetime.fromisoformat(value))
    except ValueError:
        raise ValueError(f"time {text!r} is not a date (2026-12-03) or an ISO date-time "
                         "(2026-12-03T14:30, UTC unless it names its zone)") from None


def query(session: Session, *, user: str | None = None, action: str | None = None, dataset: str | None = None,
          since: datetime | None = None, until: datetime | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Audit rows, newest first, filtered: ``action`` matches itself and its group (``people``
    matches ``people.decide``); ``since`` / ``until`` bound the time, both included."""
    stmt = select(AuditLog).order_by(AuditLog.at.desc(), AuditLog.id.desc())
    if user:
        stmt = stmt.where(AuditLog.curator == user)
    if action:
        stmt = stmt.where(or_(AuditLog.action == action, AuditLog.action.like(f"{action}.%")))
    if dataset:
        stmt = stmt.where(AuditLog.dataset == dataset)
    if since is not None:
        stmt = stmt.where(AuditLog.at >= _naive_utc(since))
    if until is not None:
        stmt = stmt.where(AuditLog.at <= _naive_utc(until))
    if limit is not None:
        stmt = stmt.limit(limit)
    return [{"id": r.id, "at": r.at, "user": r.curator, "action": r.action, "dataset": r.dataset,
             "entity": r.entity, "entity_id": r.entity_id, "before": r.before, "after": r.after}
            for r in session.scalars(stmt)]


def choices(session: Session) -> dict[str, list[str]]:
    """The users, actions and datasets the log names (for filter pickers)."""
    def distinct(column) -> list[str]:
        return sorted(v for v in session.scalars(select(column).distinct()) if v)
    return {"user": distinct(AuditLog.curator), "action": distinct(AuditLog.action),
            "dataset": distinct(AuditLog.dataset)}


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV (``before`` / ``after`` as JSON text, times in ISO format)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "at": row["at"].isoformat(sep=" "),
                         "before": "" if row["before"] is None else json.dumps(row["before"], default=str),
                         "after": "" if row["after"] is None else json.dumps(row["after"], default=str)})
    return out.getvalue()
