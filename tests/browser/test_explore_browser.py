"""A real browser: EDA -> click a category bar -> its gallery -> the inspector -> toggle a category."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.engine import dispose_engines, make_engine, session_scope
from db.models import Annotation, Category, Image
from tests.browser.waits import url_contains

DEMO_WAIT_MS = 180_000
STEP_MS = 60_000


def images_with(db_url: str, category: str) -> list[str]:
    """File names of the demo images with a mask of ``category``, from the store."""
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as session:
            return sorted(set(session.scalars(
                select(Image.file_name).join(Annotation, Annotation.image_id == Image.id)
                .join(Category, Category.id == Annotation.category_id)
                .where(Category.name == category))))
    finally:
        dispose_engines()


def masks_of(db_url: str, file_name: str) -> int:
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as session:
            return session.scalar(select(func.count(Annotation.id)).join(Image)
                                  .where(Image.file_name == file_name))
    finally:
        dispose_engines()


@pytest.mark.timeout(300)
def test_click_a_bar_see_its_gallery_inspect_and_toggle(browser, demo_app, tmp_path: Path) -> None:
    page = browser.new_page()
    # Home builds the demo on the first visit; the Explore page needs it.
    page.goto(demo_app.url, wait_until="domcontentloaded")
    page.locator('[data-testid="stMetric"]').nth(2).wait_for(state="visible", timeout=DEMO_WAIT_MS)

    page.goto(f"{demo_app.url}/Explore", wait_until="domcontentloaded")
    bars = page.locator(".st-key-chart_categories .js-plotly-plot .barlayer .point path")
    bars.first.wait_for(state="visible", timeout=STEP_MS)
    # Every bar carries its category's name (plotly's own ticks skipped every other one).
    labels = page.locator(".st-key-chart_categories .js-plotly-plot .yaxislayer-above .ytick text")
    assert labels.count() == bars.count() > 1
    assert len({t.strip() for t in labels.all_text_contents()}) == bars.count()
    bars.last.click(force=True)  # the top bar: the most frequent category

    heading = page.get_by_text(re.compile(r"^Gallery: images with a .+ mask \(\d+\)$"))
    heading.wait_for(timeout=STEP_MS)
    match = re.match(r"Gallery: images with a (.+) mask \((\d+)\)", heading.inner_text().strip())
    assert match, heading.inner_text()
    category, count = match.group(1), int(match.group(2))
    expected = images_with(demo_app.db_url, category)
    assert count == len(expected) > 0, demo_app.log.read_text(errors="replace")
    captions = page.locator('[data-testid="stImageCaption"]')
    captions.nth(len(expected) - 1).wait_for(timeout=STEP_MS)
    assert [c.inner_text().strip() for c in captions.all()] == expected
    page.screenshot(path=str(tmp_path / "explore.png"), full_page=True)

    page.get_by_role("button", name="Inspect").first.click()
    page.get_by_role("heading", name="Inspect").wait_for(timeout=STEP_MS)
    first = expected[0]
    page.get_by_text(first, exact=False).first.wait_for(timeout=STEP_MS)
    url_contains(page, f"image={first}", timeout_ms=STEP_MS)  # the address follows the drawn page
    n = masks_of(demo_app.db_url, first)
    shown = page.get_by_text(f"{n} of {n} masks shown")
    shown.wait_for(timeout=STEP_MS)

    toggle = page.locator('[data-testid="stCheckbox"]').filter(has_text=category).first
    toggle.click()
    page.get_by_text(re.compile(rf"^\d+ of {n} masks shown$")).filter(
        has_not_text=f"{n} of {n}").wait_for(timeout=STEP_MS)
    page.screenshot(path=str(tmp_path / "inspect.png"), full_page=True)
    assert not page.get_by_text("Traceback").count()
