"""A real browser with sign-in on: a curator signs in, decides an image on the People page and finds
the decision under their name on the Audit page (its CSV download); a viewer cannot write."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from db.engine import dispose_engines, make_engine, session_scope
from tests.browser.waits import alert_saying
from tests.signin import add_users, password_of
from workbench.people.detect import detect_people
from workbench.people.detectors import make_detector
from workbench.people.queue import item_for_image

WAIT_MS = 180_000


@pytest.fixture
def app_env() -> dict[str, str]:
    """Sign-in with the store's users."""
    return {"WORKBENCH_SIGN_IN": "local"}


def sign_in(page, name: str) -> None:
    """Fill the sign-in form and submit it."""
    page.get_by_label("User name", exact=True).wait_for(timeout=WAIT_MS)
    page.get_by_label("User name", exact=True).fill(name)
    page.get_by_label("Password", exact=True).fill(password_of(name))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"Signed in as {name}").wait_for(timeout=WAIT_MS)


def open_page(page, label: str) -> None:
    """Go to another page through the sidebar, in the same signed-in session (the sidebar lists
    first pages until "View N more" is pressed)."""
    link = page.locator('[data-testid="stSidebarNav"] a').filter(has_text=label).first
    more = page.get_by_test_id("stSidebarNavViewButton")
    if not link.is_visible() and more.count() and "more" in more.inner_text():
        more.click()
    link.click()


@pytest.mark.timeout(420)
def test_a_curator_decision_is_audited_under_their_name_and_a_viewer_cannot_write(browser, demo_app,
                                                                                 tmp_path: Path) -> None:
    engine = make_engine(demo_app.db_url)
    try:
        add_users(engine, boss="admin", kim="curator", vic="viewer")
        page = browser.new_page()
        page.goto(demo_app.url, wait_until="domcontentloaded")
        sign_in(page, "kim")  # a curator may import: Home builds the demo store now
        page.locator('[data-testid="stMetric"]').nth(2).wait_for(state="visible", timeout=WAIT_MS)
        detect_people(engine, "demo", make_detector("annotations"), threshold=0.0)  # flag every image

        open_page(page, "People")
        heading = page.locator("h3").filter(has_text="score")
        heading.wait_for(timeout=WAIT_MS)
        file_name = heading.inner_text().split(" · ")[0].strip()
        page.locator('[data-testid="stImage"]').first.wait_for(timeout=WAIT_MS)  # the item drawn in full
        page.get_by_role("button", name="All people labelled").click()
        alert_saying(page, f"{file_name}: ok (applied)", WAIT_MS)
        with session_scope(engine) as session:
            item = item_for_image(session, "demo", file_name)
        assert (item.status, item.decision, item.curator) == ("decided", "ok", "kim")

        open_page(page, "Audit")
        download_button = page.get_by_role("button", name="Download CSV")
        download_button.wait_for(timeout=WAIT_MS)
        with page.expect_download(timeout=WAIT_MS) as download:
            download_button.click()
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
        decided = [r for r in rows if r["action"] == "people.decide"]
        assert [(r["user"], r["dataset"]) for r in decided] == [("kim", "demo")]
        assert '"decision_made": "ok"' in decided[0]["after"]
        page.screenshot(path=str(tmp_path / "audit.png"), full_page=True)

        page.get_by_role("button", name="Sign out").click()
        sign_in(page, "vic")
        open_page(page, "People")
        page.get_by_text("deciding needs the curator role").wait_for(timeout=WAIT_MS)
        assert page.get_by_role("button", name="All people labelled").count() == 0
        detection = page.get_by_role("button", name="Start detection")
        if detection.count() == 0:  # inside the closed Detection expander
            page.get_by_text("Detection", exact=True).click()
        assert page.get_by_role("button", name="Start detection").is_disabled()
        page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
        with session_scope(engine) as session:
            decided_now = [i for i in (item_for_image(session, "demo", f"demo_{n:04d}.jpg") for n in range(8))
                           if i is not None and i.status == "decided"]
        assert [i.curator for i in decided_now] == ["kim"]  # the viewer changed nothing
    finally:
        dispose_engines()
