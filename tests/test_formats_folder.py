"""Plain-folder import: every image with its size and checksum, bad files refused, idempotent."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import Annotation, Category, Dataset, Image as ImageRow
from workbench.formats import ImportSourceError, import_folder


# The store tests run on SQLite and on PostgreSQL (tests/conftest.py).
pytestmark = pytest.mark.both_databases

def _save(root: Path, name: str, size: tuple[int, int]) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 200, 30)).save(path)
    return path


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    _save(root, "a.jpg", (40, 30))
    _save(root, "b.png", (16, 12))
    _save(root, "street/c.JPEG", (20, 50))
    (root / "notes.txt").write_text("not an image", encoding="utf-8")
    return root


def _stored(engine) -> dict[str, tuple[int, int, str | None, int | None]]:
    with session_scope(engine) as s:
        rows = s.scalars(select(ImageRow)).all()
        return {r.file_name: (r.width, r.height, r.checksum, r.file_size) for r in rows}


def test_every_image_is_stored_with_size_and_checksum(engine, photos):
    report = import_folder(engine, images_dir=photos, name="new photos")
    assert (report.images, report.new_images, report.annotations, report.rejected) == (3, 3, 0, [])
    stored = _stored(engine)
    assert set(stored) == {"a.jpg", "b.png", "street/c.JPEG"}
    for name, size in {"a.jpg": (40, 30), "b.png": (16, 12), "street/c.JPEG": (20, 50)}.items():
        data = (photos / name).read_bytes()
        assert stored[name] == (*size, hashlib.sha256(data).hexdigest(), len(data))
    with session_scope(engine) as s:
        assert s.scalar(select(Dataset.format)) == "folder"
        assert s.scalar(select(func.count()).select_from(Category)) == 0
        assert s.scalar(select(func.count()).select_from(Annotation)) == 0


def test_bad_files_are_refused_by_name(engine, photos, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_IMAGE_PIXELS", "5000")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not a jpeg")
    _save(photos, "huge.png", (100, 100))
    report = import_folder(engine, images_dir=photos, name="new photos")
    assert report.images == 3
    assert [(r.line, r.image_id) for r in report.rejected] == [(None, "broken.jpg"), (None, "huge.png")]
    assert "corrupt" in report.rejected[0].reason
    assert "decompression-bomb" in report.rejected[1].reason
    assert "broken.jpg" not in _stored(engine)


def test_reimport_is_idempotent_and_picks_up_new_files(engine, photos):
    import_folder(engine, images_dir=photos, name="new photos")
    before = _stored(engine)
    again = import_folder(engine, images_dir=photos, name="new photos")
    assert (again.images, again.new_images) == (3, 0)
    assert _stored(engine) == before
    _save(photos, "d.webp", (8, 8))
    third = import_folder(engine, images_dir=photos, name="new photos")
    assert (third.images, third.new_images) == (4, 1)
    assert _stored(engine)["d.webp"][:2] == (8, 8)


def test_sizes_are_read_even_without_an_image_check(engine, photos):
    report = import_folder(engine, images_dir=photos, name="new photos", image_check="none")
    assert report.rejected == []
    assert _stored(engine)["street/c.JPEG"][:2] == (20, 50)


def test_progress_counts_bytes(engine, photos):
    calls: list[tuple[int, int | None]] = []
    import_folder(engine, images_dir=photos, name="p", progress=lambda d, t: calls.append((d, t)))
    total = sum((photos / n).stat().st_size for n in ("a.jpg", "b.png", "street/c.JPEG"))
    assert calls[-1] == (total, total)


def test_missing_folder_is_a_source_error(engine, tmp_path):
    with pytest.raises(ImportSourceError, match="images folder not found"):
        import_folder(engine, images_dir=tmp_path / "nowhere", name="x")
