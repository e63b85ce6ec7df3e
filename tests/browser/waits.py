"""Waiting in a real browser for the values a test reads, not for the heading above them: on a
loaded machine Streamlit draws a page in several deltas, and a heading can be seconds ahead of
the numbers under it."""

from __future__ import annotations

from collections.abc import Iterable

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
