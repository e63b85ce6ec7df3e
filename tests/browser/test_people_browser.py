"""A real browser decides one flagged image on the People page with the keyboard."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from db.engine import dispose_engines, make_engine, session_scope
from workbench.people.detect import detect_people
from workbench.people.detectors import make_detector
from workbench.people.queue import item_for_image

DEMO_WAIT_MS = 180_000


@pytest.fixture
def app_env() -> dict[str, str]:
    """Sign-in off: the local user, an admin, is kim."""
    return {"WORKBENCH_USER": "kim"}


@pytest.mark.timeout(300)
def test_a_curator_decides_an_image_with_the_keyboard(browser, demo_app, tmp_path: Path) -> None:
    page = browser.new_page()
    page.goto(demo_app.url, wait_until="domcontentloaded")  # Home builds the demo store
    page.locator('[data-testid="stMetric"]').nth(2).wait_for(state="visible", timeout=DEMO_WAIT_MS)
    engine = make_engine(demo_app.db_url)
    try:
        detect_people(engine, "demo", make_detector("annotations"), threshold=0.0)  # flag every image

        page.goto(f"{demo_app.url}/People", wait_until="domcontentloaded")
        page.get_by_text("Deciding as kim").wait_for(timeout=60_000)  # sign-in off: the local admin
        heading = page.locator("h3").filter(has_text="score")
        heading.wait_for(timeout=60_000)
        file_name = heading.inner_text().split(" · ")[0].strip()
        page.locator('[data-testid="stImage"]').first.wait_for(timeout=30_000)

        page.locator("h1").first.click()  # leave the text box: shortcuts do not fire while typing
        page.keyboard.press("a")

        deadline = time.monotonic() + 30
        decided = None
        while time.monotonic() < deadline:
            with session_scope(engine) as session:
                item = item_for_image(session, "demo", file_name)
            if item.status == "decided":
                decided = item
                break
            time.sleep(0.3)
        page.screenshot(path=str(tmp_path / "people.png"), full_page=True)
        assert decided is not None, demo_app.log.read_text(errors="replace")
        assert (decided.decision, decided.curator) == ("ok", "kim")
        page.get_by_text(f"{file_name}: ok (applied)").wait_for(timeout=30_000)  # the page moved on
    finally:
        dispose_engines()
