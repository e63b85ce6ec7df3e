"""pages/10_Generate.py through AppTest: pick a checkpoint and an image, generate as a job, see the grid."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from db.engine import dispose_engines, make_engine
from workbench import generate as gen
from tests.job_waits import wait_job_ended

PAGE = Path(__file__).resolve().parent.parent / "pages" / "10_Generate.py"
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def store(tmp_path, trained_run, monkeypatch):
    """The app pointed at a private copy of the trained run's store."""
    copy = tmp_path / "data" / "wb.db"
    copy.parent.mkdir(parents=True)
    shutil.copy(trained_run.store, copy)
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DB_URL", f"sqlite:///{copy.as_posix()}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dispose_engines()
    st.cache_resource.clear()
    yield f"sqlite:///{copy.as_posix()}"
    st.cache_resource.clear()
    dispose_engines()


def run_page(app: AppTest | None = None) -> AppTest:
    app = (app or AppTest.from_file(str(PAGE), default_timeout=180)).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def captions(app: AppTest) -> list[str]:
    return [img.caption for element in app.get("image") for img in element.proto.imgs]


def test_generate_two_seeds_and_see_them_in_the_grid_and_side_by_side(store, trained_run):
    app = run_page()
    assert app.multiselect(key="gen_controlnets").value == [str(trained_run.run_dir)]  # the final one
    assert app.text_input(key="gen_base").value == str(trained_run.base_model)  # from its training config
    image_id = app.selectbox(key="gen_image").value
    info = gen.resolve_controlnet(trained_run.run_dir)
    expected = next(i["prompt"] for i in gen.export_images(info) if i["image_id"] == image_id)
    assert app.text_area(key="gen_prompt").value == expected  # the image's training prompt
    assert any("Conditioning mask (body-parts, 64 px)" in c for c in captions(app))

    app.multiselect(key="gen_controlnets").set_value([str(trained_run.run_dir / "checkpoint-1" / "controlnet"),
                                                      str(trained_run.run_dir)])
    app.text_input(key="gen_seeds").set_value("1, 2")
    app.number_input(key="gen_steps").set_value(1)
    app = run_page(app)
    app.button(key="gen_start").click()
    app = run_page(app)
    job_id = app.session_state["gen_job"]
    job = wait_job_ended(make_engine(store), job_id, timeout=240)
    assert job["status"] == "finished", Path(job["log_path"]).read_text()[-3000:]

    app = run_page(app)
    shown = captions(app)
    grid = [c for c in shown if c.startswith("#")]
    assert len(grid) == 4 and {c.split(" · ", 1)[1] for c in grid} == {
        "step 1 · seed 1", "step 1 · seed 2", "step final · seed 1", "step final · seed 2"}
    assert "mask" in shown and sum(c.startswith("step ") for c in shown) == 2  # one seed across both checkpoints
    assert any("Generated 4 images" in s.value for s in app.success)


def test_a_folder_that_is_not_a_checkpoint_and_bad_seeds_are_explained(store, tmp_path):
    app = run_page()
    app.text_input(key="gen_controlnet_path").set_value(str(tmp_path))
    app = run_page(app)
    assert any("is not a ControlNet checkpoint" in e.value for e in app.error)
    app.text_input(key="gen_seeds").set_value("1, x")
    app = run_page(app)
    app.button(key="gen_start").click()
    app = run_page(app)
    assert any("seeds: 'x' is not a seed" in e.value for e in app.error)
    assert "gen_job" not in app.session_state


def test_an_edit_changes_the_preview_mask(store):
    app = run_page()
    app.radio(key="gen_edit_op").set_value("paint")
    app = run_page(app)
    app.button(key="gen_edit_add").click()
    app = run_page(app)
    assert "1 edits" in " ".join(e.label for e in app.expander)
    assert app.session_state["gen_edits"][0]["op"] == "paint"


def test_a_tiny_base_from_the_registry_labels_its_images_random_weights(store, trained_run):
    from typer.testing import CliRunner

    from workbench.cli import app as cli
    from workbench.models import TINY_LABEL

    made = CliRunner().invoke(cli, ["--db", store, "models", "tiny", "--only", "tiny-sd", "--no-check"])
    assert made.exit_code == 0, made.output
    app = run_page()
    app.text_input(key="gen_base").set_value("")  # the picker, not the training config's folder
    app = run_page(app)
    assert app.selectbox(key="gen_base_pick").value == "tiny-sd"  # sd15 is missing: the ready tiny one first
    assert any(TINY_LABEL in w.value for w in app.warning)
    app.number_input(key="gen_steps").set_value(1)
    app = run_page(app)
    app.button(key="gen_start").click()
    app = run_page(app)
    job = wait_job_ended(make_engine(store), app.session_state["gen_job"], timeout=240)
    assert job["status"] == "finished", Path(job["log_path"]).read_text()[-3000:]
    app = run_page(app)
    grid = [c for c in captions(app) if c.startswith("#")]
    assert len(grid) == 1 and grid[0].endswith(f"🎲 {TINY_LABEL}"), grid
    assert any(w.value.startswith("#") and TINY_LABEL in w.value for w in app.warning)  # the provenance's mark


def test_a_fresh_session_watches_the_generation_job_already_running(store, trained_run):
    """A reload or a second curator's tab finds the running job in the store and shows its progress."""
    import time

    from workbench.jobs import cancel_job, start_job
    from workbench.settings import get_settings

    engine = make_engine(store)
    info = gen.resolve_controlnet(trained_run.run_dir)
    request = gen.GenerateRequest(base_model=str(trained_run.base_model), controlnets=[str(trained_run.run_dir)],
                                  mask={"kind": "dataset", "image_id": gen.export_images(info)[0]["image_id"]},
                                  seeds=list(range(400)), steps=1)
    job_id = start_job(engine, get_settings(), kind="generate", argv=gen.generate_argv(request))
    try:
        app = run_page()  # a new session: nothing in its state
        deadline = time.monotonic() + 240
        while not any(t.startswith(f"Generation job {job_id}: running — ") and t.endswith("/400 images")
                      for t in (p.proto.text for p in app.get("progress"))):
            assert time.monotonic() < deadline, [p.proto.text for p in app.get("progress")]
            time.sleep(0.5)
            app = run_page(app)
        assert app.session_state["gen_job"] == job_id
        assert app.button(key=f"job_cancel_{job_id}")  # it can be cancelled from here too
    finally:
        cancel_job(engine, job_id, grace_seconds=30)
    app = run_page(app)  # once it has ended, the page still shows that job, not a newer one
    assert any(t.startswith(f"Generation job {job_id}: cancelled") for t in (p.proto.text for p in app.get("progress")))
