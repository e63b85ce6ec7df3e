"""A real browser exports the demo on the Export page, starts a tiny training job and sees its loss curve."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from db.engine import dispose_engines, make_engine, session_scope
from workbench.export import list_exports

DEMO_WAIT_MS = 180_000


def _fill(page, label: str, value: str) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(value)
    field.press("Enter")
    page.wait_for_timeout(400)


def _wait_export(db_url: str, timeout: float = 120) -> str:
    engine = make_engine(db_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with session_scope(engine) as session:
                done = [e for e in list_exports(session) if e.status in ("finished", "failed")]
            if done:
                assert done[0].status == "finished", done[0].error
                return done[0].out_dir
            time.sleep(0.5)
    finally:
        dispose_engines()
    pytest.fail("the export did not finish")


@pytest.mark.timeout(300)
def test_export_then_train_and_see_the_loss_curve(browser, demo_app, tiny_sd, tmp_path: Path, monkeypatch) -> None:
    page = browser.new_page()
    page.goto(demo_app.url, wait_until="domcontentloaded")
    page.locator('[data-testid="stMetric"]').nth(2).wait_for(state="visible", timeout=DEMO_WAIT_MS)

    page.goto(f"{demo_app.url}/Export", wait_until="domcontentloaded")
    page.get_by_label("Resolution (short side, px)").wait_for(timeout=60_000)
    _fill(page, "Resolution (short side, px)", "64")
    page.get_by_role("button", name="Export", exact=True).click()
    out_dir = _wait_export(demo_app.db_url)
    assert (Path(out_dir) / "manifest.json").is_file()

    page.goto(f"{demo_app.url}/Train", wait_until="domcontentloaded")
    page.get_by_label("Base model (hub id or diffusers folder)", exact=True).wait_for(timeout=60_000)
    _fill(page, "Base model (hub id or diffusers folder)", str(tiny_sd))
    _fill(page, "Max steps", "3")
    _fill(page, "Batch size", "2")
    _fill(page, "Gradient accumulation", "1")
    extra = page.get_by_label("More settings (key=value per line)", exact=True)
    extra.fill("validation_inference_steps=1\nnum_validation_images=1\nvalidation_loss_samples=1")
    extra.press("Control+Enter")
    page.wait_for_timeout(400)
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Training job").first.wait_for(timeout=30_000)
    # the job panel refreshes itself while the job runs; the loss curve appears with the first metrics
    page.locator(".js-plotly-plot").first.wait_for(timeout=180_000)
    page.get_by_text("3 / 3").first.wait_for(timeout=120_000)
    page.screenshot(path=str(tmp_path / "train.png"), full_page=True)
    assert (Path(demo_app.data_dir) / "train" / Path(out_dir).name / "metrics.jsonl").is_file()
