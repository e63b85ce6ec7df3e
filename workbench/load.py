"""Simulated curators: processes deciding people flags and editing captions on the same items at
once, through the library as the pages do (load tests and ``bench/soak.py``).

Each curator loads an item (the version they see), thinks for a moment, then saves against that
version. A save is either stored (people: applied, agreed or kept as a conflict; captions: a new
version) or refused with the conflict message a curator would read; anything else is an error.
:func:`audit_mismatches` then checks that the audit log accounts for every stored decision and
that no caption edit was lost.
"""

from __future__ import annotations

import multiprocessing
import random
import time
import traceback
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select

from db.captions import Caption
from db.engine import make_engine, session_scope, with_retries
from db.models import AuditLog, Image
from db.people import PeopleFlag
from workbench.captions.review import CaptionConflict, ReviewError
from workbench.captions.review import edit as edit_caption
from workbench.captions.store import list_captions, save_captions
from workbench.datasets import get_dataset
from workbench.people.queue import QueueError, decide, get_item

LOAD_SOURCE = "load"
PEOPLE_CHOICES = ("ok", "exclude")


@dataclass(frozen=True)
class LoadPlan:
    """The items every curator works on (all of them, so curators overlap)."""

    flag_ids: list[int]
    caption_ids: list[int]


@dataclass(frozen=True)
class OpResult:
    """One curator save: ``kind`` people | caption, ``stored`` or refused (``message`` says why)."""

    curator: str
    kind: str
    item_id: int
    stored: bool
    outcome: str  # people: applied | agreed | conflict; captions: saved; refused; error
    message: str
    latency_s: float


def prepare(engine, dataset_name: str, items: int) -> LoadPlan:
    """Flag the dataset's first ``items`` images for people review and give each a caption."""
    with session_scope(engine) as session:
        dataset = get_dataset(session, dataset_name)
        images = list(session.scalars(select(Image).where(Image.dataset_id == dataset.id)
                                      .order_by(Image.id).limit(items)))
        flags = [PeopleFlag(dataset_id=dataset.id, image_id=image.id, score=0.5, scores={"load": 0.5})
                 for image in images]
        session.add_all(flags)
        save_captions(session, dataset.id, [
            {"image_id": image.id, "source": LOAD_SOURCE, "settings_key": "load", "model": "load",
             "text": f"a person in a garment, photo {n}"} for n, image in enumerate(images)])
        session.flush()
        captions = list_captions(session, dataset_name, sources=[LOAD_SOURCE])
        return LoadPlan([f.id for f in flags], sorted(c.id for c in captions))


def _people_op(engine, curator: str, flag_id: int, choice: str, think_s: float) -> tuple[bool, str, str]:
    with session_scope(engine) as session:
        seen = get_item(session, flag_id).version
    time.sleep(think_s)
    try:
        result = with_retries(engine, lambda s: decide(s, flag_id, curator, choice, seen_version=seen).outcome)
    except QueueError as exc:
        return False, "refused", str(exc)
    return True, result, ""


def _caption_op(engine, curator: str, caption_id: int, text: str, think_s: float) -> tuple[bool, str, str]:
    with session_scope(engine) as session:
        seen = session.get(Caption, caption_id).version
    time.sleep(think_s)
    try:
        with_retries(engine, lambda s: edit_caption(s, caption_id, seen, text, curator))
    except (CaptionConflict, ReviewError) as exc:
        return False, "refused", str(exc)
    return True, "saved", ""


def curator_ops(url: str, curator: str, plan: LoadPlan, operations: int, think_s: float,
                seed: int) -> list[OpResult]:
    """One curator's ``operations`` saves, alternating people decisions and caption edits over
    the plan's items (starting at a curator-specific item, so curators overlap but differ)."""
    engine = make_engine(url)
    rng = random.Random(seed)
    results = []
    for n in range(operations):
        kind = "people" if n % 2 == 0 else "caption"
        items = plan.flag_ids if kind == "people" else plan.caption_ids
        item = items[(seed + n // 2) % len(items)]
        started = time.perf_counter()
        try:
            if kind == "people":
                stored, outcome, message = _people_op(engine, curator, item, rng.choice(PEOPLE_CHOICES),
                                                      think_s * rng.random())
            else:
                stored, outcome, message = _caption_op(engine, curator, item, f"{curator} edit {n}",
                                                       think_s * rng.random())
        except Exception as exc:  # what a user would have seen instead of a message
            stored, outcome, message = False, "error", "".join(traceback.format_exception_only(exc)).strip()
        results.append(OpResult(curator, kind, item, stored, outcome, message, time.perf_counter() - started))
    engine.dispose()
    return results


def _process(url: str, curator: str, plan: LoadPlan, operations: int, think_s: float, seed: int,
             start, out) -> None:
    make_engine(url)  # schema checks and imports before the common start
    start.wait()
    try:
        out.put(curator_ops(url, curator, plan, operations, think_s, seed))
    except BaseException as exc:  # a crashed process still reports, so the caller never hangs
        out.put([OpResult(curator, "setup", 0, False, "error", repr(exc), 0.0)])


def run_curators(url: str, plan: LoadPlan, *, curators: int, operations: int, think_s: float = 0.02,
                 timeout_s: float = 600) -> tuple[list[OpResult], float]:
    """``curators`` processes (spawned, so safe everywhere) each doing ``operations`` saves at
    once; returns every result and the wall time from their common start to the last save."""
    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(curators + 1), context.Queue()
    names = [f"curator{n + 1}" for n in range(curators)]
    workers = [context.Process(target=_process, args=(url, name, plan, operations, think_s, n, start, out))
               for n, name in enumerate(names)]
    for worker in workers:
        worker.start()
    start.wait(timeout=timeout_s)
    began = time.perf_counter()
    results: list[OpResult] = []
    for _ in workers:
        results.extend(out.get(timeout=timeout_s))
    wall = time.perf_counter() - began
    for worker in workers:
        worker.join(timeout=timeout_s)
    return results, wall


def audit_mismatches(engine, results: list[OpResult], *, caption_start_version: int = 1) -> list[str]:
    """What the store does not account for: stored decisions without their audit row (and audit
    rows without a decision), and captions whose version count differs from the edits stored."""
    curators = {r.curator for r in results}
    problems = [f"{r.curator} {r.kind} {r.item_id}: {r.message}" for r in results if r.outcome == "error"]
    with session_scope(engine) as session:
        audit = list(session.scalars(select(AuditLog).where(AuditLog.curator.in_(curators))))
        versions = dict(session.execute(select(Caption.id, Caption.version)).all())
    logged_people = Counter((a.curator, int(a.entity_id), a.after["outcome"]) for a in audit
                            if a.action == "people.decide")
    stored_people = Counter((r.curator, r.item_id, r.outcome) for r in results if r.kind == "people" and r.stored)
    if logged_people != stored_people:
        problems.append(f"people decisions stored but not audited: {dict(stored_people - logged_people)}; "
                        f"audited but not reported: {dict(logged_people - stored_people)}")
    logged_captions = Counter((a.curator, int(a.entity_id)) for a in audit if a.action == "caption.edit")
    stored_captions = Counter((r.curator, r.item_id) for r in results if r.kind == "caption" and r.stored)
    if logged_captions != stored_captions:
        problems.append(f"caption edits stored but not audited: {dict(stored_captions - logged_captions)}; "
                        f"audited but not reported: {dict(logged_captions - stored_captions)}")
    per_caption = Counter(r.item_id for r in results if r.kind == "caption" and r.stored)
    for caption_id, edits in per_caption.items():
        if versions.get(caption_id) != caption_start_version + edits:
            problems.append(f"caption {caption_id}: version {versions.get(caption_id)} after {edits} stored edits "
                            f"(expected {caption_start_version + edits}): an edit was lost")
    return problems
