""".streamlit/config.toml as streamlit reads it: the file watcher watches the app's code only."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def app_config(monkeypatch: pytest.MonkeyPatch):
    """Streamlit's config options parsed from the project's .streamlit/config.toml (the folder
    `streamlit run Home.py` starts in), parsed again afterwards for the other tests."""
    from streamlit import config

    monkeypatch.chdir(ROOT)
    config.get_config_options(force_reparse=True)
    yield config
    monkeypatch.undo()
    config.get_config_options(force_reparse=True)


def test_the_watcher_polls_files_instead_of_watching_the_checkout_recursively(app_config) -> None:
    # watchdog would watch Home.py's folder, the whole checkout, recursively.
    from streamlit.watcher.path_watcher import get_default_path_watcher_class
    from streamlit.watcher.polling_path_watcher import PollingPathWatcher

    assert app_config.get_option("server.fileWatcherType") == "poll"
    assert get_default_path_watcher_class() is PollingPathWatcher


def test_the_venv_and_the_data_folder_are_not_watched_but_the_code_is(app_config) -> None:
    from streamlit.watcher.folder_black_list import FolderBlackList

    blacklist = FolderBlackList(app_config.get_option("server.folderWatchBlacklist"))
    for ignored in (".venv/lib/python3.11/site-packages/torch/__init__.py", "venv/lib/x.py",
                    "data/jobs/import-1.json", "data/demo/images/demo_0000.jpg", "exports/demo/x.py"):
        assert blacklist.is_blacklisted(str(ROOT / ignored)), ignored
    for watched in ("Home.py", "pages/01_Import.py", "ui/common.py", "workbench/jobs.py",
                    "workbench/people/review.py", "db/engine.py"):
        assert not blacklist.is_blacklisted(str(ROOT / watched)), watched
