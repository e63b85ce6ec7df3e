"""Every page opens the store the same way: a clear message, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest


PAGES = Path(__file__).resolve().parent.parent / "pages"
DATASET_PAGES = ["02_Explore.py", "03_Inspect.py", "04_People.py", "05_Captions.py", "06_Mixing.py",
                 "07_Export.py"]


@pytest.fixture
def store_at(app_store, monkeypatch):
    def point(url: str) -> None:
        monkeypatch.setenv("WORKBENCH_DB_URL", url)

    return point


@pytest.mark.parametrize("page", DATASET_PAGES)
def test_a_page_on_an_empty_store_says_how_to_get_a_dataset(store_at, tmp_path, page):
    store_at(f"sqlite:///{(tmp_path / 'empty.db').as_posix()}")
    app = AppTest.from_file(str(PAGES / page), default_timeout=60).run()
    assert not app.exception
    assert any("No datasets yet" in i.value for i in app.info)


@pytest.mark.parametrize("page", ["05_Captions.py", "01_Import.py"])
def test_an_unusable_store_is_a_message_naming_the_fix(store_at, tmp_path, page):
    (tmp_path / "a-folder").mkdir()
    store_at(f"sqlite:///{(tmp_path / 'a-folder').as_posix()}")  # a folder is no database file
    app = AppTest.from_file(str(PAGES / page), default_timeout=60).run()
    assert not app.exception
    assert "Cannot open the database" in app.error[0].value and "WORKBENCH_DB_URL" in app.error[0].value
