"""Shared fixtures: an isolated store per test."""

from __future__ import annotations

import os

# Tests never reach the network: the hub is offline for them and for every process they start
# (a test that needs it reachable or unreachable says so itself).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from db.engine import dispose_engines, make_engine


@pytest.fixture
def engine(tmp_path):
    """A fresh, migrated SQLite store in the test's temporary folder."""
    eng = make_engine(f"sqlite:///{(tmp_path / 'store.db').as_posix()}")
    yield eng
    dispose_engines()


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory):
    """A small demo dataset, generated and imported once per test session (read-only)."""
    from workbench.datasets import DEMO_NAME
    from workbench.demo import generate_demo
    from workbench.formats.imat2019 import import_imat2019

    root = tmp_path_factory.mktemp("demo")
    files = generate_demo(root / "files", n_images=12, seed=0)
    url = f"sqlite:///{(root / 'template.db').as_posix()}"
    eng = make_engine(url)
    import_imat2019(eng, csv_path=files.csv, labels_path=files.labels, images_dir=files.images_dir, name=DEMO_NAME)
    eng.dispose()
    return root / "template.db", files


@pytest.fixture
def demo_engine(tmp_path, demo_template):
    """A private copy of the demo store (12 images, dataset ``demo``); its files are shared."""
    import shutil

    template_db, _files = demo_template
    copy = tmp_path / "demo.db"
    shutil.copy(template_db, copy)
    eng = make_engine(f"sqlite:///{copy.as_posix()}")
    yield eng
    dispose_engines()


@pytest.fixture
def demo_files(demo_template):
    """Paths of the demo dataset's files (``DemoFiles``: images_dir, csv, labels, truth)."""
    return demo_template[1]


# Tiny Stable Diffusion and export folders for the training tests (session-built, read-only).
from tests.tiny_models import (  # noqa: E402,F401
    single_thread, tiny_export, tiny_inpaint_dir, tiny_sam_dir, tiny_sd, tiny_sdxl,
)


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Undo AppTest's side effect: Streamlit installs each page script as ``__main__`` and never
    puts the old one back, and spawned worker processes re-import ``__main__`` by path."""
    import sys

    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture
def app_store(tmp_path, monkeypatch):
    """Point the app (pages, AppTest, jobs) at an isolated, empty store under ``tmp_path``,
    with Streamlit's cached engine cleared before and after."""
    import streamlit as st

    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DB_URL", f"sqlite:///{(tmp_path / 'data' / 'wb.db').as_posix()}")
    dispose_engines()
    st.cache_resource.clear()
    yield tmp_path
    st.cache_resource.clear()
    dispose_engines()
from tests.tiny_generation import tiny_openpose, trained_run  # noqa: E402,F401
