"""ui/jobs.py: a job's live progress on a page, its Cancel button, its end and its error."""

from __future__ import annotations

import re
import time

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from db.engine import dispose_engines, make_engine
from ui.jobs import progress_text
from workbench.jobs import start_job
from workbench.settings import get_settings


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty store under tmp_path, for the jobs and for the page."""
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DB_URL", f"sqlite:///{(tmp_path / 'jobs.db').as_posix()}")
    st.cache_resource.clear()
    settings = get_settings()
    yield make_engine(settings.database_url), settings
    st.cache_resource.clear()
    dispose_engines()


def watcher(job_id: int, cancellable: bool) -> None:
    """A page that watches one job (AppTest runs this function's source as the script); a Resume /
    Run again button points ``watched`` at the new job."""
    import streamlit as st

    from ui.common import open_store
    from ui.jobs import watch_job
    from workbench.settings import get_settings

    st.session_state.setdefault("watched", job_id)
    job = watch_job(open_store(get_settings()), st.session_state["watched"], label="Demo job", unit=None,
                    cancellable=cancellable, finished=lambda j: f"Demo of job {j['id']} done", restart_key="watched")
    st.caption(f"page saw {job['status']}")


def run(app: AppTest) -> AppTest:
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def poll(app: AppTest, until, timeout: float = 90) -> AppTest:
    """Rerun the page (as the fragment's timer would) until ``until(app)``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until(app):
            return app
        time.sleep(0.3)
        run(app)
    pytest.fail(f"the page did not get there in {timeout} s: {[p.proto.text for p in app.get('progress')]}")


def bar(app: AppTest) -> str:
    return app.get("progress")[0].proto.text


def test_the_cancel_button_stops_a_running_job_and_its_log_is_shown(store):
    engine, settings = store
    job_id = start_job(engine, settings, kind="demo", argv=["demo", "--images", "400"])
    app = run(AppTest.from_function(watcher, args=(job_id, True), default_timeout=60))
    assert bar(app).startswith(f"Demo job {job_id}: ")
    poll(app, lambda a: " — " in bar(a) and "running" in bar(a))  # progress has arrived
    assert bar(app).endswith("% — drawing images")  # the demo's first stage, as a share of its images
    next(b for b in app.button if b.label == "Cancel").click()
    run(app)
    poll(app, lambda a: "cancelled" in bar(a))
    assert app.warning[0].value == f"Demo job {job_id} cancelled"
    assert f"job {job_id}: cancelled" in app.code[0].value
    assert not [b for b in app.button if b.label == "Cancel"]
    assert not [b for b in app.button if b.label in ("Resume", "Run again")]  # a demo would start over
    assert app.caption[0].value == "page saw cancelled"


def test_a_finished_job_shows_its_message_and_a_failed_one_its_error(store):
    engine, settings = store
    done = start_job(engine, settings, kind="demo", argv=["demo", "--images", "2"])
    app = run(AppTest.from_function(watcher, args=(done, False), default_timeout=60))
    poll(app, lambda a: bar(a).startswith(f"Demo job {done}: finished"))
    assert [s.value for s in app.success] == [f"Demo of job {done} done"]
    assert not app.error

    failed = start_job(engine, settings, kind="stats", argv=["stats", "--dataset", "nope"])
    app = run(AppTest.from_function(watcher, args=(failed, False), default_timeout=60))
    poll(app, lambda a: "failed" in bar(a))
    assert app.error[0].value.startswith(f"Demo job {failed} failed before its first step: no dataset named 'nope'")
    assert app.info[0].value.startswith("Fix: `python -m workbench datasets` lists the stored datasets")
    log = app.code[0]
    assert "error: no dataset named 'nope'" in log.value
    assert log.proto.wrap_lines  # long lines wrap instead of running off the edge
    assert not [b for b in app.button if b.label in ("Resume", "Run again")]


def test_a_stopped_job_that_skips_done_work_offers_resume_and_it_continues(store):
    engine, settings = store
    # captions jobs skip the images already done, so a stopped one continues: Resume
    job_id = start_job(engine, settings, kind="captions", argv=["demo", "--images", "400"])
    app = run(AppTest.from_function(watcher, args=(job_id, True), default_timeout=60))
    poll(app, lambda a: re.search(r"running — [1-9]\d*%", bar(a)))  # some work done
    next(b for b in app.button if b.label == "Cancel").click()
    run(app)
    poll(app, lambda a: "cancelled" in bar(a))
    assert not [b for b in app.button if b.label == "Run again"]
    next(b for b in app.button if b.label == "Resume").click()
    run(app)
    resumed = app.session_state["watched"]
    assert resumed != job_id and bar(app).startswith(f"Demo job {resumed}: ")
    from workbench.jobs import cancel_job

    cancel_job(engine, resumed, grace_seconds=10)


def test_progress_text_counts_or_shows_a_percentage():
    job = {"id": 7, "status": "running", "done": 30, "total": 120, "message": ""}
    assert progress_text(job, "Export job", "images") == (0.25, "Export job 7: running — 30/120 images")
    assert progress_text(job, "Import job", None) == (0.25, "Import job 7: running — 25%")
    assert progress_text({**job, "total": None, "message": "loading"}, "Job", "") == (0.0, "Job 7: running — loading")
