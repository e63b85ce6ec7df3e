"""What the mask inspector shows: an image's annotations, their masks over the photo, previews.

Masks are decoded here, for ONE image at a time, at the size the photo is shown at. Each
category has a fixed colour (its ``fine`` palette colour), so a category looks the same in the
overlay, the legend and the ``fine`` conditioning mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Annotation, AnnotationAttribute, Attribute, Category, Image
from workbench.masks import MaskError, RenderedMask, render_with_definition
from workbench.palette import FINE_PALETTE, Colour
from workbench.rle import RLEError, counts_to_runs, decode_runs
from workbench.schemes import SchemeDefinition, fine_scheme

OVERLAY_MODES = ("fill", "outline")


@dataclass(frozen=True)
class AnnotationInfo:
    """One garment mask of an image, as the inspector lists it."""

    id: int
    category: str
    supercategory: str
    attributes: tuple[str, ...]
    area: int
    bbox: tuple[int, int, int, int]
    colour: Colour


def category_colour(name: str, supercategory: str, source_id: int) -> Colour:
    """The colour a category is drawn in: its ``fine`` class colour (by name), else by id."""
    cls = _fine().class_for(name, supercategory)
    if cls is not None and cls.value:
        return cls.colour
    return FINE_PALETTE[1 + source_id % 255]


_FINE: list[SchemeDefinition] = []


def _fine() -> SchemeDefinition:
    if not _FINE:
        _FINE.append(fine_scheme())
    return _FINE[0]


def list_annotations(session: Session, image_id: int) -> list[AnnotationInfo]:
    """The image's annotations with category, attributes, area and box, largest first."""
    rows = session.execute(
        select(Annotation.id, Category.name, Category.supercategory, Category.source_id,
               Annotation.area, Annotation.bbox_x, Annotation.bbox_y, Annotation.bbox_w,
               Annotation.bbox_h)
        .join(Category, Category.id == Annotation.category_id)
        .where(Annotation.image_id == image_id)
        .order_by(Annotation.area.desc(), Annotation.id)
    ).all()
    attributes: dict[int, list[str]] = {}
    for ann_id, name in session.execute(
        select(AnnotationAttribute.annotation_id, Attribute.name)
        .join(Attribute, Attribute.id == AnnotationAttribute.attribute_id)
        .join(Annotation, Annotation.id == AnnotationAttribute.annotation_id)
        .where(Annotation.image_id == image_id)
        .order_by(Attribute.source_id)
    ):
        attributes.setdefault(ann_id, []).append(name)
    return [
        AnnotationInfo(ann_id, name, sup or "", tuple(attributes.get(ann_id, ())), area,
                       (x, y, w, h), category_colour(name, sup or "", source_id))
        for ann_id, name, sup, source_id, area, x, y, w, h in rows
    ]


def decode_masks(session: Session, image: Image, size: tuple[int, int] | None = None
                 ) -> dict[int, np.ndarray]:
    """Every annotation's boolean mask of ``image``, at ``size = (width, height)`` if given."""
    out: dict[int, np.ndarray] = {}
    for ann_id, counts in session.execute(
        select(Annotation.id, Annotation.counts).where(Annotation.image_id == image.id)
    ):
        try:
            mask = decode_runs(counts_to_runs(counts, image.height, image.width), image.height,
                               image.width)
        except RLEError as exc:
            raise MaskError(f"image {image.file_name!r}, annotation {ann_id}: {exc}") from exc
        if size is not None and (size[0], size[1]) != (image.width, image.height):
            mask = cv2.resize(mask.view(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        out[ann_id] = mask
    return out


def overlay_masks(
    photo: np.ndarray,
    masks: Sequence[tuple[np.ndarray, Colour]],
    *,
    opacity: float = 0.5,
    mode: str = "fill",
    highlight: np.ndarray | None = None,
) -> np.ndarray:
    """The photo with the masks drawn on it, in the order given (later on top).

    ``mode`` is ``fill`` (colour blended at ``opacity``) or ``outline`` (the edge only).
    ``highlight`` is a mask drawn last, opaque, with a white outline, with the rest dimmed.
    """
    if mode not in OVERLAY_MODES:
        raise ValueError(f"overlay mode must be one of {OVERLAY_MODES}, not {mode!r}")
    out = np.asarray(photo, dtype=np.float32).copy()
    if highlight is not None:
        out *= 0.6
    thickness = max(1, round(max(out.shape[:2]) / 300))
    for mask, colour in masks:
        if mask.shape != out.shape[:2]:
            raise ValueError(f"mask {mask.shape} and photo {out.shape[:2]} differ in size")
        colour_arr = np.asarray(colour, dtype=np.float32)
        if mode == "fill":
            out[mask] = out[mask] * (1 - opacity) + colour_arr * opacity
        else:
            edge = _edge(mask, thickness)
            out[edge] = out[edge] * (1 - opacity) + colour_arr * opacity
    if highlight is not None:
        out[highlight] = np.asarray(photo, dtype=np.float32)[highlight]
        out[_edge(highlight, thickness + 1)] = 255.0
    return np.clip(out, 0, 255).astype(np.uint8)


def _edge(mask: np.ndarray, thickness: int) -> np.ndarray:
    m = mask.view(np.uint8) if mask.dtype == np.bool_ else mask.astype(np.uint8)
    kernel = np.ones((2 * thickness + 1, 2 * thickness + 1), np.uint8)
    return cv2.morphologyEx(m, cv2.MORPH_GRADIENT, kernel) > 0


def preview_mask(
    session: Session, image_id: int, definition: SchemeDefinition,
    size: tuple[int, int] | None = None,
) -> RenderedMask:
    """Compose an image's mask under an UNSAVED scheme definition (the editor's preview)."""
    return render_with_definition(session, image_id, definition, size)



def export_size(choice: str, width: int, height: int) -> tuple[int, int]:
    """``(width, height)`` of an export-resolution choice ("512x768", "512 long side", "original")."""
    if choice == "original":
        return (width, height)
    if choice.endswith(" long side"):
        side = int(choice.split()[0])
        scale = side / max(width, height)
        return (max(1, round(width * scale)), max(1, round(height * scale)))
    w, h = (int(v) for v in choice.lower().split("x"))
    return (w, h)


def used_categories(infos: Iterable[AnnotationInfo]) -> list[tuple[str, Colour]]:
    """The categories of the listed annotations with their colours, in first-seen order."""
    seen: dict[str, Colour] = {}
    for info in infos:
        seen.setdefault(info.category, info.colour)
    return list(seen.items())
