"""What every page needs: the shared store engine and a progress bar for library calls."""

from __future__ import annotations

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from db.engine import make_engine
from workbench.progress import ProgressFn
from workbench.settings import Settings


@st.cache_resource(show_spinner=False)
def _engine(url: str, busy_timeout_ms: int) -> Engine:
    return make_engine(url, busy_timeout_ms=busy_timeout_ms)


def open_store(settings: Settings) -> Engine:
    """The store's engine, shared by every session of the app."""
    return _engine(settings.database_url, settings.sqlite_busy_timeout_ms)


def shown_url(url: str) -> str:
    """The database URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"


def progress_bar(bar) -> ProgressFn:
    """A ProgressFn that moves a ``st.progress`` bar."""

    def update(done: int, total: int | None) -> None:
        if total:
            bar.progress(min(done / total, 1.0), text=f"{100 * done // total}%")

    return update
