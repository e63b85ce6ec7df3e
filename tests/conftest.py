"""Shared fixtures: an isolated store per test."""

from __future__ import annotations

import pytest

from db.engine import dispose_engines, make_engine


@pytest.fixture
def engine(tmp_path):
    """A fresh, migrated SQLite store in the test's temporary folder."""
    eng = make_engine(f"sqlite:///{(tmp_path / 'store.db').as_posix()}")
    yield eng
    dispose_engines()
