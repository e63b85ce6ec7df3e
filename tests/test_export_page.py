"""pages/07_Export.py through streamlit's AppTest: the form, a background export, past exports."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from db.engine import dispose_engines, session_scope
from tests.apptest_events import job_error
from workbench.export import list_exports, read_manifest

PAGE = Path(__file__).resolve().parent.parent / "pages" / "07_Export.py"


@pytest.fixture
def page_store(demo_engine, tmp_path, monkeypatch):
    """The page pointed at a copy of the demo store."""
    monkeypatch.setenv("WORKBENCH_DB_URL", str(demo_engine.url))
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DEMO_IMAGES", "0")
    st.cache_resource.clear()
    yield demo_engine
    st.cache_resource.clear()
    dispose_engines()


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
