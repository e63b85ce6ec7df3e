"""Settings: the database URL comes from --db, then WORKBENCH_DB_URL, then data/."""

from __future__ import annotations

from workbench.settings import get_settings


def test_default_database_is_a_sqlite_file_in_the_data_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("WORKBENCH_DB_URL", raising=False)
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))
    assert get_settings().database_url == f"sqlite:///{tmp_path.as_posix()}/workbench.db"


def test_environment_then_explicit_option_take_precedence(monkeypatch):
    monkeypatch.setenv("WORKBENCH_DB_URL", "sqlite:///from-env.db")
    assert get_settings().database_url == "sqlite:///from-env.db"
    assert get_settings(db_url="sqlite:///from-flag.db").database_url == "sqlite:///from-flag.db"
    assert get_settings(db_url=None).database_url == "sqlite:///from-env.db"
