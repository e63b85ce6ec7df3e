"""A real browser opens Home on a fresh store, waits for the demo import and reads the counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.engine import dispose_engines, make_engine, session_scope
from workbench.datasets import dataset_stats

DEMO_WAIT_MS = 180_000


@pytest.mark.timeout(300)
def test_home_shows_the_demo_counts(browser, demo_app, tmp_path: Path) -> None:
    page = browser.new_page()
    page.goto(demo_app.url, wait_until="domcontentloaded")
    metrics = page.locator('[data-testid="stMetric"]')
    metrics.nth(2).wait_for(state="visible", timeout=DEMO_WAIT_MS)
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
    shown = {}
    for i in range(metrics.count()):
        label = metrics.nth(i).locator('[data-testid="stMetricLabel"]').inner_text().strip()
        value = metrics.nth(i).locator('[data-testid="stMetricValue"]').inner_text().strip()
        shown[label] = int(value.replace(",", ""))
    page.screenshot(path=str(tmp_path / "home.png"), full_page=True)

    engine = make_engine(demo_app.db_url)
    try:
        with session_scope(engine) as session:
            stats = dataset_stats(session, "demo")
    finally:
        dispose_engines()
    assert stats["images"] == demo_app.demo_images
    assert shown == {
        "Images": stats["images"],
        "Annotations": stats["annotations"],
        "Categories": stats["category_count"],
    }, demo_app.log.read_text(errors="replace")
