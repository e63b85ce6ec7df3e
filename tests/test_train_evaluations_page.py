"""pages/08_Train.py through AppTest: a run's controllability (mIoU over steps, per-class IoU, worst cases)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import psutil
import pytest
from streamlit.testing.v1 import AppTest

from db.engine import make_engine, session_scope
from db.jobs import Job
from tests.job_waits import wait_job_ended
from tests.test_evaluate import judge  # noqa: F401  (the tiny SegFormer judge fixture)
from workbench import evaluate as ev
from workbench.settings import get_settings

PAGE = Path(__file__).resolve().parent.parent / "pages" / "08_Train.py"
pytestmark = pytest.mark.usefixtures("single_thread")


def _values(data) -> list:
    """A plotly array as a list (plotly writes numeric arrays as base64 ``bdata``)."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), data["dtype"]).tolist()
    return list(data)


def _run_page() -> AppTest:
    app = AppTest.from_file(str(PAGE), default_timeout=120).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_the_train_page_plots_miou_over_the_runs_evaluated_steps(app_store, trained_run, judge, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = get_settings()
    (app_store / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(trained_run.store, app_store / "data" / "wb.db")
    app = _run_page()
    assert any("No evaluation of this run's checkpoints yet" in c.value for c in app.caption)

    engine = make_engine(settings.database_url)
    rows = [ev.evaluate(engine, Path(settings.data_dir), ev.EvaluateRequest(
        checkpoint=str(trained_run.run_dir / f"checkpoint-{step}"), segmenter=str(judge), steps=1, resolution=64,
        limit=1, worst=1, device="cpu")) for step in (1, 2)]
    app = _run_page()
    chart = next(c for c in app.get("plotly_chart") if "mIoU over training steps" in c.proto.spec)
    trace = json.loads(chart.proto.spec)["data"][0]
    assert _values(trace["x"]) == [1, 2] and _values(trace["y"]) == pytest.approx([r.miou for r in rows])
    shown = {m.label: m.value for m in app.metric}
    assert shown["mIoU (step 2)"] == f"{rows[1].miou:.3f}"
    assert shown["Ceiling mIoU"] == f"{rows[1].ceiling_miou:.3f}" and shown["CLIP score"] == "-"
    table = app.dataframe[0].value
    assert list(table["class"]) == list(rows[1].iou)
    images = app.get("image")  # the worst case: mask | generated | segmentation
    assert len(images) == 3 and Path(rows[1].worst_cases[0]["generated"]).is_file()

    # the page's twin of `python -m workbench evaluate --background`: a job that stores step 1 again
    app.selectbox(key="train_eval_1_ckpt").set_value("step 1")
    app.text_input(key="train_eval_1_segmenter").set_value(str(judge))
    app.number_input(key="train_eval_1_limit").set_value(1)
    app.number_input(key="train_eval_1_steps").set_value(1)
    app.number_input(key="train_eval_1_resolution").set_value(64)
    app.button(key="train_eval_1_start").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert "train_eval_1_job" in app.session_state, [e.value for e in app.error]
    job_id = app.session_state["train_eval_1_job"]
    assert any(p.proto.text.startswith(f"Evaluation job {job_id}: ") for p in app.get("progress"))
    with session_scope(engine) as session:
        evaluator = psutil.Process(session.get(Job, job_id).pid)
    evaluator.suspend()  # held, so that a second tab meets it unfinished and follows it
    try:
        other_tab = _run_page()
        assert other_tab.session_state["train_eval_1_job"] == job_id
        assert any(p.proto.text.startswith(f"Evaluation job {job_id}: ") for p in other_tab.get("progress"))
    finally:
        evaluator.resume()
    job = wait_job_ended(engine, job_id, timeout=240)
    assert job["status"] == "finished", Path(job["log_path"]).read_text()[-3000:]
    app.run()  # the page's job watch: its bar full, what was evaluated named
    texts = [p.proto.text for p in app.get("progress")]
    assert f"Evaluation job {job_id}: finished — 1/1 images" in texts, texts
    assert "Evaluated checkpoint-1" in [s.value for s in app.success]
    with session_scope(engine) as session:
        newest = ev.list_evaluations(session, run_dir=trained_run.run_dir, limit=1)[0]
        assert (newest.job_id, newest.checkpoint_step, newest.settings["resolution"]) == (job_id, 1, 64)
    engine.dispose()
