"""The people review queue: flagged images worst first, claimed, decided, undone, audited.

Every change to a flag bumps its ``version``; a change is written with
``UPDATE ... WHERE version = <the version the curator saw>``, so two curators can never
overwrite each other silently. When a curator decides an image that someone else decided
differently since they loaded it, both decisions are kept (:class:`~db.people.PeopleDecision`
rows), the flag is marked as a conflict and goes back to the front of the queue, and the page
shows both. Each curator action also writes an :class:`~db.models.AuditLog` row (curator,
action, entity ``people_flag``, its id, the flag before and after).

Claims: :func:`next_item` hands a curator the worst unclaimed image and claims it for
``claim_seconds``, so two curators working at once are given different images; a claim ends
with the curator's decision or skip, or when it expires.

What other parts read: :func:`people_decisions` (the export) and :func:`review_progress` (Home).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Curator, Image, utcnow
from db.people import PeopleDecision, PeopleFlag, PersonProposal
from workbench.audit import record
from workbench.datasets import get_dataset, get_image

DECISIONS = ("ok", "exclude", "mask-region")
STATUSES = ("pending", "decided", "skipped")
CLAIM_SECONDS = 600
ENTITY = "people_flag"
_RETRIES = 5


class QueueError(ValueError):
    """A queue request that cannot be done (unknown flag, bad decision, nothing to undo ...)."""


@dataclass(frozen=True)
class Decision:
    """What the export does with a flagged image: ``kind`` None means not decided (yet)."""

    kind: str | None
    regions: list[list[float]] = field(default_factory=list)


@dataclass
class QueueItem:
    """One flagged image as the review page and the CLI show it."""

    flag_id: int
    image_id: int
    file_name: str
    score: float
    scores: dict[str, float]
    source: str
    status: str
    decision: str | None
    regions: list[list[float]]
    curator: str | None
    decided_at: datetime | None
    version: int
    note: str
    conflict: bool
    claimed_by: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    repairs: int = 0  # active people repairs of the image (workbench.repair)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (``image_id`` is the file name, as on the command line)."""
        data = asdict(self)
        data["image_db_id"] = data.pop("image_id")
        data["image_id"] = self.file_name
        return data


# -- curators --------------------------------------------------------------------------------
def ensure_curator(session: Session, name: str) -> str:
    """The curator's name, stripped, recorded in the curator table on first use."""
    clean = (name or "").strip()
    if not clean:
        raise QueueError("a curator name is needed: pick or type who is reviewing")
    if session.scalar(select(Curator.id).where(Curator.name == clean)) is None:
        try:  # another session may add the same name meanwhile: theirs is as good as ours
            with session.begin_nested():
                session.add(Curator(name=clean))
        except IntegrityError:
            pass
    return clean


def list_curators(session: Session) -> list[str]:
    """Known curator names, in the order they first appeared."""
    return list(session.scalars(select(Curator.name).order_by(Curator.id)))


# -- reading ---------------------------------------------------------------------------------
def _snapshot(flag: PeopleFlag) -> dict[str, Any]:
    return {
        "status": flag.status, "decision": flag.decision, "regions": list(flag.regions or []),
        "curator": flag.curator, "decided_at": flag.decided_at.isoformat() if flag.decided_at else None,
        "conflict": bool(flag.conflict), "version": flag.version, "note": flag.note,
    }


def _history(session: Session, flag_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(select(PeopleDecision).where(PeopleDecision.flag_id == flag_id)
                           .order_by(PeopleDecision.id))
    return [{"id": r.id, "curator": r.curator, "action": r.action, "decision": r.decision,
             "regions": r.regions, "outcome": r.outcome, "at": r.at, "undone": r.undone_at is not None,
             "note": r.note}
            for r in rows]


def _item(session: Session, flag: PeopleFlag) -> QueueItem:
    file_name = session.scalar(select(Image.file_name).where(Image.id == flag.image_id))
    return QueueItem(
        flag_id=flag.id, image_id=flag.image_id, file_name=file_name, score=float(flag.score),
        scores=dict(flag.scores or {}), source=flag.source, status=flag.status, decision=flag.decision,
        regions=list(flag.regions or []), curator=flag.curator, decided_at=flag.decided_at,
        version=flag.version, note=flag.note, conflict=bool(flag.conflict), claimed_by=flag.claimed_by,
        history=_history(session, flag.id), repairs=_repairs(session, flag.image_id),
    )


def _repairs(session: Session, image_id: int) -> int:
    from db.repair import PeopleRepair

    return int(session.scalar(select(func.count()).where(PeopleRepair.image_id == image_id,
                                                         PeopleRepair.removed_at.is_(None))) or 0)


def _flag(session: Session, flag_id: int) -> PeopleFlag:
    flag = session.get(PeopleFlag, flag_id)
    if flag is None:
        raise QueueError(f"no people flag {flag_id} (see `python -m workbench people list`)")
    session.refresh(flag)
    return flag


def get_item(session: Session, flag_id: int) -> QueueItem:
    """The queue item of flag ``flag_id``, its decision history included."""
    return _item(session, _flag(session, flag_id))


def item_for_image(session: Session, dataset_name: str, file_name: str) -> QueueItem | None:
    """The queue item of an image by file name, or None if the image is not flagged."""
    image = get_image(session, get_dataset(session, dataset_name), file_name)
    flag = session.scalar(select(PeopleFlag).where(PeopleFlag.image_id == image.id))
    return _item(session, flag) if flag is not None else None


def _order():
    """Worst first: conflicts, then pending, then others' skips; highest score; oldest."""
    return (PeopleFlag.conflict.desc(), case((PeopleFlag.status == "pending", 0), else_=1),
            PeopleFlag.score.desc(), PeopleFlag.id)


def list_flags(session: Session, dataset_name: str, status: str | None = None) -> list[QueueItem]:
    """The dataset's flagged images in queue order, optionally of one status."""
    if status is not None and status not in STATUSES:
        raise QueueError(f"unknown status {status!r}; choose one of {', '.join(STATUSES)}")
    dataset = get_dataset(session, dataset_name)
    query = select(PeopleFlag).where(PeopleFlag.dataset_id == dataset.id)
    if status is not None:
        query = query.where(PeopleFlag.status == status)
    return [_item(session, f) for f in session.scalars(query.order_by(*_order()))]


def proposals_for(session: Session, image_id: int) -> list[PersonProposal]:
    """Every stored person proposal of an image, best unlabelled score first."""
    return list(session.scalars(select(PersonProposal).where(PersonProposal.image_id == image_id)
                                .order_by(PersonProposal.unlabelled_score.desc(), PersonProposal.id)))


# -- claiming ----------------------------------------------------------------------------------
def _claimable(curator: str, now: datetime):
    return or_(PeopleFlag.claimed_by.is_(None), PeopleFlag.claimed_by == curator,
               PeopleFlag.claim_expires_at <= now)


def _skipped_by(curator: str):
    return exists().where(PeopleDecision.flag_id == PeopleFlag.id, PeopleDecision.curator == curator,
                          PeopleDecision.action == "skip", PeopleDecision.undone_at.is_(None))


def next_item(session: Session, dataset_name: str, curator: str, *, claim_seconds: int = CLAIM_SECONDS,
              now: datetime | None = None) -> QueueItem | None:
    """The image this curator should review now (claimed for them), or None when none is left.

    A curator keeps the image they hold a live claim on; otherwise they get the worst image
    nobody else holds, leaving out images they skipped themselves.
    """
    curator = ensure_curator(session, curator)
    dataset = get_dataset(session, dataset_name)
    now = now or utcnow()
    until = now + timedelta(seconds=claim_seconds)
    open_status = or_(PeopleFlag.status == "pending", PeopleFlag.status == "skipped")
    held = session.scalar(select(PeopleFlag).where(
        PeopleFlag.dataset_id == dataset.id, open_status, PeopleFlag.claimed_by == curator,
        PeopleFlag.claim_expires_at > now).order_by(*_order()).limit(1))
    if held is not None:
        held.claim_expires_at = until
        session.flush()
        return _item(session, held)
    for _ in range(_RETRIES):
        candidates = list(session.scalars(
            select(PeopleFlag.id).where(PeopleFlag.dataset_id == dataset.id, open_status,
                                        _claimable(curator, now), ~_skipped_by(curator))
            .order_by(*_order()).limit(20)))
        if not candidates:
            return None
        for flag_id in candidates:
            claimed = session.execute(
                update(PeopleFlag)
                .where(PeopleFlag.id == flag_id, open_status, _claimable(curator, now))
                .values(claimed_by=curator, claim_expires_at=until)
                .execution_options(synchronize_session=False))
            if claimed.rowcount == 1:
                return _item(session, _flag(session, flag_id))
    return None


def release_claims(session: Session, curator: str) -> int:
    """Drop every claim the curator holds (end of a review session); returns how many."""
    done = session.execute(update(PeopleFlag).where(PeopleFlag.claimed_by == curator)
                           .values(claimed_by=None, claim_expires_at=None)
                           .execution_options(synchronize_session=False))
    return done.rowcount


# -- acting ------------------------------------------------------------------------------------
def _check_regions(decision: str, regions: list | None) -> list[list[float]]:
    clean: list[list[float]] = []
    for region in regions or []:
        try:
            x, y, w, h = (float(v) for v in region)
        except (TypeError, ValueError):
            raise QueueError(f"region {region!r} must be four numbers x, y, w, h") from None
        if w <= 0 or h <= 0:
            raise QueueError(f"region {region!r} has no area: width and height must be positive")
        clean.append([x, y, w, h])
    if decision == "mask-region" and not clean:
        raise QueueError("decision mask-region needs at least one region (x, y, w, h) marking "
                         "the unlabelled person")
    if decision != "mask-region" and clean:
        raise QueueError(f"decision {decision!r} takes no regions (only mask-region does)")
    return clean


def _write(session: Session, flag: PeopleFlag, seen: int, values: dict[str, Any]) -> bool:
    """Apply ``values`` to the flag if it is still at version ``seen``; bump the version."""
    done = session.execute(
        update(PeopleFlag).where(PeopleFlag.id == flag.id, PeopleFlag.version == seen)
        .values(**values, version=seen + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False))
    session.refresh(flag)
    return done.rowcount == 1


def _record(session: Session, flag: PeopleFlag, curator: str, action: str, outcome: str,
            before: dict[str, Any], seen: int | None, decision: str | None = None,
            regions: list | None = None, note: str = "") -> PeopleDecision:
    after = _snapshot(flag)
    row = PeopleDecision(flag_id=flag.id, curator=curator, action=action, decision=decision,
                         regions=regions or [], note=note, seen_version=seen, outcome=outcome,
                         before=before, after=after)
    session.add(row)
    audit_after = {**after, "outcome": outcome, **({"decision_made": decision} if action == "decide" else {})}
    record(session, curator, f"people.{action}", ENTITY, flag.id, dataset=flag.dataset_id, before=before,
           after=audit_after)
    session.flush()
    return row


@dataclass
class DecideResult:
    """What became of a decision: ``outcome`` applied | agreed | conflict, and the item now."""

    outcome: str
    item: QueueItem


def decide(session: Session, flag_id: int, curator: str, decision: str, *, regions: list | None = None,
           note: str = "", seen_version: int | None = None) -> DecideResult:
    """Record a curator's decision on a flagged image (never silently over someone else's).

    ``seen_version`` is the flag version the curator looked at (default: the current one). If
    someone else decided the image differently since, the decision is kept as a conflict and
    the image goes back to the front of the queue; if they decided the same, it is kept as
    agreement.
    """
    if decision not in DECISIONS:
        raise QueueError(f"unknown decision {decision!r}; choose one of {', '.join(DECISIONS)}")
    clean = _check_regions(decision, regions)
    curator = ensure_curator(session, curator)
    flag = _flag(session, flag_id)
    seen = flag.version if seen_version is None else int(seen_version)
    note = (note or "").strip()
    for _ in range(_RETRIES):
        before = _snapshot(flag)
        current = flag.version
        changed_since = current != seen and flag.status == "decided"
        if changed_since and (flag.decision, list(flag.regions or [])) == (decision, clean):
            row = _record(session, flag, curator, "decide", "agreed", before, seen, decision, clean, note)
            return DecideResult(row.outcome, _item(session, flag))
        if changed_since and flag.curator != curator:
            values = {"status": "pending", "conflict": True, "claimed_by": None, "claim_expires_at": None}
            outcome = "conflict"
        else:
            values = {"status": "decided", "decision": decision, "regions": clean, "curator": curator,
                      "decided_at": utcnow(), "conflict": False, "claimed_by": None, "claim_expires_at": None}
            if note:
                values["note"] = f"{flag.note}\n{curator}: {note}".strip()
            outcome = "applied"
        if _write(session, flag, current, values):
            row = _record(session, flag, curator, "decide", outcome, before, seen, decision, clean, note)
            return DecideResult(row.outcome, _item(session, flag))
    raise QueueError(f"people flag {flag_id} kept changing under this decision; try again")


def skip(session: Session, flag_id: int, curator: str, *, note: str = "") -> QueueItem:
    """"Not sure": leave the image for someone else; this curator is not given it again."""
    curator = ensure_curator(session, curator)
    flag = _flag(session, flag_id)
    for _ in range(_RETRIES):
        before = _snapshot(flag)
        values: dict[str, Any] = {"claimed_by": None, "claim_expires_at": None}
        if flag.status != "decided":
            values["status"] = "skipped"
        if _write(session, flag, flag.version, values):
            _record(session, flag, curator, "skip", "applied", before, before["version"], note=note)
            return _item(session, flag)
    raise QueueError(f"people flag {flag_id} kept changing under this skip; try again")


def undo_last(session: Session, dataset_name: str, curator: str, *,
              claim_seconds: int = CLAIM_SECONDS) -> QueueItem:
    """Take back the curator's last decision or skip in the dataset; the image is theirs again.

    Refused (:class:`QueueError`) when someone else changed the image since: undoing would
    overwrite their work, so the curator decides it again instead.
    """
    curator = ensure_curator(session, curator)
    dataset = get_dataset(session, dataset_name)
    last = session.scalar(
        select(PeopleDecision).join(PeopleFlag, PeopleFlag.id == PeopleDecision.flag_id)
        .where(PeopleFlag.dataset_id == dataset.id, PeopleDecision.curator == curator,
               PeopleDecision.undone_at.is_(None), PeopleDecision.action.in_(("decide", "skip")))
        .order_by(PeopleDecision.id.desc()).limit(1))
    if last is None:
        raise QueueError(f"{curator} has no decision to undo in {dataset_name!r}")
    flag = _flag(session, last.flag_id)
    before = _snapshot(flag)
    until = utcnow() + timedelta(seconds=claim_seconds)
    if last.outcome == "agreed":
        ok = _write(session, flag, flag.version, {"claimed_by": curator, "claim_expires_at": until})
    else:
        if flag.version != last.after.get("version"):
            raise QueueError(f"{flag.curator or 'someone'} changed {_file(session, flag)} after your "
                             "decision; undo would overwrite theirs; decide it again instead")
        restored = last.before
        ok = _write(session, flag, flag.version, {
            "status": restored["status"], "decision": restored["decision"], "regions": restored["regions"],
            "curator": restored["curator"], "conflict": restored["conflict"], "note": restored["note"],
            "decided_at": datetime.fromisoformat(restored["decided_at"]) if restored["decided_at"] else None,
            "claimed_by": curator, "claim_expires_at": until})
    if not ok:
        raise QueueError(f"{_file(session, flag)} changed while undoing; look at it again")
    last.undone_at = utcnow()
    _record(session, flag, curator, "undo", "applied", before, before["version"], last.decision, last.regions)
    return _item(session, flag)


def _file(session: Session, flag: PeopleFlag) -> str:
    return session.scalar(select(Image.file_name).where(Image.id == flag.image_id)) or f"image {flag.image_id}"


def flag_image(session: Session, image_id: int, curator: str, note: str = "") -> int:
    """A curator's "someone is unlabelled here" on an image: it joins the queue; returns the flag id.

    An image already in the queue keeps its place and gets the note; one already decided as
    "all people labelled" is opened again.
    """
    curator = ensure_curator(session, curator)
    image = session.get(Image, image_id)
    if image is None:
        raise QueueError(f"image id {image_id} is not in the database")
    note = (note or "").strip()
    line = f"{curator}: {note or 'someone is unlabelled here'}"
    flag = session.scalar(select(PeopleFlag).where(PeopleFlag.image_id == image_id))
    if flag is None:
        flag = PeopleFlag(dataset_id=image.dataset_id, image_id=image_id, score=1.0, scores={"manual": 1.0},
                          source="manual", note=line)
        session.add(flag)
        session.flush()
        before: dict[str, Any] = {}
    else:
        session.refresh(flag)
        before = _snapshot(flag)
        values: dict[str, Any] = {"note": f"{flag.note}\n{line}".strip(), "scores": {**flag.scores, "manual": 1.0},
                                  "score": 1.0 if flag.status != "decided" else flag.score}
        if flag.status == "decided" and flag.decision == "ok":
            values.update(status="pending", score=1.0)
        if not _write(session, flag, flag.version, values):
            raise QueueError(f"{image.file_name} changed while flagging; try again")
    record(session, curator, "people.flag", ENTITY, flag.id, dataset=flag.dataset_id, before=before or None,
           after=_snapshot(flag))
    session.flush()
    return flag.id


# -- what other parts read ---------------------------------------------------------------------
def people_decisions(session: Session, dataset_name: str) -> dict[int, Decision]:
    """The decision on every flagged image of the dataset, keyed by image id (``Image.id``).

    ``kind`` is ok | exclude | mask-region (``regions``: boxes ``[x, y, w, h]`` in pixels to
    blank or crop away), or None while the image is pending, skipped or in conflict. Images
    that were never flagged are not in the dict.
    """
    dataset = get_dataset(session, dataset_name)
    rows = session.execute(select(PeopleFlag.image_id, PeopleFlag.status, PeopleFlag.decision,
                                  PeopleFlag.regions, PeopleFlag.conflict)
                           .where(PeopleFlag.dataset_id == dataset.id)).all()
    return {
        image_id: Decision(decision if status == "decided" and not conflict else None,
                           [list(r) for r in regions or []] if status == "decided" and not conflict else [])
        for image_id, status, decision, regions, conflict in rows
    }


def review_progress(session: Session, dataset_name: str) -> tuple[int, int]:
    """``(decided, flagged)``: flagged images of the dataset and how many of them are decided."""
    dataset = get_dataset(session, dataset_name)
    flagged = session.scalar(select(func.count()).where(PeopleFlag.dataset_id == dataset.id)) or 0
    decided = session.scalar(select(func.count()).where(
        and_(PeopleFlag.dataset_id == dataset.id, PeopleFlag.status == "decided",
             PeopleFlag.conflict.is_(False)))) or 0
    return int(decided), int(flagged)


def queue_counts(session: Session, dataset_name: str) -> dict[str, int]:
    """Flags per status, plus conflicts."""
    dataset = get_dataset(session, dataset_name)
    counts = dict(session.execute(select(PeopleFlag.status, func.count()).where(
        PeopleFlag.dataset_id == dataset.id).group_by(PeopleFlag.status)).all())
    counts = {s: int(counts.get(s, 0)) for s in STATUSES}
    counts["conflict"] = int(session.scalar(select(func.count()).where(
        PeopleFlag.dataset_id == dataset.id, PeopleFlag.conflict.is_(True))) or 0)
    return counts


__all__ = [
    "CLAIM_SECONDS", "DECISIONS", "Decision", "DecideResult", "QueueError", "QueueItem", "STATUSES",
    "decide", "ensure_curator", "flag_image", "get_item", "item_for_image", "list_curators", "list_flags",
    "next_item", "people_decisions", "proposals_for", "queue_counts", "release_claims", "review_progress",
    "skip", "undo_last",
]
