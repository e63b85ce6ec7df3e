"""The EDA page's image facets from the people-flagging and caption tables.

Each is a small per-image query (no mask is decoded), read on every page run because curators
change these values all the time:

- ``people_review``: where the image stands in the people review: ``not flagged``,
  ``pending``, ``skipped``, ``conflict`` or ``decided: <decision>`` (ok, exclude, mask-region);
- ``people``: estimated people per image: the labelled people the ``annotations`` scan found
  (clusters of garment masks) plus the people a detector saw that the masks do not cover
  (proposals with an unlabelled score of at least :data:`UNLABELLED_SCORE`), counting the
  detector that saw most of them, so one person seen by two detectors counts once. Images no
  scan has looked at have no value;
- ``caption``: ``no caption``, ``pending`` (captions not reviewed yet), ``accepted`` (at least
  one accepted or edited caption) or ``rejected`` (every caption rejected).
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.captions import Caption
from db.people import PeopleFlag, PeopleScan, PersonProposal
from workbench.eda import ImageFacet

UNLABELLED_SCORE = 0.5
PERSON_KINDS = ("person", "body", "face", "upper-body")


def people_review(session: Session, dataset_id: int) -> pd.Series:
    """Review status per flagged image."""
    rows = session.execute(
        select(PeopleFlag.image_id, PeopleFlag.status, PeopleFlag.decision, PeopleFlag.conflict)
        .where(PeopleFlag.dataset_id == dataset_id)
    ).all()
    values = {}
    for image_id, status, decision, conflict in rows:
        if conflict:
            values[image_id] = "conflict"
        elif status == "decided":
            values[image_id] = f"decided: {decision}"
        else:
            values[image_id] = status
    return pd.Series(values, dtype=object)


def estimated_people(session: Session, dataset_id: int) -> pd.Series:
    """Labelled people + the most unlabelled people one detector saw, per scanned image."""
    scanned = pd.DataFrame(session.execute(
        select(PeopleScan.image_id, func.max(PeopleScan.labelled_people))
        .where(PeopleScan.dataset_id == dataset_id).group_by(PeopleScan.image_id)
    ).all(), columns=["image_id", "labelled"])
    if scanned.empty:
        return pd.Series(dtype=float)
    unlabelled = pd.DataFrame(session.execute(
        select(PersonProposal.image_id, PersonProposal.detector, func.count())
        .join(PeopleScan, PeopleScan.id == PersonProposal.scan_id)
        .where(PeopleScan.dataset_id == dataset_id, PersonProposal.kind.in_(PERSON_KINDS),
               PersonProposal.unlabelled_score >= UNLABELLED_SCORE)
        .group_by(PersonProposal.image_id, PersonProposal.detector)
    ).all(), columns=["image_id", "detector", "n"])
    most = unlabelled.groupby("image_id")["n"].max() if len(unlabelled) else pd.Series(dtype=float)
    counts = scanned.set_index("image_id")["labelled"].fillna(0).astype(float)
    return counts.add(most.reindex(counts.index).fillna(0).astype(float))


def caption_status(session: Session, dataset_id: int) -> pd.Series:
    """Caption review status per captioned image."""
    rows = pd.DataFrame(session.execute(
        select(Caption.image_id, Caption.status).where(Caption.dataset_id == dataset_id)
    ).all(), columns=["image_id", "status"])
    if rows.empty:
        return pd.Series(dtype=object)

    def summary(statuses: pd.Series) -> str:
        found = set(statuses)
        if found & {"accepted", "edited"}:
            return "accepted"
        if found == {"rejected"}:
            return "rejected"
        return "pending"

    return rows.groupby("image_id")["status"].agg(summary)


def eda_facets() -> list[ImageFacet]:
    """The facets this module provides (see the module docstring)."""
    return [
        ImageFacet("people_review", "People review", people_review, missing="not flagged"),
        ImageFacet("people", "Estimated people per image", estimated_people, numeric=True,
                   missing=None),
        ImageFacet("caption", "Caption status", caption_status, missing="no caption"),
    ]
