"""A real browser edits a caption on the Captions page, then accepts it; the store has both versions."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.engine import dispose_engines, make_engine, session_scope
from db.models import Image
from tests.browser.waits import demo_imported
from workbench.captions.review import history
from workbench.captions.store import list_captions, save_captions
from workbench.datasets import get_dataset

WAIT_MS = 120_000


@pytest.fixture
def app_env() -> dict[str, str]:
    """Sign-in off: the local user, an admin, is ana (every decision carries that name)."""
    return {"WORKBENCH_USER": "ana"}


@pytest.mark.timeout(300)
def test_edit_then_accept_a_caption(browser, demo_app, tmp_path: Path) -> None:
    page = browser.new_page()
    page.goto(demo_app.url, wait_until="domcontentloaded")  # Home builds the demo store on first start
    demo_imported(demo_app.db_url)
    engine = make_engine(demo_app.db_url)
    try:
        with session_scope(engine) as session:
            dataset = get_dataset(session, "demo")
            image_id = session.scalar(select(func.min(Image.id)).where(Image.dataset_id == dataset.id))
            save_captions(session, dataset.id, [{"image_id": image_id, "source": "blip", "settings_key": "k",
                                                 "model": "tiny", "text": "a person standing"}])
    finally:
        dispose_engines()

    page.goto(f"{demo_app.url}/Captions", wait_until="domcontentloaded")
    area = page.locator("textarea").first
    area.wait_for(timeout=WAIT_MS)
    page.wait_for_function("() => document.querySelector('textarea') && document.querySelector('textarea').value === 'a person standing'", timeout=WAIT_MS)
    area.fill("a person standing in a red dress")
    page.get_by_role("button", name="Save edit").first.click()
    page.get_by_text("edited · v2").wait_for(timeout=WAIT_MS)
    page.get_by_role("button", name="Accept").first.click()
    page.get_by_text("accepted · v3").wait_for(timeout=WAIT_MS)
    page.screenshot(path=str(tmp_path / "captions.png"), full_page=True)

    engine = make_engine(demo_app.db_url)
    try:
        with session_scope(engine) as session:
            caption = list_captions(session, "demo", sources=["blip"])[0]
            versions = [(v.version, v.status, v.text, v.curator) for v in history(session, caption.id)]
    finally:
        dispose_engines()
    assert versions == [(1, "pending", "a person standing", None),
                        (2, "edited", "a person standing in a red dress", "ana"),
                        (3, "accepted", "a person standing in a red dress", "ana")], demo_app.log.read_text(errors="replace")
