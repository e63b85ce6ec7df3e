"""The thumbnail and mask cache: built once, keyed by content, clear about missing photos."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select

import workbench.thumbnails as thumbnails
from db.engine import session_scope
from db.models import Dataset, Image
from workbench.masks import render_image_mask
from workbench.schemes import get_scheme, save_scheme
from workbench.thumbnails import ImageMissing, ThumbnailCache


@pytest.fixture
def store(demo_engine, demo_files, tmp_path):
    """The demo store with its photos in a private folder (so a test may delete one)."""
    photos = tmp_path / "photos"
    shutil.copytree(demo_files.images_dir, photos)
    with session_scope(demo_engine) as session:
        session.scalars(select(Dataset)).one().images_root = str(photos)
    return demo_engine, photos


def first_image(session) -> tuple[Dataset, Image]:
    dataset = session.scalars(select(Dataset)).one()
    return dataset, session.scalars(select(Image).order_by(Image.file_name)).first()


def test_a_thumbnail_is_made_once_and_fits_the_size(store, tmp_path, monkeypatch) -> None:
    engine, _ = store
    cache = ThumbnailCache(tmp_path / "cache")
    with session_scope(engine) as session:
        dataset, image = first_image(session)
        path = cache.thumbnail(dataset, image, max_side=64)
        with PILImage.open(path) as im:
            assert max(im.size) == 64
            assert im.size[0] / im.size[1] == pytest.approx(image.width / image.height, rel=0.05)
        stamp = path.stat().st_mtime_ns

        def no_decode(*args, **kwargs):
            raise AssertionError("the photo was decoded again")

        monkeypatch.setattr(thumbnails.PILImage, "open", no_decode)
        assert cache.thumbnail(dataset, image, max_side=64) == path
        assert path.stat().st_mtime_ns == stamp


def test_a_changed_photo_gets_a_new_thumbnail(store, tmp_path) -> None:
    engine, photos = store
    cache = ThumbnailCache(tmp_path / "cache")
    with session_scope(engine) as session:
        dataset, image = first_image(session)
        image.checksum = None  # as after an import with image_check "header" or "none"
        before = cache.thumbnail(dataset, image, max_side=48)
        PILImage.new("RGB", (image.width, image.height), (250, 0, 0)).save(photos / image.file_name)
        os.utime(photos / image.file_name, ns=(1, 1))
        after = cache.thumbnail(dataset, image, max_side=48)
    assert after != before
    with PILImage.open(after) as im:
        assert np.asarray(im)[im.size[1] // 2, im.size[0] // 2, 0] > 200


def test_a_missing_photo_names_the_file_and_the_fix(store, tmp_path) -> None:
    engine, photos = store
    cache = ThumbnailCache(tmp_path / "cache")
    with session_scope(engine) as session:
        dataset, image = first_image(session)
        (photos / image.file_name).unlink()
        with pytest.raises(ImageMissing) as caught:
            cache.thumbnail(dataset, image)
    message = str(caught.value)
    assert image.file_name in message and str(photos) in message
    assert "re-import" in message


def test_a_mask_is_rendered_once_per_scheme_version_and_size(store, tmp_path, monkeypatch) -> None:
    engine, _ = store
    cache = ThumbnailCache(tmp_path / "cache")
    calls = []
    real = thumbnails.render_image_mask

    def counting(*args, **kwargs):
        calls.append(kwargs.get("scheme_version"))
        return real(*args, **kwargs)

    monkeypatch.setattr(thumbnails, "render_image_mask", counting)
    with session_scope(engine) as session:
        _, image = first_image(session)
        first = cache.mask(session, image, "body-parts", size=(32, 48))
        again = cache.mask(session, image, "body-parts", size=(32, 48))
        assert (first.hit, again.hit, len(calls)) == (False, True, 1)
        expected = render_image_mask(session, image.id, "body-parts", size=(32, 48))
        assert np.array_equal(again.values(), expected.array)
        assert again.rgb().shape == (48, 32, 3)
        cache.mask(session, image, "body-parts", size=(64, 96))
        assert len(calls) == 2
        # A new version of the scheme is a new key: the old rendering is not served.
        scheme = get_scheme(session, "body-parts").definition
        save_scheme(session, scheme.edited(mapping={**scheme.mapping, "dress": "upper body"}))
        newer = cache.mask(session, image, "body-parts", size=(32, 48))
    assert (newer.hit, newer.scheme_version, len(calls)) == (False, 2, 3)


def test_a_datasets_own_fine_is_a_new_key_when_its_categories_change(store, tmp_path) -> None:
    """A category the stored fine does not name makes fine the dataset's own, whose values are
    ranks of the category ids: a new category can move them, so the cached mask must not stay."""
    from db.models import Category

    engine, _ = store
    cache = ThumbnailCache(tmp_path / "cache")
    with session_scope(engine) as session:
        dataset, image = first_image(session)
        before = cache.mask(session, image, "fine")
        session.add(Category(dataset_id=dataset.id, source_id=-1, name="cyber armour", supercategory="future"))
        session.flush()
        after = cache.mask(session, image, "fine")
        expected = render_image_mask(session, image.id, "fine")
    assert not after.hit and after.legend["1"] == "cyber armour" and before.legend["1"] != "cyber armour"
    assert np.array_equal(after.values(), expected.array)
    assert (after.colours()[1] != after.colours()[0])
