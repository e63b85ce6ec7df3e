"""Shared fixtures: an isolated store per test."""

from __future__ import annotations

import os

# Tests never reach the network: the hub is offline for them and for every process they start
# (a test that needs it reachable or unreachable says so itself).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# pytest.ini runs the suite on two xdist workers: each worker (and every job it starts) gets its share
# of the cores for math threads, so that two torch processes do not each spread over all of them.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, str(max(1, (os.cpu_count() or 1) // workers)))

import pytest  # noqa: E402

from db.engine import dispose_engines, make_engine


BOTH = ("sqlite", "postgresql")


def pytest_configure(config):
    config.addinivalue_line("markers", "both_databases: run the test's store fixtures (db_url, engine, "
                                       "demo_engine, app_store) on SQLite and on PostgreSQL")


def pytest_generate_tests(metafunc):
    """Tests marked ``both_databases`` run once per backend; others on SQLite only, unless
    ``WORKBENCH_TEST_BOTH_DATABASES=1`` asks for every store test on both (a slower, wider check)."""
    marked = metafunc.definition.get_closest_marker("both_databases") or os.environ.get(
        "WORKBENCH_TEST_BOTH_DATABASES") == "1"
    if "db_backend" in metafunc.fixturenames and marked:
        metafunc.parametrize("db_backend", BOTH, indirect=True)


@pytest.fixture
def db_backend(request) -> str:
    """``sqlite`` or ``postgresql``: the backend of this test's store (SQLite unless marked)."""
    backend = getattr(request, "param", "sqlite")
    if backend == "postgresql":
        from tests.pg import ENV, server_url

        if server_url() is None:
            pytest.skip(f"no PostgreSQL: set {ENV} or install the postgresql package")
    return backend


def _store_url(backend: str, sqlite_path, template_key: str = "schema", build=None):
    """A fresh store's URL and its cleanup."""
    if backend == "sqlite":
        return f"sqlite:///{sqlite_path.as_posix()}", dispose_engines
    from tests.pg import drop, fresh_database

    url, name = fresh_database(template_key, build)

    def cleanup() -> None:
        dispose_engines()
        drop(name)

    return url, cleanup


@pytest.fixture
def db_url(db_backend, tmp_path):
    """The URL of a fresh, migrated, empty store (a SQLite file, or a new PostgreSQL database)."""
    url, cleanup = _store_url(db_backend, tmp_path / "store.db")
    yield url
    cleanup()


@pytest.fixture
def engine(db_url):
    """A fresh, migrated store: SQLite in the test's temporary folder (or PostgreSQL, when marked)."""
    eng = make_engine(db_url)
    yield eng
    dispose_engines()


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory):
    """A small demo dataset, generated and imported once per test session (read-only)."""
    from workbench.demo import generate_demo

    root = tmp_path_factory.mktemp("demo")
    files = generate_demo(root / "files", n_images=12, seed=0)
    url = f"sqlite:///{(root / 'template.db').as_posix()}"
    _import_demo(files, url)
    make_engine(url).dispose()
    return root / "template.db", files


def _import_demo(files, url: str) -> None:
    from workbench.datasets import DEMO_NAME
    from workbench.formats.imat2019 import import_imat2019

    import_imat2019(make_engine(url), csv_path=files.csv, labels_path=files.labels,
                    images_dir=files.images_dir, name=DEMO_NAME)


@pytest.fixture
def demo_engine(tmp_path, demo_template, db_backend):
    """A private copy of the demo store (12 images, dataset ``demo``); its files are shared."""
    import shutil

    template_db, files = demo_template
    copy = tmp_path / "demo.db"
    if db_backend == "sqlite":
        shutil.copy(template_db, copy)
    url, cleanup = _store_url(db_backend, copy, "demo", lambda url: _import_demo(files, url))
    yield make_engine(url)
    cleanup()


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
def app_store(tmp_path, tmp_path_factory, monkeypatch, db_backend):
    """Point the app (pages, AppTest, jobs) at an isolated, empty store under ``tmp_path``,
    with Streamlit's cached engine cleared before and after. Paths typed into pages may point
    anywhere in pytest's temporary folders (the tests' own exports, runs and tiny models)."""
    import streamlit as st

    url, cleanup = _store_url(db_backend, tmp_path / "data" / "wb.db")
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_ALLOWED_ROOTS", str(tmp_path_factory.getbasetemp()))
    monkeypatch.setenv("WORKBENCH_DB_URL", url)
    dispose_engines()
    st.cache_resource.clear()
    yield tmp_path
    st.cache_resource.clear()
    cleanup()
from tests.tiny_generation import tiny_openpose, trained_run  # noqa: E402,F401


@pytest.fixture
def demo_app(demo_engine, tmp_path, tmp_path_factory, monkeypatch):
    """Point the app (pages, AppTest) at a private demo store (``demo_engine``, which it yields),
    with Home's demo import off and Streamlit's cached engine cleared before and after. Paths
    typed into pages may point anywhere in pytest's temporary folders."""
    import streamlit as st

    monkeypatch.setenv("WORKBENCH_DB_URL", demo_engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DEMO_IMAGES", "0")
    monkeypatch.setenv("WORKBENCH_ALLOWED_ROOTS", str(tmp_path_factory.getbasetemp()))
    st.cache_resource.clear()
    yield demo_engine
    st.cache_resource.clear()
    dispose_engines()
