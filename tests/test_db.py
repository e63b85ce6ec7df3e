"""The store: migrations match the models, SQLite runs with the promised settings."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from db.engine import dispose_engines, make_engine
import db  # noqa: F401  (every area's models)
from db.models import Base


def test_migrations_create_exactly_the_models_schema(engine):
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_sqlite_runs_in_wal_with_foreign_keys_and_a_busy_timeout(engine):
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 10_000


def test_opening_an_existing_store_upgrades_it_in_place(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO curator (name, created_at) VALUES ('ana', '2026-01-01')"))
    dispose_engines()
    again = make_engine(url)
    with again.connect() as connection:
        assert connection.execute(text("SELECT name FROM curator")).scalar() == "ana"
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert "annotation" in inspect(again).get_table_names()
    dispose_engines()
