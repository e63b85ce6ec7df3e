"""A real browser opens Home on a fresh store, waits for the demo import and reads the counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.engine import dispose_engines, make_engine, session_scope
from tests.browser.waits import metric_values
from workbench.datasets import dataset_stats

DEMO_WAIT_MS = 180_000


@pytest.mark.timeout(300)
def test_home_shows_the_demo_counts(browser, demo_app, tmp_path: Path) -> None:
    page = browser.new_page()
    page.goto(demo_app.url, wait_until="domcontentloaded")
    shown = metric_values(page, ("Images", "Annotations", "Categories"), timeout_ms=DEMO_WAIT_MS)
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
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
