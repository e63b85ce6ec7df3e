"""What every page needs: the shared store engine and a progress bar for library calls."""

from __future__ import annotations

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from db.engine import make_engine
from workbench.progress import ProgressFn, StageFn
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


def staged_progress_bar(bar, stages: int) -> StageFn:
    """A StageFn that moves one ``st.progress`` bar through ``stages`` equal parts, its text
    naming the stage and its count ("Drawing images: 12/64 images")."""
    started: list[str] = []

    def stage(what: str, unit: str) -> ProgressFn:
        index = len(started)
        started.append(what)

        def update(done: int, total: int | None) -> None:
            share = min(done / total, 1.0) if total else 0.0
            bar.progress(min((index + share) / stages, 1.0),
                         text=f"{what.capitalize()}: {done}/{total or '?'} {unit}")

        update(0, None)
        return update

    return stage


def store_or_stop() -> tuple[Settings, Engine]:
    """The settings and the store's engine; a clear message and a stopped page if unusable."""
    from workbench.settings import get_settings

    try:
        settings = get_settings()
        return settings, open_store(settings)
    except Exception as exc:  # shown, not raised: a page must never end in a traceback
        url = shown_url(settings.database_url) if "settings" in locals() else "(invalid settings)"
        st.error(f"Cannot open the database {url}: {type(exc).__name__}: {exc}. Check "
                 "`WORKBENCH_DB_URL` (or `WORKBENCH_DATA_DIR`); `python -m workbench config` prints "
                 "the settings.")
        st.stop()


def datasets_or_stop(engine: Engine) -> list[str]:
    """The stored dataset names; a message and a stopped page when there are none or the store fails."""
    from db.engine import session_scope
    from workbench.datasets import list_datasets

    try:
        with session_scope(engine) as session:
            names = list_datasets(session)
    except Exception as exc:  # shown, not raised
        st.error(f"Cannot read the datasets: {type(exc).__name__}: {exc}")
        st.stop()
    if not names:
        st.info("No datasets yet. Open **Home** (it builds the demo), import one on the **Import** "
                "page, or run `python -m workbench demo`.")
        st.stop()
    return names
