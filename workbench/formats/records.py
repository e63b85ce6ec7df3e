"""What importers hand over: parsed annotations, rejected rows and source keys.

Kept apart from the store (no SQLAlchemy here), so the importers' parsing processes start light.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple


# The largest image side a dataset may state: far past any real photo, and small enough that
# height x width fits every integer type the masks are computed in.
MAX_IMAGE_SIDE = 1 << 20


def size_problem(value: object, name: str) -> str | None:
    """Why ``value`` cannot be an image side stated in a source (``name`` the column or key), or None."""
    if not isinstance(value, int) or isinstance(value, bool):
        return f"{name} {value!r} is not an integer"
    if value <= 0:
        return f"{name} must be positive, not {value}"
    if value > MAX_IMAGE_SIDE:
        shown = str(value) if value < 10**30 else f"a {len(str(value))}-digit number"
        return f"{name} {shown} is over the largest image side, {MAX_IMAGE_SIDE}"
    return None


@dataclass
class Rejection:
    """A row (or annotation) the import refused: where it is and why."""

    line: int | None
    image_id: str
    reason: str


class PendingAnnotation(NamedTuple):
    """A parsed, checked annotation waiting to be written.

    A named tuple rather than a dataclass: importers send hundreds of thousands of these
    between processes, and tuples pickle several times faster.
    """

    line: int | None
    file_name: str
    height: int
    width: int
    category_source_id: int
    attribute_source_ids: list[int]
    counts: str  # the mask, as a COCO compressed RLE string (see workbench.rle)
    area: int
    bbox: tuple[int, int, int, int]
    source_key: str


def source_key(*parts: str) -> str:
    """A stable key of a source row, so re-importing it is recognised."""
    # Each part followed by a separator, hashed in one call (it is on every imported row's path).
    data = "\x1f".join((*parts, "")).encode("utf-8")
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def class_key(category: int, attributes: Iterable[int]) -> str:
    """An annotation's category and attribute ids (source ids, order and repeats ignored) as
    an iMaterialist row's source key, ``source_key(class_key(...), counts)``, holds them."""
    return f"{category}:{','.join(map(str, sorted(set(attributes))))}"
