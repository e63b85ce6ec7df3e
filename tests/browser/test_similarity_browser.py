"""A real browser finds the demo's planted duplicate on the Similarity page and excludes it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from db.curation import CurationDecision
from db.engine import dispose_engines, make_engine, session_scope
from db.models import Image
from tests.browser.conftest import running_app
from tests.browser.waits import demo_imported
from workbench.demo import DUPLICATE_FROM

WAIT_MS = 120_000


@pytest.mark.timeout(900)
def test_a_curator_excludes_the_planted_duplicate(browser, tmp_path: Path) -> None:
    # sign-in off (the default): the single local user, an admin, acts as kim
    with running_app(tmp_path, DUPLICATE_FROM, {"WORKBENCH_USER": "kim"}) as app:
        page = browser.new_page()
        page.goto(app.url, wait_until="domcontentloaded")  # Home builds the demo store
        demo_imported(app.db_url, timeout=400)
        truth = json.loads((app.data_dir / "demo" / "truth.json").read_text())["images"]
        copy, original = next((name, t["duplicate_of"]) for name, t in truth.items() if "duplicate_of" in t)

        page.goto(f"{app.url}/Similarity", wait_until="domcontentloaded")
        page.get_by_text("Group 1").wait_for(timeout=WAIT_MS)
        page.get_by_text(copy, exact=True).wait_for(timeout=WAIT_MS)  # the thumbnails' captions
        page.get_by_text(original, exact=True).wait_for(timeout=WAIT_MS)
        keep = page.get_by_role("button", name="Keep this, exclude the rest").first  # the original: first by name
        expect(keep).to_be_enabled(timeout=WAIT_MS)
        keep.click()
        page.get_by_text(f"Kept {original}").wait_for(timeout=WAIT_MS)
        page.get_by_text("No duplicate group left to review.").wait_for(timeout=WAIT_MS)
        page.screenshot(path=str(tmp_path / "similarity.png"), full_page=True)

        engine = make_engine(app.db_url)
        try:
            deadline, rows = time.monotonic() + 30, set()
            while time.monotonic() < deadline and len(rows) < 2:
                with session_scope(engine) as session:
                    rows = set(session.execute(
                        select(Image.file_name, CurationDecision.decision, CurationDecision.curator)
                        .join(Image, Image.id == CurationDecision.image_id)).all())
                time.sleep(0.3)
            assert rows == {(original, "keep", "kim"), (copy, "exclude", "kim")}, app.log.read_text(errors="replace")
            from workbench.export import ExportRecipe, plan_export

            with session_scope(engine) as session:
                plan = plan_export(session, ExportRecipe(dataset="demo", resolution=64, people="ignore"))
            assert plan.excluded["duplicate: excluded by a curator"] == [copy]
        finally:
            dispose_engines()
