"""pages/09_Models.py through streamlit's AppTest: the list, adding a folder, the tiny models button."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest
from streamlit.testing.v1 import AppTest

from db.engine import make_engine, session_scope
from db.jobs import Job
from workbench.models import KINDS, TINY_LABEL
from workbench.settings import get_settings
from workbench.tiny.captioners import save_tiny_blip

PAGE = Path(__file__).resolve().parent.parent / "pages" / "09_Models.py"


@pytest.fixture
def page_store(app_store, monkeypatch):
    """The page on an empty store whose models folder and caches are empty."""
    for name, folder in (("HF_HUB_CACHE", "hf-cache"), ("TORCH_HOME", "torch"), ("U2NET_HOME", "u2net")):
        monkeypatch.setenv(name, str(app_store / folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return app_store


def run(app: AppTest) -> AppTest:
    """One run of the page, which must not raise."""
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def tables(app: AppTest) -> dict[str, object]:
    """Each kind's table, by the kind's label."""
    return {e.label.split(" · ")[0]: e for e in app.expander if " · " in e.label}


def ready_count(app: AppTest) -> str:
    return str(app.metric[0].value)


def test_adding_a_folder_lists_it_with_its_place(page_store, tmp_path):
    app = run(AppTest.from_file(str(PAGE), default_timeout=60))
    assert ready_count(app).startswith("0 of")
    folder = save_tiny_blip(tmp_path / "mine")
    app.text_input(key="models_add_name").set_value("my-blip")
    app.text_input(key="models_add_path").set_value(str(folder))
    next(b for b in app.button if b.label == "Add").click()
    run(app)
    assert any("my-blip added as BLIP" in s.value for s in app.success), [e.value for e in app.error]
    assert ready_count(app).startswith("1 of")
    frames = [d.value for d in app.dataframe]
    row = next(f[f["name"] == "my-blip"] for f in frames if "my-blip" in set(f["name"]))
    assert row["location"].iloc[0] == str(folder.resolve())
    missing = next(f for f in frames if "sd15" in set(f["name"]))
    assert "hf download" in missing[missing["name"] == "sd15"]["fix"].iloc[0] or "huggingface-cli" in \
        missing[missing["name"] == "sd15"]["fix"].iloc[0]


@pytest.mark.timeout(420)
def test_the_tiny_models_button_makes_every_kind_ready(page_store):
    app = run(AppTest.from_file(str(PAGE), default_timeout=60))
    next(b for b in app.button if b.label == "Make tiny test models").click()
    run(app)
    job_id = app.session_state["models_job"]
    with session_scope(make_engine(get_settings().database_url)) as session:
        maker = psutil.Process(session.get(Job, job_id).pid)
    maker.suspend()  # held, so that a second tab meets it unfinished
    try:
        other_tab = run(AppTest.from_file(str(PAGE), default_timeout=60))
        assert other_tab.session_state["models_job"] == job_id
        assert any(p.proto.text.startswith(f"Tiny models job {job_id}: ") for p in other_tab.get("progress"))
    finally:
        maker.resume()
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        run(app)
        if any(s.value.startswith("Done") for s in app.success) or app.error:
            break
        time.sleep(1)
    assert any(s.value.startswith("Done") for s in app.success), ([e.value for e in app.error], job_id)
    run(app)
    assert set(tables(app)) == {k.label for k in KINDS.values()}
    for label, expander in tables(app).items():
        assert "✅" in expander.label, label
    frames = [d.value for d in app.dataframe]
    states = {n: s for f in frames for n, s in zip(f["name"], f["state"])}
    assert all(states[n] == "ready · tiny" for n in states if n.startswith("tiny-")), states
    # the Train page now offers the tiny base first (sd15 is missing), marked as random weights
    train = run(AppTest.from_file(str(PAGE.parent / "08_Train.py"), default_timeout=60))
    assert train.selectbox(key="train_base_pick").value == "tiny-sd"
    assert any(TINY_LABEL in w.value for w in train.warning), [w.value for w in train.warning]
