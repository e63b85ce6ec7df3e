"""The similarity commands: embed, similar, duplicates, outliers (tiny random CLIP, planted duplicates)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from db.engine import dispose_engines, make_engine, session_scope
from db.curation import CurationDecision
from db.models import Image
from tests.test_embeddings import distinct_photo
from workbench.cli import app
from workbench.formats.folder import import_folder


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A folder dataset ``photos`` (8 photos, one exact copy, one resized copy) and a tiny CLIP."""
    from PIL import Image as PILImage

    from workbench.tiny.captioners import save_tiny_clip

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(8):
        distinct_photo(100 + i).save(folder / f"p{i}.jpg", quality=90)
    shutil.copyfile(folder / "p0.jpg", folder / "p0_copy.jpg")
    with PILImage.open(folder / "p1.jpg") as im:
        im.resize((64, 48)).save(folder / "p1_small.jpg", quality=75)
    db = f"sqlite:///{(tmp_path / 'store.db').as_posix()}"
    import_folder(make_engine(db), images_dir=folder, name="photos")
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    yield db, str(save_tiny_clip(tmp_path / "tiny-clip"))
    dispose_engines()


def run(db: str, *args: str):
    return CliRunner().invoke(app, ["--db", db, *args])


def test_embed_similar_duplicates_and_outliers_from_the_command_line(store):
    db, clip = store
    missing = run(db, "outliers", "--dataset", "photos", "--model", clip)
    assert missing.exit_code == 2 and f"embed --dataset photos --model {clip}" in missing.output

    embedded = run(db, "embed", "--dataset", "photos", "--model", clip, "--map", "pca")
    assert embedded.exit_code == 0, embedded.output
    result = json.loads(embedded.stdout)
    assert (result["images"], result["embedded"], result["map"]) == (10, 9, "pca")
    again = json.loads(run(db, "embed", "--dataset", "photos", "--model", clip, "--map", "pca").stdout)
    assert (again["embedded"], again["reused"]) == (0, 10)

    with session_scope(make_engine(db)) as session:
        ids = {im.file_name: im.id for im in session.query(Image)}
    similar = run(db, "similar", "--image", str(ids["p0.jpg"]), "--k", "3", "--model", clip)
    assert similar.exit_code == 0, similar.output
    matches = json.loads(similar.stdout)
    assert len(matches) == 3 and matches[0]["file_name"] == "p0_copy.jpg" and matches[0]["score"] > 0.999
    by_text = json.loads(run(db, "similar", "--dataset", "photos", "--text", "red sequin dress", "--k", "4",
                             "--model", clip).stdout)
    assert len(by_text) == 4 and [m["score"] for m in by_text] == sorted((m["score"] for m in by_text), reverse=True)

    listed = json.loads(run(db, "duplicates", "--dataset", "photos", "--model", clip, "--no-cosine").stdout)
    assert sorted(sorted(m["file_name"] for m in g["members"]) for g in listed["groups"]) == [
        ["p0.jpg", "p0_copy.jpg"], ["p1.jpg", "p1_small.jpg"]]
    refused = run(db, "duplicates", "--dataset", "photos", "--apply", "--list")
    assert refused.exit_code == 2 and "--keep-first" in refused.output
    applied = json.loads(run(db, "duplicates", "--dataset", "photos", "--model", clip, "--no-cosine", "--apply",
                             "--curator", "ana").stdout)
    assert applied["decisions_recorded"] == 4 and all(g["decided"] for g in applied["groups"])
    kept = {m["file_name"]: m["decision"] for g in applied["groups"] for m in g["members"]}
    assert kept == {"p0.jpg": "keep", "p0_copy.jpg": "exclude", "p1.jpg": "keep", "p1_small.jpg": "exclude"}

    queue = run(db, "outliers", "--dataset", "photos", "--model", clip, "--decide", "p3.jpg=exclude",
                "--curator", "ana", "--all", "--min-z", "-100")
    assert queue.exit_code == 0, queue.output  # a folder has no masks, so no category: nothing to rank
    with session_scope(make_engine(db)) as session:
        row = session.query(CurationDecision).filter_by(image_id=ids["p3.jpg"], source="outlier").one()
        assert (row.decision, row.curator) == ("exclude", "ana")
    bad = run(db, "outliers", "--dataset", "photos", "--decide", "p3.jpg=maybe", "--curator", "ana")
    assert bad.exit_code == 2 and "FILE=keep or FILE=exclude" in bad.output
    neither = run(db, "similar", "--dataset", "photos")
    assert neither.exit_code == 2 and "--image ID" in neither.output
