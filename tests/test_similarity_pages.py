"""The embedding views through AppTest: the Explore map, Inspect's "more like this", the Similarity page."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.curation import CurationDecision
from db.engine import make_engine, session_scope
from db.models import Image
from tests.apptest_events import ROOT, chart_spec, images_captions, page_store, send_widget_string, values  # noqa: F401
from tests.test_embeddings import distinct_photo
from workbench.embeddings.compute import EmbedSettings, embed_dataset
from workbench.embeddings.search import more_like

EXPLORE = ROOT / "pages" / "02_Explore.py"
INSPECT = ROOT / "pages" / "03_Inspect.py"
SIMILARITY = ROOT / "pages" / "12_Similarity.py"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    from workbench.tiny.captioners import save_tiny_clip

    return str(save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip"))


def run(app: AppTest) -> AppTest:
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_the_map_shows_every_embedded_image_and_a_lasso_opens_their_gallery(page_store, tmp_path, tiny_clip):
    embed_dataset(page_store, "demo", tmp_path / "data", EmbedSettings(model=tiny_clip, map="none"))
    with session_scope(page_store) as session:
        names = dict(session.execute(select(Image.id, Image.file_name)).all())
    app = run(AppTest.from_file(str(EXPLORE), default_timeout=120))
    spec = chart_spec(app, "chart_map")
    shown = [row[0] for trace in spec["data"] for row in values(trace["customdata"])]
    assert sorted(shown) == sorted(names)
    assert "PCA" in spec["layout"]["title"]["text"]
    app.radio(key="explore_map_colour").set_value("split")
    run(app)
    assert [t["name"] for t in chart_spec(app, "chart_map")["data"]] == ["(none)"]  # the demo has no splits
    picked = sorted(names)[:3]
    points = [{"curve_number": 0, "point_number": i, "point_index": i, "customdata": [image_id]}
              for i, image_id in enumerate(picked)]
    send_widget_string(app, "chart_map", {"selection": {"points": points, "point_indices": [0, 1, 2],
                                                         "box": [], "lasso": [{"x": [0], "y": [0]}]}})
    assert not app.exception, [e.value for e in app.exception]
    assert any("3 images selected on the map" in s.value for s in app.subheader)
    assert images_captions(app) == sorted(names[i] for i in picked)


def test_inspect_shows_more_like_this(page_store, tmp_path, tiny_clip):
    embed_dataset(page_store, "demo", tmp_path / "data", EmbedSettings(model=tiny_clip, map="none"))
    app = AppTest.from_file(str(INSPECT), default_timeout=120)
    app.query_params["dataset"] = "demo"
    app.query_params["image"] = "demo_0000.jpg"
    run(app)
    app.toggle(key="inspect_more_like").set_value(True)
    run(app)
    similar = {c for c in images_captions(app) if " · " in c}
    with session_scope(page_store) as session:
        first = session.scalar(select(Image.id).where(Image.file_name == "demo_0000.jpg"))
        expected = more_like(session, "demo", first, tiny_clip, tmp_path / "data", k=12)
    assert len(similar) == 11 and similar == {f"{m.file_name} · {m.score:.3f}" for m in expected}


def test_the_similarity_page_finds_an_exact_duplicate_and_keeping_one_excludes_the_other(app_store, monkeypatch):
    monkeypatch.setenv("WORKBENCH_USER", "ana")  # sign-in off: the local user, an admin, is ana
    folder = app_store / "photos"
    folder.mkdir()
    for i in range(4):
        distinct_photo(200 + i).save(folder / f"p{i}.jpg", quality=90)
    shutil.copyfile(folder / "p2.jpg", folder / "p2_copy.jpg")
    from workbench.formats.folder import import_folder
    from workbench.settings import get_settings

    engine = make_engine(get_settings().database_url)
    import_folder(engine, images_dir=folder, name="photos")
    app = run(AppTest.from_file(str(SIMILARITY), default_timeout=120))
    assert any("no embeddings yet" in i.value for i in app.info)
    assert any("Group 1" in m.value and "checksum" in m.value for m in app.markdown)
    assert sorted(c for c in images_captions(app)) == ["p2.jpg", "p2_copy.jpg"]
    app.button(key=f"dup_keep_{image_id(engine, 'p2.jpg')}").click()
    run(app)
    assert any("Kept p2.jpg" in s.value for s in app.success)
    assert any("No duplicate group left" in s.value for s in app.success)
    with session_scope(engine) as session:
        rows = {(r.image_id, r.decision, r.curator) for r in session.scalars(select(CurationDecision))}
    assert rows == {(image_id(engine, "p2.jpg"), "keep", "ana"), (image_id(engine, "p2_copy.jpg"), "exclude", "ana")}


def image_id(engine, name: str) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(Image.id).where(Image.file_name == name))
