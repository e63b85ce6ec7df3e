"""Waiting in a real browser for the values a test reads, not for the heading above them: on a
loaded machine Streamlit draws a page in several deltas, and a heading can be seconds ahead of
the numbers under it."""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest

# Every metric on the page as [label, value], read in one go (no element can go stale between).
_METRICS_JS = """labels => {
    const shown = {};
    for (const metric of document.querySelectorAll('[data-testid="stMetric"]')) {
        const label = metric.querySelector('[data-testid="stMetricLabel"]');
        const value = metric.querySelector('[data-testid="stMetricValue"]');
        if (label && value) shown[label.innerText.trim()] = value.innerText.trim();
    }
    const ready = labels.every(l => l in shown && /^-?[\\d,]+$/.test(shown[l]));
    return ready ? shown : null;
}"""


def metric_values(page, labels: Iterable[str], timeout_ms: float) -> dict[str, int]:
    """The page's metrics as label -> integer, once each of ``labels`` shows a whole number."""
    handle = page.wait_for_function(_METRICS_JS, arg=list(labels), timeout=timeout_ms)
    return {label: int(value.replace(",", "")) for label, value in handle.json_value().items()
            if value.replace(",", "").lstrip("-").isdigit()}


def url_contains(page, text: str, timeout_ms: float) -> None:
    """Wait until the page's address holds ``text`` (Streamlit updates query parameters after
    it has drawn the page)."""
    page.wait_for_function("text => window.location.href.includes(text)", arg=text, timeout=timeout_ms)


def _poll(db_url: str, check, timeout: float, what: str):
    """``check(session)`` on the test store, every half second until it returns something truthy."""
    from db.engine import dispose_engines, make_engine, session_scope

    engine = make_engine(db_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with session_scope(engine) as session:
                if found := check(session):
                    return found
            time.sleep(0.5)
    finally:
        dispose_engines()
    pytest.fail(f"{what} did not finish in {timeout:.0f} s")


def demo_imported(db_url: str, timeout: float = 180) -> None:
    """Wait until the demo store's import has finished (Home builds it on the first start)."""
    from sqlalchemy import func, select

    from db.models import ImportRun

    _poll(db_url, lambda s: s.scalar(select(func.count(ImportRun.id)).where(ImportRun.status == "finished")),
          timeout, "the demo import")


def export_finished(db_url: str, timeout: float = 120) -> str:
    """Wait for the first export of the store to end; its folder (it must have finished)."""
    from workbench.export import list_exports

    done = _poll(db_url, lambda s: [(e.status, e.error, e.out_dir) for e in list_exports(s)
                                    if e.status in ("finished", "failed")], timeout, "the export")
    assert done[0][0] == "finished", done[0][1]
    return done[0][2]


_SHOWN_JS = """box => [box.value, box.getAttribute('aria-valuetext'),
                      box.closest('[data-testid="stSelectbox"]').innerText].join(' ')"""


def picked(page, label: str, text: str, timeout_ms: float) -> str:
    """Wait until the selectbox labelled ``label`` shows an option holding ``text``; what it shows."""
    box = page.get_by_role("combobox", name=label)
    deadline = time.monotonic() + timeout_ms / 1000
    shown = ""
    while time.monotonic() < deadline:
        shown = box.evaluate(_SHOWN_JS, timeout=timeout_ms)  # the locator is found afresh each time
        if text in shown:
            return shown
        page.wait_for_timeout(300)
    pytest.fail(f"the selectbox {label!r} shows {shown!r}, not {text!r}")


def alert_saying(page, text: str, timeout_ms: float) -> None:
    """Wait for a message box holding ``text``; when none comes, fail with every box the page shows
    (an error or a warning in its place says why the expected one never came)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.locator('[data-testid="stAlert"]').filter(has_text=text).first.wait_for(timeout=timeout_ms)
    except PlaywrightTimeout:
        shown = page.locator('[data-testid="stAlert"]').all_inner_texts()
        raise AssertionError(f"no message saying {text!r} within {timeout_ms / 1000:.0f} s; shown: {shown}") from None
