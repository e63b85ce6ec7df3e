"""Edits of a class-id mask before it conditions a generation: swap a class, erase, paint a shape.

Masks are ``(H, W)`` uint8 arrays whose values are a scheme's class values (0 = background).
Every function returns a new array and never invents a value that is not asked for, so an
edited mask stays a valid mask of its scheme. Shapes are given as a box ``(x0, y0, x1, y1)`` in
fractions of the mask's width and height (0..1), so one edit means the same region at any
resolution; edits are plain dicts (:func:`parse_edit`, :func:`apply_edits`) so that they can be
stored with a generation's provenance and given on the command line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

SHAPES = ("rectangle", "ellipse")
Box = tuple[float, float, float, float]


class MaskEditError(ValueError):
    """An edit that cannot be applied; the message names the edit and the fix."""


def _check_value(value: int, what: str) -> int:
    if not 0 <= int(value) <= 255:
        raise MaskEditError(f"{what} {value} is not a class value (0-255)")
    return int(value)


def _check_box(box: Iterable[float]) -> Box:
    values = tuple(float(v) for v in box)
    if len(values) != 4:
        raise MaskEditError(f"box {values} needs four numbers: x0, y0, x1, y1 (fractions 0-1)")
    x0, y0, x1, y1 = values
    if not all(0.0 <= v <= 1.0 for v in values):
        raise MaskEditError(f"box {values}: coordinates are fractions of the width and height (0-1)")
    if x1 <= x0 or y1 <= y0:
        raise MaskEditError(f"box {values}: x1 must be right of x0 and y1 below y0")
    return x0, y0, x1, y1


def shape_mask(height: int, width: int, shape: str, box: Iterable[float]) -> np.ndarray:
    """A boolean ``(height, width)`` region: a rectangle or the ellipse inscribed in ``box``."""
    if shape not in SHAPES:
        raise MaskEditError(f"shape {shape!r} is not one of {', '.join(SHAPES)}")
    x0, y0, x1, y1 = _check_box(box)
    # pixel centres, so that a box covering the whole mask covers every pixel
    xs = (np.arange(width) + 0.5) / width
    ys = (np.arange(height) + 0.5) / height
    if shape == "rectangle":
        return ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return ((xs[None, :] - cx) / rx) ** 2 + ((ys[:, None] - cy) / ry) ** 2 <= 1.0


def swap_class(mask: np.ndarray, old: int, new: int) -> np.ndarray:
    """Every pixel of class ``old`` becomes class ``new`` (e.g. a skirt drawn as trousers)."""
    old, new = _check_value(old, "class"), _check_value(new, "class")
    out = mask.copy()
    out[mask == old] = new
    return out


def erase(mask: np.ndarray, shape: str, box: Iterable[float], background: int = 0) -> np.ndarray:
    """The region set to ``background`` (class 0 unless told)."""
    return paint(mask, shape, box, background)


def paint(mask: np.ndarray, shape: str, box: Iterable[float], value: int) -> np.ndarray:
    """The region painted with class ``value``."""
    value = _check_value(value, "class")
    out = mask.copy()
    out[shape_mask(mask.shape[0], mask.shape[1], shape, box)] = value
    return out


def apply_edits(mask: np.ndarray, edits: Iterable[Mapping[str, Any]],
                classes: Iterable[int] | None = None) -> np.ndarray:
    """``mask`` with ``edits`` applied in order; ``classes`` (the scheme's values) bounds new values.

    Edits: ``{"op": "swap", "from": 1, "to": 2}``, ``{"op": "erase", "shape": "ellipse",
    "box": [x0, y0, x1, y1]}``, ``{"op": "paint", "shape": "rectangle", "box": [...], "value": 3}``.
    """
    allowed = None if classes is None else {int(c) for c in classes}
    for number, edit in enumerate(edits, start=1):
        op = edit.get("op")
        try:
            if op == "swap":
                target = int(edit["to"])
                _in_scheme(target, allowed, number)
                mask = swap_class(mask, int(edit["from"]), target)
            elif op == "erase":
                mask = erase(mask, str(edit["shape"]), edit["box"])
            elif op == "paint":
                value = int(edit["value"])
                _in_scheme(value, allowed, number)
                mask = paint(mask, str(edit["shape"]), edit["box"], value)
            else:
                raise MaskEditError(f"unknown op {op!r}; use swap, erase or paint")
        except KeyError as exc:
            raise MaskEditError(f"edit {number} ({op}): missing {exc.args[0]!r}") from None
        except MaskEditError as exc:
            raise MaskEditError(f"edit {number} ({op}): {exc}") from None
    return mask


def _in_scheme(value: int, allowed: set[int] | None, number: int) -> None:
    if allowed is not None and value not in allowed:
        raise MaskEditError(f"class {value} is not in the mask's scheme (classes {sorted(allowed)})")


def parse_edit(text: str) -> dict[str, Any]:
    """An edit from its command-line form: ``swap 1 2``, ``erase ellipse 0.1,0.2,0.5,0.6``,
    ``paint rectangle 3 0,0.5,1,1`` (box as fractions x0,y0,x1,y1)."""
    parts = text.split()
    try:
        if parts and parts[0] == "swap" and len(parts) == 3:
            return {"op": "swap", "from": int(parts[1]), "to": int(parts[2])}
        if parts and parts[0] == "erase" and len(parts) == 3:
            return {"op": "erase", "shape": parts[1], "box": list(_check_box(parts[2].split(",")))}
        if parts and parts[0] == "paint" and len(parts) == 4:
            return {"op": "paint", "shape": parts[1], "value": int(parts[2]),
                    "box": list(_check_box(parts[3].split(",")))}
    except ValueError as exc:
        raise MaskEditError(f"edit {text!r}: {exc}") from None
    raise MaskEditError(f"edit {text!r}: write 'swap FROM TO', 'erase SHAPE x0,y0,x1,y1' or "
                        "'paint SHAPE CLASS x0,y0,x1,y1' (SHAPE rectangle or ellipse, box in fractions 0-1)")
