"""pages/11_Segment.py through streamlit's AppTest: prediction and training as watched background jobs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.apptest_events import page_store  # noqa: F401
from workbench.segment.tiny import build_tiny_segformer

PAGE = Path(__file__).resolve().parent.parent / "pages" / "11_Segment.py"
CLOTH = ["background", "upper body", "lower body", "full body"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def run(app: AppTest) -> AppTest:
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def wait_for(app: AppTest, condition, timeout: float = 240) -> AppTest:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run(app)
        if condition(app):
            return app
        time.sleep(1)
    pytest.fail(f"not reached in {timeout} s: errors {[e.value for e in app.error]}")


def train_small(app: AppTest, out: Path, steps: int) -> AppTest:
    """Fill the Train tab for a tiny run into ``out`` (64 px, batch 2), start it, wait until it is saved."""
    app.text_input(key="segment_out").set_value(str(out))
    app.number_input(key="segment_resolution").set_value(64)
    app.number_input(key="segment_batch").set_value(2)
    app.number_input(key="segment_steps").set_value(steps)
    next(b for b in app.button if b.label == "Start training").click()
    run(app)
    assert app.session_state["segment_train_job"]
    return wait_for(app, lambda a: any(s.value.startswith("Segmenter saved in") for s in a.success))


@pytest.mark.timeout(400)
def test_prediction_job_stores_masks_listed_per_source(page_store, tmp_path):
    model = tmp_path / "seg"
    build_tiny_segformer(4, model, names=CLOTH)
    app = run(AppTest.from_file(str(PAGE), default_timeout=60))
    assert any("No predicted masks yet" in i.value for i in app.info)
    app.text_input(key="segment_model").set_value(str(model))
    app.checkbox(key="segment_without").uncheck()  # the demo's images all have real masks
    app.selectbox(key="segment_predict_scheme").set_value("cloth-seg")
    next(b for b in app.button if b.label == "Start prediction").click()
    run(app)
    job_id = app.session_state["segment_predict_job"]
    assert any(f"Prediction job {job_id}" in (p.proto.text or "") for p in app.get("progress"))
    wait_for(app, lambda a: any(s.value.startswith("Predicted masks stored") for s in a.success))
    table = next(d.value for d in app.dataframe if "source" in d.value.columns)
    assert table.loc[0, "images"] == 12 and "cloth-seg v1" in table.loc[0, "source"]


@pytest.mark.timeout(400)
def test_training_job_trains_and_shows_validation_iou(page_store, tmp_path):
    base = tmp_path / "base"
    build_tiny_segformer(2, base)
    app = run(AppTest.from_file(str(PAGE), default_timeout=60))
    app.text_input(key="segment_base").set_value(str(base))
    train_small(app, tmp_path / "run", steps=2)
    table = next(d.value for d in app.dataframe if "mIoU" in d.value.columns)
    assert list(table["step"]) == [2] and set(CLOTH) <= set(table.columns)
    assert (tmp_path / "run" / "config.json").is_file()


@pytest.mark.timeout(400)
def test_the_picker_offers_the_ready_tiny_segmenter_first_and_its_masks_are_marked(page_store, tmp_path):
    from db.engine import session_scope
    from workbench.models import TINY_LABEL, add_model
    from workbench.settings import get_settings
    from workbench.tiny import write_tiny_models

    written = write_tiny_models(get_settings().models_dir, names=["tiny-segformer"])
    with session_scope(page_store) as session:
        add_model(session, "tiny-segformer", path=written["tiny-segformer"], kind="segmenter", tiny=True)
    app = run(AppTest.from_file(str(PAGE), default_timeout=60))
    assert app.selectbox(key="segment_model_pick").value == "tiny-segformer"  # the one ready segmenter
    assert any(TINY_LABEL in w.value for w in app.warning), [w.value for w in app.warning]
    app.checkbox(key="segment_without").uncheck()
    next(b for b in app.button if b.label == "Start prediction").click()
    run(app)
    wait_for(app, lambda a: any(s.value.startswith("Predicted masks stored") for s in a.success))
    table = next(d.value for d in app.dataframe if "source" in d.value.columns)
    assert table.loc[0, "images"] == 12
    assert table.loc[0, "source"] == f"tiny-segformer (cloth-seg v1) · {TINY_LABEL}"


@pytest.mark.timeout(400)
def test_training_starts_from_a_segformer_picked_in_the_registry(page_store, tmp_path):
    from db.engine import session_scope
    from workbench.models import add_model
    from workbench.settings import get_settings
    from workbench.tiny import write_tiny_models

    written = write_tiny_models(get_settings().models_dir, names=["tiny-segformer", "tiny-u2net-cloth"])
    with session_scope(page_store) as session:
        for name in written:
            add_model(session, name, path=written[name], kind="segmenter", tiny=True)
    app = run(AppTest.from_file(str(PAGE), default_timeout=60))
    picker = app.selectbox(key="segment_base_pick")
    offered = [label.split(" · ")[0].split(" ")[-1] for label in picker.options]
    assert picker.value == "tiny-segformer" and "segformer-clothes" in offered  # the ready one first
    assert not {"tiny-u2net-cloth", "u2net-cloth-seg"} & set(offered)  # single-file ONNX: nothing to train from
    assert any("tiny-u2net-cloth" in o for o in app.selectbox(key="segment_model_pick").options)  # predicting: yes
    train_small(app, tmp_path / "run", steps=1)
    assert "pretrained_model_name_or_path: tiny-segformer" in (tmp_path / "run" / "segmenter.yaml").read_text()
