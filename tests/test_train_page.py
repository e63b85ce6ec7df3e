"""pages/08_Train.py through AppTest: start a job from an export, watch its metrics, a failed job."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from db.engine import make_engine
from tests.job_waits import wait_job_ended
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


def wait_ended(job_id: int, timeout: float = 120) -> dict:
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


def test_a_failed_job_shows_its_error_log_and_a_resume_button(store, tiny_export):
    app = run_page()
    app = start_from_page(app, tiny_export, str(store / "no-such-model"), store / "out")
    wait_ended(1)
    app = run_page()
    assert any("failed" in e.value for e in app.error)
    assert "pretrained_model_name_or_path" in app.code[0].value  # the log tells why
    assert app.button(key="train_resume_1")


def test_a_folder_that_is_not_an_export_is_a_message(store, tiny_sd, tmp_path):
    app = run_page()
    app = start_from_page(app, tmp_path, str(tiny_sd), store / "out")
    assert "not an export folder" in app.error[0].value
