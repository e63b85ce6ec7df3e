"""The inspector's library: annotation list, decoded masks, overlay drawing, scheme preview."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import Annotation, AnnotationAttribute, Image
from workbench.masks import render_image_mask
from workbench.overlay import (
    decode_masks,
    export_size,
    list_annotations,
    overlay_masks,
    preview_mask,
)
from workbench.schemes import get_scheme


def busiest_image(session) -> Image:
    """The demo image with the most annotations carrying attributes."""
    image_id = session.scalar(
        select(Annotation.image_id).join(AnnotationAttribute,
                                         AnnotationAttribute.annotation_id == Annotation.id)
        .group_by(Annotation.image_id).order_by(func.count().desc()).limit(1))
    return session.get(Image, image_id)


def test_annotations_are_listed_with_their_attributes(demo_engine) -> None:
    with session_scope(demo_engine) as session:
        image = busiest_image(session)
        infos = list_annotations(session, image.id)
        n = session.scalar(select(func.count()).where(Annotation.image_id == image.id))
        n_attrs = session.scalar(
            select(func.count()).select_from(AnnotationAttribute)
            .join(Annotation, Annotation.id == AnnotationAttribute.annotation_id)
            .where(Annotation.image_id == image.id))
    assert len(infos) == n
    assert sum(len(i.attributes) for i in infos) == n_attrs > 0
    assert [i.area for i in infos] == sorted((i.area for i in infos), reverse=True)
    # One colour per category, the same for every mask of it.
    by_cat = {}
    for info in infos:
        assert by_cat.setdefault(info.category, info.colour) == info.colour


def test_decoded_masks_have_the_stored_areas(demo_engine) -> None:
    with session_scope(demo_engine) as session:
        image = busiest_image(session)
        masks = decode_masks(session, image)
        infos = {i.id: i for i in list_annotations(session, image.id)}
        small = decode_masks(session, image, (image.width // 4, image.height // 4))
    assert {k: int(m.sum()) for k, m in masks.items()} == {k: i.area for k, i in infos.items()}
    assert all(m.shape == (image.height // 4, image.width // 4) for m in small.values())


def test_overlay_fill_outline_and_highlight() -> None:
    photo = np.full((20, 20, 3), 100, np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    filled = overlay_masks(photo, [(mask, (255, 0, 0))], opacity=1.0, mode="fill")
    assert tuple(filled[10, 10]) == (255, 0, 0) and tuple(filled[0, 0]) == (100, 100, 100)
    outlined = overlay_masks(photo, [(mask, (255, 0, 0))], opacity=1.0, mode="outline")
    assert tuple(outlined[10, 10]) == (100, 100, 100) and tuple(outlined[5, 5]) == (255, 0, 0)
    half = overlay_masks(photo, [(mask, (200, 0, 0))], opacity=0.5)
    assert tuple(half[10, 10]) == (150, 50, 50)
    lit = overlay_masks(photo, [(mask, (255, 0, 0))], highlight=mask)
    assert tuple(lit[0, 0]) == (60, 60, 60)  # the rest is dimmed
    assert tuple(lit[10, 10]) == (100, 100, 100)  # the highlighted mask shows the photo
    with pytest.raises(ValueError, match="overlay mode"):
        overlay_masks(photo, [], mode="hatched")


def test_preview_of_an_unsaved_scheme_matches_the_saved_rendering(demo_engine) -> None:
    with session_scope(demo_engine) as session:
        image = busiest_image(session)
        stored = get_scheme(session, "body-parts").definition
        preview = preview_mask(session, image.id, stored, size=(40, 60))
        saved = render_image_mask(session, image.id, "body-parts", size=(40, 60))
        assert np.array_equal(preview.array, saved.array)
        narrowed = stored.edited(mapping={}, fallback={})
        empty = preview_mask(session, image.id, narrowed)
    assert not empty.array.any() and empty.unmapped


def test_export_sizes() -> None:
    assert export_size("original", 300, 600) == (300, 600)
    assert export_size("512 long side", 300, 600) == (256, 512)
    assert export_size("512x768", 300, 600) == (512, 768)
