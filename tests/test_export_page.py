"""pages/07_Export.py through streamlit's AppTest: the form, a background export, past exports."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from tests.apptest_events import job_error
from workbench.export import list_exports, read_manifest

PAGE = Path(__file__).resolve().parent.parent / "pages" / "07_Export.py"


@pytest.fixture
def page_store(demo_app):
    """The page pointed at a copy of the demo store."""
    return demo_app


def run(app: AppTest) -> AppTest:
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def fill(app: AppTest, out: Path, resolution: int = 64) -> None:
    app.number_input(key="export_resolution").set_value(resolution)
    app.text_input(key="export_out").set_value(str(out))


def press_export(app: AppTest) -> AppTest:
    next(b for b in app.button if b.label == "Export").click()
    return run(app)


def test_export_button_runs_a_background_job_and_lists_it(page_store, tmp_path):
    app = run(AppTest.from_file(str(PAGE), default_timeout=60))
    assert app.selectbox(key="export_dataset").value == "demo"
    assert app.selectbox(key="export_scheme").value == "body-parts"
    assert any("No export of this dataset yet" in i.value for i in app.info)
    out = tmp_path / "exports" / "demo-64"
    fill(app, out)
    app.radio(key="export_format").set_value("controlnet")
    press_export(app)
    job_id = app.session_state["export_job"]
    assert any(f"Export job {job_id}" in (p.proto.text or "") for p in app.get("progress"))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        run(app)
        if any(s.value.startswith("Exported to") for s in app.success):
            break
        time.sleep(0.5)
    assert any(s.value == f"Exported to {out.resolve()}" for s in app.success), [e.value for e in app.error]
    run(app)
    table = app.dataframe[0].value
    assert table.loc[0, "status"] == "finished" and table.loc[0, "format"] == "controlnet"
    images = read_manifest(out)["counts"]["images"]
    assert table.loc[0, "images"] == images
    assert [m.value for m in app.metric][0] in (images, str(images))
    with session_scope(page_store) as session:
        assert [e.status for e in list_exports(session, "demo")] == ["finished"]


def test_bad_requests_are_messages_and_start_nothing(page_store, tmp_path):
    app = run(AppTest.from_file(str(PAGE), default_timeout=60))
    fill(app, tmp_path, resolution=100)  # tmp_path exists; 100 is not a multiple of 8
    press_export(app)
    assert "not a multiple of 8" in app.error[0].value
    fill(app, tmp_path, resolution=64)
    press_export(app)
    assert "already exists" in app.error[0].value
    assert "export_job" not in app.session_state


def wait_for_export(app: AppTest, out: Path) -> None:
    """Re-run the page until its export job has written ``out``."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not any(s.value.startswith("Exported to") for s in app.success):
        time.sleep(0.5)
        run(app)
    assert any(s.value == f"Exported to {out.resolve()}" for s in app.success), [e.value for e in app.error]


def test_the_datasets_latest_saved_recipe_is_the_default_and_the_manifest_names_it(page_store, tmp_path):
    from workbench.captions.mixing import MixRecipe, save_recipe

    with session_scope(page_store) as session:
        save_recipe(session, "elsewhere", MixRecipe(parts=["dataset"]), "ana")  # saved for no dataset
        save_recipe(session, "tagged", MixRecipe(parts=["trigger", "dataset"], trigger_word="fshn"), "ana",
                    dataset="demo")
    app = run(AppTest.from_file(str(PAGE), default_timeout=60))
    picker = app.selectbox(key="export_caption_recipe_demo")
    assert picker.value == "tagged"
    assert picker.options == ["(dataset prompt, no recipe)", "elsewhere", "tagged"]
    out = tmp_path / "exports" / "tagged"
    fill(app, out)
    press_export(app)
    wait_for_export(app, out)
    manifest = read_manifest(out)
    assert manifest["recipe"]["caption_recipe"] == "tagged"
    assert (manifest["sources"]["prompts"]["caption_recipe"],
            manifest["sources"]["prompts"]["caption_recipe_version"]["version"]) == ("tagged", 1)
    prompts = [line for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert prompts and all('"text": "fshn, ' in line for line in prompts)


@pytest.fixture
def undecided(page_store):
    """Two demo images flagged and not decided; their file names."""
    from sqlalchemy import select

    from db.models import Image
    from workbench.people.queue import flag_image

    with session_scope(page_store) as session:
        rows = session.execute(select(Image.id, Image.file_name).order_by(Image.file_name).limit(2)).all()
        for image_id, _ in rows:
            flag_image(session, image_id, "ana")
    return [name for _, name in rows]


def test_undecided_flags_warn_and_wait_refuses_to_start(page_store, tmp_path, undecided):
    app = run(AppTest.from_file(str(PAGE), default_timeout=60))
    assert app.radio(key="export_undecided").value == "exclude"
    assert any("2 flagged image(s) of demo are not decided yet: they are left out" in w.value for w in app.warning)
    app.radio(key="export_undecided").set_value("wait")
    fill(app, tmp_path / "out")
    press_export(app)
    assert "2 flagged image(s) are not decided yet" in app.error[0].value
    assert "export_job" not in app.session_state and not (tmp_path / "out").exists()


def test_undecided_include_from_the_page_is_recorded_in_the_manifest(page_store, tmp_path, undecided):
    app = run(AppTest.from_file(str(PAGE), default_timeout=60))
    app.radio(key="export_undecided").set_value("include")
    out = tmp_path / "out"
    fill(app, out)
    run(app)
    assert any("they are exported as they are" in w.value for w in app.warning)
    press_export(app)
    wait_for_export(app, out)
    manifest = read_manifest(out)
    assert manifest["recipe"]["undecided"] == "include"
    assert manifest["sources"]["people"]["undecided_images"] == 2
    assert set(undecided) <= {i["file_name"] for i in manifest["items"]}


def test_an_export_that_fails_shows_its_reason_and_no_resume(page_store, tmp_path):
    app = run(AppTest.from_file(str(PAGE), default_timeout=60))
    fill(app, tmp_path / "exports" / "too-strict")
    app.number_input(key="export_min_size").set_value(64 * 1000)  # no demo image is that large
    press_export(app)
    job_id = app.session_state["export_job"]
    error = job_error(app, f"Export job {job_id}")
    assert error.startswith(f"Export job {job_id} failed before its first step: dataset 'demo': no image left "
                            "after the filters")
    assert "loosen them" in error
    assert next(c for c in app.code if "no image left" in c.value).proto.wrap_lines
    assert not [b for b in app.button if b.label in ("Resume", "Run again")]


def test_the_repairs_choice_goes_into_the_export_job(page_store, tmp_path):
    import json

    from workbench.jobs import list_jobs

    app = run(AppTest.from_file(str(PAGE), default_timeout=60))
    assert app.radio(key="export_repaired").value == "exclude"  # repairs are used only when asked
    fill(app, tmp_path / "exports" / "repaired")
    app.radio(key="export_repaired").set_value("include")
    press_export(app)
    with session_scope(page_store) as session:
        [job] = list_jobs(session, kind="export")
    recipe = json.loads(job.argv[job.argv.index("--recipe-json") + 1])
    assert recipe["repaired"] == "include"
    from workbench.jobs import cancel_job

    cancel_job(page_store, job.id, grace_seconds=10)
