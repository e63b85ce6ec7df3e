"""The Captions (review) and Mixing pages through streamlit's AppTest on a demo store."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from db.engine import dispose_engines, make_engine, session_scope
from tests.apptest_events import job_error
from workbench.captions.mixing import get_recipe
from workbench.captions.review import edit
from workbench.captions.run import store_dataset_prompts
from workbench.captions.store import list_captions, save_captions
from workbench.datasets import get_dataset

PAGES = Path(__file__).resolve().parent.parent / "pages"


@pytest.fixture
def store(tmp_path, monkeypatch, demo_template):
    """A copy of the demo store with dataset prompts and BLIP-like captions, as the app's store."""
    template_db, _ = demo_template
    db = tmp_path / "app.db"
    shutil.copy(template_db, db)
    url = f"sqlite:///{db.as_posix()}"
    monkeypatch.setenv("WORKBENCH_DB_URL", url)
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DEMO_IMAGES", "0")
    monkeypatch.setenv("WORKBENCH_USER", "ana")  # sign-in off: the local admin, named ana
    dispose_engines()
    st.cache_resource.clear()
    engine = make_engine(url)
    store_dataset_prompts(engine, "demo")
    with session_scope(engine) as session:
        dataset = get_dataset(session, "demo")
        ids = sorted({c.image_id for c in list_captions(session, "demo")})
        save_captions(session, dataset.id, [{"image_id": i, "source": "blip", "settings_key": "k", "model": "tiny",
                                             "text": f"a person, trending on artstation, pose {n}"}
                                            for n, i in enumerate(ids)])
    yield engine
    st.cache_resource.clear()
    dispose_engines()


def run(page: str) -> AppTest:
    app = AppTest.from_file(str(PAGES / page), default_timeout=60).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def captions_of(engine, source: str):
    with session_scope(engine) as session:
        return list_captions(session, "demo", sources=[source])


def test_review_page_accepts_and_edits_with_versions(store) -> None:
    app = run("05_Captions.py")
    first = captions_of(store, "blip")[0]
    assert any(first.text == area.value for area in app.text_area)
    assert any("**ana** · admin — sign-in is off" in i.value for i in app.sidebar.info)
    app.button(key=f"accept_{first.id}").click().run()
    assert not app.exception
    after = captions_of(store, "blip")[0]
    assert (after.status, after.version, after.curator) == ("accepted", 2, "ana")
    app.text_area(key=f"caption_text_{first.id}").set_value("a person in a red dress")
    app.button(key=f"save_{first.id}").click().run()
    edited = captions_of(store, "blip")[0]
    assert (edited.text, edited.status, edited.version) == ("a person in a red dress", "edited", 3)


def test_review_page_shows_a_conflict_instead_of_overwriting(store) -> None:
    app = run("05_Captions.py")
    first = captions_of(store, "blip")[0]
    with session_scope(store) as session:  # another curator saves while the page is open
        edit(session, first.id, 1, "bo's version", "bo")
    # Typing and clicking reach the server in one rerun, against the version the page showed.
    app.text_area(key=f"caption_text_{first.id}").set_value("ana's version")
    app.button(key=f"save_{first.id}").click().run()
    assert captions_of(store, "blip")[0].text == "bo's version"
    assert any("bo's version" in w.value and "bo" in w.value for w in app.warning)
    app.button(key="conflict_mine").click().run()
    now = captions_of(store, "blip")[0]
    assert (now.text, now.version, now.curator) == ("ana's version", 3, "ana")


def test_review_page_filters_and_bulk_strip_with_preview(store) -> None:
    app = run("05_Captions.py")
    app.sidebar.multiselect(key="captions_sources").set_value(["blip"]).run()
    app.selectbox(key="bulk_kind").set_value("strip").run()
    app.button(key="bulk_preview").click().run()
    assert len(app.dataframe) >= 1 and all("artstation" in c.text for c in captions_of(store, "blip"))
    app.button(key="bulk_apply").click().run()
    texts = [c.text for c in captions_of(store, "blip")]
    assert all("artstation" not in t for t in texts) and all(t.startswith("a person, pose") for t in texts)
    app.sidebar.text_input(key="captions_word").set_value("nothing-like-this").run()
    assert any("No captions match" in i.value for i in app.info)


def test_mixing_page_previews_and_saves_versions(store) -> None:
    app = run("06_Mixing.py")
    assert len(app.dataframe) == 1 and app.get("plotly_chart")
    app.text_input(key="mix_save_name").set_value("page-recipe").run()
    app.button(key="mix_save").click().run()
    assert any("version 1" in s.value for s in app.success)
    with session_scope(store) as session:
        saved = get_recipe(session, "page-recipe")
    assert saved.version == 1 and saved.curator == "ana"
    trigger_key = next(t.key for t in app.text_input if t.key.startswith("mix_trigger_"))
    app.text_input(key=trigger_key).set_value("fshn").run()
    prompts = app.dataframe[0].value["prompt"].tolist()
    assert all(p.startswith("fshn") for p in prompts if p)
    app.button(key="mix_save").click().run()
    with session_scope(store) as session:
        assert get_recipe(session, "page-recipe").version == 2


def weight_inputs(app: AppTest) -> dict[str, float]:
    """The Mixing page's caption weights, by source."""
    return {n.label: n.value for n in app.number_input if n.key.startswith("mix_weight_")}


def test_a_new_recipe_weighs_the_sources_there_are_and_names_the_empty_ones(store) -> None:
    from sqlalchemy import delete

    from db.captions import Caption
    from workbench.captions.mixing import MixRecipe, save_recipe

    app = run("06_Mixing.py")
    assert weight_inputs(app) == {"blip": 1.0}  # the store's only captioner besides the dataset prompt
    # Its captions are all pending, and the recipe uses accepted and edited ones.
    assert any("12 blip caption(s) in demo, none accepted or edited yet" in w.value for w in app.warning)
    with session_scope(store) as session:
        session.execute(delete(Caption).where(Caption.source == "blip"))
    app = run("06_Mixing.py")
    assert weight_inputs(app) == {}
    assert not app.warning
    assert any("demo has no captions besides its dataset prompt yet" in i.value for i in app.info)
    with session_scope(store) as session:  # a recipe made elsewhere, with BLIP at 1.0
        save_recipe(session, "blip-heavy", MixRecipe(weights={"blip": 1.0}))
    app = run("06_Mixing.py")
    app.selectbox(key="mix_start").set_value("blip-heavy").run()
    assert weight_inputs(app) == {"blip": 1.0}
    assert any("no blip captions in demo" in w.value for w in app.warning)


def test_generate_runs_a_background_job_and_follows_it_to_the_end(store) -> None:
    app = run("05_Captions.py")
    app.selectbox(key="captions_gen_kind").set_value("dataset")
    next(b for b in app.button if b.label == "Start captioning job").click()
    app.run()
    job_id = app.session_state["captions_job"]
    assert any(f"Captioning job {job_id}" in (p.proto.text or "") for p in app.get("progress"))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not any(s.value.startswith("Captions stored") for s in app.success):
        time.sleep(0.5)
        app.run()
    assert any(s.value.startswith("Captions stored") for s in app.success), [e.value for e in app.error]
    assert app.dataframe[0].value.loc[0, "status"] == "finished"


def test_a_captioning_job_that_fails_shows_its_reason_and_no_resume(store, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "no-such-blip"
    app = run("05_Captions.py")
    app.selectbox(key="captions_gen_kind").set_value("blip").run()  # the captioner's model picker appears
    app.text_input(key="captions_gen_model_caption").set_value(str(missing))
    next(b for b in app.button if b.label == "Start captioning job").click()
    app.run()
    job_id = app.session_state["captions_job"]
    error = job_error(app, f"Captioning job {job_id}")
    # the captioner's reason, naming the model, rather than "exit code 2"
    assert error.startswith(f"Captioning job {job_id} failed before its first step: BLIP / BLIP-2 / GIT captioner")
    assert str(missing) in error and "pick a ready model on the Models page" in error  # the registry's fix
    assert next(c for c in app.code if "BLIP / BLIP-2 / GIT captioner" in c.value).proto.wrap_lines
    assert not [b for b in app.button if b.label == "Resume"]  # no image was captioned: nothing to continue
    next(b for b in app.button if b.label == "Run again").click()
    app.run()
    assert app.session_state["captions_job"] == job_id + 1  # the same command, watched as a new job
    from workbench.jobs import cancel_job

    cancel_job(store, job_id + 1, grace_seconds=10)
    assert app.dataframe[0].value.loc[1, "reason"].startswith("BLIP / BLIP-2 / GIT captioner")
