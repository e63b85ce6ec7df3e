"""Near-duplicate groups: identical files, the same picture resized or re-encoded, and look-alikes.

Three kinds of evidence link two images of a dataset:
- ``checksum``: the same file bytes (SHA-256), found without any model;
- ``hash``: difference hashes at most ``hash_distance`` of 256 bits apart: the same photo resized,
  re-encoded or slightly recoloured;
- ``cosine``: CLIP embeddings at least ``threshold`` similar: the same shot, or nearly.
Linked images form a group (connected components). A group whose images sit in different splits
is train/validation leakage and is listed first. Reviewing a group keeps one image and excludes
the others, as curator decisions (source ``duplicate``) that export honours.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Image
from workbench.datasets import get_dataset
from workbench.embeddings.decisions import latest_decisions, record_decision
from workbench.embeddings.store import hash_neighbours
from workbench.embeddings.vectors import ImageVectors, NotEmbedded, image_vectors

DEFAULT_THRESHOLD = 0.95
DEFAULT_HASH_DISTANCE = 16  # of 256 bits; unrelated photos differ in about 128
NEIGHBOURS = 16  # cosine candidates looked at per image
# Hash and cosine links of recent (store state, threshold, hash distance): a page redraws after every
# click, and at 45k images finding the links takes seconds while the decisions on them change.
_LINKS_KEPT = 8
_links: OrderedDict[tuple, list[tuple[int, int, str, float]]] = OrderedDict()


@dataclass
class Member:
    """An image of a group, with the curator decision that holds for it (if any)."""

    image_id: int
    file_name: str
    split: str | None
    decision: str | None = None
    curator: str | None = None


@dataclass
class DuplicateGroup:
    """Images linked by duplicate evidence; ``links``: ``(file_a, file_b, kind, value)``."""

    members: list[Member]
    links: list[tuple[str, str, str, float]] = field(default_factory=list)

    @property
    def splits(self) -> list[str]:
        """The distinct splits of the members (those recorded at import)."""
        return sorted({m.split for m in self.members if m.split})

    @property
    def cross_split(self) -> bool:
        """Whether the group spans splits (train/validation leakage)."""
        return len(self.splits) > 1

    @property
    def kinds(self) -> list[str]:
        """The kinds of evidence in the group."""
        return sorted({k for _, _, k, _ in self.links})

    @property
    def decided(self) -> bool:
        """Whether every member has a decision (the group was reviewed)."""
        return all(m.decision is not None for m in self.members)

    def default_keep(self) -> Member:
        """The image "keep first" keeps: the first in the train split, else the first by name."""
        return min(self.members, key=lambda m: (m.split != "train", m.file_name))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"members": [asdict(m) for m in self.members], "links": [list(link) for link in self.links],
                "splits": self.splits, "cross_split": self.cross_split, "kinds": self.kinds,
                "decided": self.decided}


@dataclass
class DuplicateReport:
    """The groups of a dataset and what was looked at."""

    dataset: str
    groups: list[DuplicateGroup]
    images: int
    embedded: int  # images whose embedding (and hash) was compared; 0: checksums only
    threshold: float
    hash_distance: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"dataset": self.dataset, "images": self.images, "embedded": self.embedded,
                "threshold": self.threshold, "hash_distance": self.hash_distance, "note": self.note,
                "groups": [g.to_dict() for g in self.groups],
                "duplicates": sum(len(g.members) - 1 for g in self.groups),
                "cross_split_groups": sum(g.cross_split for g in self.groups)}


class _Union:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, a: int) -> int:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def join(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def find_duplicates(session: Session, dataset: str, data_dir: Path, *, model: str | None = None,
                    threshold: float | None = DEFAULT_THRESHOLD, hash_distance: int | None = DEFAULT_HASH_DISTANCE
                    ) -> DuplicateReport:
    """The duplicate groups of ``dataset``: by checksum always; by hash and cosine when ``model``'s
    embeddings are stored (otherwise the report's note says how to add them). ``None`` turns the
    hash or the cosine evidence off."""
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ValueError(f"the cosine threshold must be in (0, 1], not {threshold}")
    ds = get_dataset(session, dataset)
    rows = session.execute(select(Image.id, Image.file_name, Image.split, Image.checksum)
                           .where(Image.dataset_id == ds.id).order_by(Image.id)).all()
    info = {r.id: r for r in rows}
    union, links = _Union(), []
    first_of: dict[str, int] = {}
    for r in rows:
        if r.checksum is None:
            continue
        if r.checksum in first_of:
            other = first_of[r.checksum]
            union.join(other, r.id)
            links.append((other, r.id, "checksum", 1.0))
        else:
            first_of[r.checksum] = r.id
    embedded, note = 0, ""
    unchecked = sum(r.checksum is None for r in rows)
    if model is not None:
        try:
            vectors = image_vectors(session, ds.name, model, data_dir)
        except NotEmbedded as exc:
            note = f"checksums only: {exc}"
        else:
            embedded = len(vectors.image_ids)
            for a, b, kind, value in embedding_links(vectors, threshold, hash_distance):
                union.join(a, b)
                links.append((a, b, kind, value))
    else:
        note = "checksums only (no model given)"
    if unchecked:
        note = (note + "; " if note else "") + (f"{unchecked} image(s) have no checksum (imported with a header-only "
                                               "check): embedding them records it")
    decisions = latest_decisions(session, ds.id, "duplicate")
    by_root: dict[int, list[int]] = {}
    for image_id in union.parent:
        by_root.setdefault(union.find(image_id), []).append(image_id)
    groups = []
    for ids in by_root.values():
        members = [Member(i, info[i].file_name, info[i].split,
                          decisions[i].decision if i in decisions else None,
                          decisions[i].curator if i in decisions else None)
                   for i in sorted(ids, key=lambda i: info[i].file_name)]
        in_group = set(ids)
        group_links = [(info[a].file_name, info[b].file_name, kind, round(float(v), 4))
                       for a, b, kind, v in links if a in in_group]
        groups.append(DuplicateGroup(members, group_links))
    groups.sort(key=lambda g: (not g.cross_split, g.decided, -len(g.members), g.members[0].file_name))
    return DuplicateReport(ds.name, groups, len(rows), embedded, threshold, hash_distance, note)


def embedding_links(vectors: ImageVectors, threshold: float | None, hash_distance: int | None
                    ) -> list[tuple[int, int, str, float]]:
    """``(image_a, image_b, kind, value)`` for pairs linked by picture hash or cosine (not by checksum),
    computed once per store state and settings, then reused."""
    key = (vectors.state, threshold, hash_distance)
    if key in _links:
        _links.move_to_end(key)
        return _links[key]
    links = _find_embedding_links(vectors, threshold, hash_distance)
    _links[key] = links
    while len(_links) > _LINKS_KEPT:
        _links.popitem(last=False)
    return links


def _find_embedding_links(vectors: ImageVectors, threshold: float | None, hash_distance: int | None
                          ) -> list[tuple[int, int, str, float]]:
    links = []
    ids = vectors.image_ids
    seen: set[tuple[int, int]] = set()
    hash_pairs = hash_neighbours(vectors.hashes, hash_distance) if hash_distance is not None else []
    for i, j, distance in hash_pairs:
        a, b = int(ids[i]), int(ids[j])
        if vectors.checksums[i] == vectors.checksums[j]:
            continue
        seen.add((min(a, b), max(a, b)))
        links.append((a, b, "hash", float(distance)))
    if threshold is not None and len(ids) > 1:
        scores, rows = vectors.index().search(vectors.vectors, NEIGHBOURS)
        for i in range(len(ids)):
            for score, j in zip(scores[i], rows[i]):
                if j <= i or score < threshold or vectors.checksums[i] == vectors.checksums[j]:
                    continue
                a, b = int(ids[i]), int(ids[j])
                if (min(a, b), max(a, b)) in seen:
                    continue
                seen.add((min(a, b), max(a, b)))
                links.append((a, b, "cosine", float(score)))
    return links


def keep_one(session: Session, dataset: str, group: DuplicateGroup, keep_image_id: int, curator: str,
             note: str = "") -> int:
    """Keep ``keep_image_id`` and exclude the group's other images (curator decisions, source
    ``duplicate``); returns how many decisions were new."""
    if keep_image_id not in {m.image_id for m in group.members}:
        raise ValueError(f"image {keep_image_id} is not in this group "
                         f"({', '.join(m.file_name for m in group.members)})")
    kept = next(m for m in group.members if m.image_id == keep_image_id)
    details = {"group": [m.file_name for m in group.members], "kept": kept.file_name, "kinds": group.kinds}
    new = 0
    for m in group.members:
        decision = "keep" if m.image_id == keep_image_id else "exclude"
        if record_decision(session, dataset, m.image_id, "duplicate", decision, curator, details=details,
                           note=note) is not None:
            new += 1
    return new

