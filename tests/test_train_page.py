"""pages/08_Train.py through AppTest: start a job from an export, watch its metrics, a failed job."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import psutil

import pytest
from streamlit.testing.v1 import AppTest

from db.engine import make_engine, session_scope
from db.jobs import Job
from db.models import utcnow
from tests.job_waits import wait_job_ended
from workbench.jobs import cancel_job, get_job, job_summary
from workbench.settings import get_settings

PAGE = Path(__file__).resolve().parent.parent / "pages" / "08_Train.py"
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def store(app_store: Path) -> Path:
    return app_store


def run_page() -> AppTest:
    app = AppTest.from_file(str(PAGE), default_timeout=120).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def wait_ended(job_id: int, timeout: float = 300) -> dict:
    return wait_job_ended(make_engine(get_settings().database_url), job_id, timeout)


def start_from_page(app: AppTest, export: Path, base: str, out: Path) -> AppTest:
    app.text_input(key="train_export_path").set_value(str(export))
    app.text_input(key="train_base").set_value(base)
    app.text_input(key="train_out").set_value(str(out))
    app.number_input(key="train_steps").set_value(2)
    app.number_input(key="train_batch").set_value(2)
    app.number_input(key="train_accum").set_value(1)
    app.number_input(key="train_ckpt").set_value(1)
    app.number_input(key="train_val").set_value(2)
    app.selectbox(key="train_precision").set_value("no")
    app.checkbox(key="train_cache").uncheck()
    app.text_area(key="train_extra").set_value("validation_inference_steps=2\nvalidation_loss_samples=2")
    app.button(key="train_start").click().run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_start_a_job_and_see_its_loss_curve_and_validation_grid(store, tiny_sd, tiny_export):
    app = run_page()
    assert any("No training jobs yet" in i.value for i in app.info)
    app = start_from_page(app, tiny_export, str(tiny_sd), store / "out")
    assert not app.error, [e.value for e in app.error]
    assert "Training job 1 started" in app.success[0].value
    job = wait_ended(1)
    assert job["status"] == "finished", (store / "data" / "jobs" / "1.log").read_text()[-2000:]

    app = run_page()
    shown = {m.label: m.value for m in app.metric}
    assert shown["Step"] == "2 / 2"
    assert float(shown["Loss"]) > 0
    assert app.get("plotly_chart")  # the loss curve
    assert len(app.get("image")) == 1  # the validation grid of the last step
    assert "checkpoint-2" in " ".join(c.value for c in app.caption)
    assert job["details"]["stage"] == "running the first step"  # the trainer said what it prepared

    # had it failed after its checkpoints, it would resume from the latest one
    engine = make_engine(get_settings().database_url)
    with session_scope(engine) as session:
        get_job(session, 1).status = "failed"
    app = run_page()
    assert not [b for b in app.button if b.label == "Run again"]
    next(b for b in app.button if b.label == "Resume").click().run()
    assert not app.exception, [e.value for e in app.exception]
    with session_scope(engine) as session:
        resumed = job_summary(get_job(session, 2))
    assert resumed["resumed_from"] == 1 and "--resume-from-checkpoint=latest" in resumed["argv"]
    assert app.selectbox(key="train_job").value == 2
    cancel_job(engine, 2, grace_seconds=30)


def test_a_job_that_fails_before_its_first_step_says_why_and_offers_no_resume(store, tiny_export):
    app = run_page()
    missing = store / "no-such-model"
    app = start_from_page(app, tiny_export, str(missing), store / "out")
    wait_ended(1)
    app = run_page()
    error = next(e.value for e in app.error if e.value.startswith("Training job 1"))
    # the reason, in the trainer's words, not "exit code 2"; no promise of a checkpoint
    assert error.startswith(f"Training job 1 failed before its first step: pretrained_model_name_or_path={missing}")
    assert "checkpoint" not in error
    assert app.subheader[0].value.endswith("Job 1: failed")
    assert not any("being prepared" in i.value for i in app.info)
    log = next(c for c in app.code if "pretrained_model_name_or_path" in c.value)
    assert log.proto.wrap_lines
    assert not [b for b in app.button if b.label == "Resume"]
    assert [b.label for b in app.button if b.label == "Run again"] == ["Run again"]


def running_job(engine, **values) -> int:
    """A training job row as the runner leaves it, for what the page shows of it."""
    with session_scope(engine) as session:
        job = Job(**{"kind": "train", "argv": ["train", "run", "--config", "x.yaml"], "status": "running",
                     "heartbeat_at": utcnow(), **values})
        session.add(job)
        session.flush()
        return job.id


def test_a_preparing_job_shows_what_the_trainer_is_doing(store):
    engine = make_engine(get_settings().database_url)
    me = psutil.Process(os.getpid())  # a live process stands for the trainer
    running_job(engine, pid=me.pid, pid_started=me.create_time(),
                details={"output_dir": str(store / "out"), "max_train_steps": 10,
                         "stage": "loading the base model runwayml/stable-diffusion-v1-5"})
    app = run_page()
    assert app.subheader[0].value.endswith("Job 1: running")
    assert any(i.value == "No metrics yet: loading the base model runwayml/stable-diffusion-v1-5…" for i in app.info)


def test_the_picker_and_the_heading_read_the_same_refreshed_job(store):
    engine = make_engine(get_settings().database_url)
    # its process is gone and its heartbeat old: the page finds it dead before drawing either
    running_job(engine, heartbeat_at=utcnow() - timedelta(minutes=5), details={"output_dir": str(store / "out")})
    app = run_page()
    picker = app.selectbox(key="train_job")
    assert picker.format_func(picker.value).startswith("#1 · failed")
    assert app.subheader[0].value.endswith("Job 1: failed")
    assert "ended without reporting" in next(e.value for e in app.error if e.value.startswith("Training job 1"))


def test_the_new_run_form_stays_open_while_its_fields_change(store, tmp_path):
    engine = make_engine(get_settings().database_url)
    running_job(engine, status="failed", details={"output_dir": str(store / "out")})
    app = run_page()
    assert app.expander[0].label == "New training run"
    app.session_state["train_form"] = False  # the user closes it: it stays closed
    app.run()
    assert not app.expander[0].proto.expanded
    app.session_state["train_form"] = True  # and opens it again
    app.run()
    for change in (lambda: app.text_input(key="train_export_path").set_value(str(tmp_path)),
                   lambda: app.number_input(key="train_steps").set_value(7),
                   lambda: app.checkbox(key="train_cache").uncheck()):
        change()
        app.run()
        assert not app.exception, [e.value for e in app.exception]
        assert app.expander[0].proto.expanded


def test_a_folder_that_is_not_an_export_is_a_message(store, tiny_sd, tmp_path):
    app = run_page()
    app = start_from_page(app, tmp_path, str(tiny_sd), store / "out")
    assert "not an export folder" in app.error[0].value
