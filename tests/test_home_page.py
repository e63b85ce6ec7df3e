"""Home.py through streamlit's AppTest: first-start demo, counts, picker, pipeline table, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from streamlit.testing.v1 import AppTest

from db.engine import make_engine, session_scope
from workbench.datasets import dataset_stats, list_datasets
from workbench.settings import get_settings

HOME = Path(__file__).resolve().parent.parent / "Home.py"
DEMO_IMAGES = 6


@pytest.fixture
def store(app_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated, empty store under tmp_path with a small first-start demo."""
    monkeypatch.setenv("WORKBENCH_DEMO_IMAGES", str(DEMO_IMAGES))
    monkeypatch.setenv("WORKBENCH_IMAGE_CHECK", "header")
    return app_store


def run_home() -> AppTest:
    """Run Home.py once and fail on any exception it raised."""
    app = AppTest.from_file(str(HOME), default_timeout=120).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def metrics(app: AppTest) -> dict[str, int]:
    """The page's metrics as label -> integer."""
    return {m.label: int(str(m.value).replace(",", "")) for m in app.metric}


def get_engine() -> Engine:
    """The engine of the test store."""
    return make_engine(get_settings().database_url)


def stats_of(name: str) -> dict:
    """The store's own counts for a dataset."""
    with session_scope(get_engine()) as session:
        return dataset_stats(session, name)


def test_first_start_imports_the_demo_and_shows_its_counts(store: Path) -> None:
    app = run_home()
    assert not app.error
    assert app.selectbox[0].value == "demo"
    stats = stats_of("demo")
    assert stats["images"] == DEMO_IMAGES
    assert metrics(app) == {
        "Images": stats["images"],
        "Annotations": stats["annotations"],
        "Categories": stats["category_count"],
    }
    assert [s.label for s in app.status] == [f"Demo dataset imported: {DEMO_IMAGES} images, "
                                             f"{stats['annotations']} annotations"]
    assert app.status[0].state == "complete"
    # The bar ends full, counting the demo's rows stored (the real work), not a percentage.
    bar = app.status[0].get("progress")[0].proto
    assert bar.value == 100
    assert bar.text == f"Importing rows: {stats['annotations']}/{stats['annotations']} rows"


def test_pipeline_table_lists_every_step(store: Path) -> None:
    app = run_home()
    table = app.dataframe[0].value
    assert list(table.columns[:4]) == ["step", "progress", "done", "total"]
    assert table.loc[table.step == "imported", "done"].item() == DEMO_IMAGES
    assert {"people flags reviewed", "captions reviewed", "exports", "training jobs"} <= set(table.step)
    assert any("Next:" in info.value for info in app.info)


def test_picker_switches_dataset(store: Path) -> None:
    from workbench.demo import generate_demo
    from workbench.formats import import_imat2019

    app = run_home()
    files = generate_demo(store / "second", n_images=2, seed=7)
    import_imat2019(get_engine(), csv_path=files.csv, labels_path=files.labels,
                    images_dir=files.images_dir, name="second")

    app.run()
    assert app.selectbox[0].options == ["demo", "second"]
    app.selectbox[0].set_value("second").run()
    assert not app.exception
    second = stats_of("second")
    assert second["images"] == 2
    assert metrics(app)["Images"] == second["images"]
    assert metrics(app)["Annotations"] == second["annotations"]


def test_second_start_does_not_reimport(store: Path) -> None:
    run_home()
    run_home()
    with session_scope(get_engine()) as session:
        assert list_datasets(session) == ["demo"]
    assert stats_of("demo")["images"] == DEMO_IMAGES


def test_empty_store_without_demo_says_so(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_DEMO_IMAGES", "0")
    app = run_home()
    assert not app.error
    assert "No datasets yet" in app.info[0].value
    assert not app.metric


@pytest.mark.parametrize("url", ["nosuchdialect://nowhere", "sqlite:///{tmp}/a-file/wb.db"])
def test_unusable_database_is_a_message_not_a_traceback(
    store: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    (store / "a-file").write_text("not a folder")
    monkeypatch.setenv("WORKBENCH_DB_URL", url.format(tmp=store.as_posix()))
    app = run_home()
    assert "Cannot open the database" in app.error[0].value
    assert not app.metric



def test_a_dataset_whose_import_was_killed_shows_as_incomplete_until_reimported(store: Path) -> None:
    """An import run left "running" by a process that is gone (killed) makes the dataset incomplete."""
    import subprocess
    import sys

    from sqlalchemy import select

    from db.models import ImportRun

    run_home()  # the first-start demo
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with session_scope(get_engine()) as session:
        run = session.scalars(select(ImportRun)).one()
        run.status, run.pid, run.pid_started, run.finished_at = "running", int(ended.stdout), None, None
    app = run_home()
    assert len(app.warning) == 1 and "Incomplete dataset" in app.warning[0].value
    assert "import the same files under the name 'demo' again" in app.warning[0].value
    assert stats_of("demo")["import_status"] == "incomplete"
    with session_scope(get_engine()) as session:
        run = session.scalars(select(ImportRun)).one()
        assert (run.status, run.error) == ("failed", "the import's process ended before it finished "
                                                     "(killed, or its machine stopped)")
