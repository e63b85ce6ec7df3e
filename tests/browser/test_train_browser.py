"""A real browser exports the demo on the Export page, starts a tiny training job and sees its loss curve."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.forms import fill as _fill
from tests.browser.forms import start_short_training
from tests.browser.waits import export_finished

DEMO_WAIT_MS = 180_000


@pytest.mark.timeout(300)
def test_export_then_train_and_see_the_loss_curve(browser, demo_app, tiny_sd, tmp_path: Path, monkeypatch) -> None:
    page = browser.new_page()
    page.goto(demo_app.url, wait_until="domcontentloaded")
    page.locator('[data-testid="stMetric"]').nth(2).wait_for(state="visible", timeout=DEMO_WAIT_MS)

    page.goto(f"{demo_app.url}/Export", wait_until="domcontentloaded")
    page.get_by_label("Resolution (short side, px)").wait_for(timeout=60_000)
    _fill(page, "Resolution (short side, px)", "64")
    page.get_by_role("button", name="Export", exact=True).click()
    out_dir = export_finished(demo_app.db_url)
    assert (Path(out_dir) / "manifest.json").is_file()

    page.goto(f"{demo_app.url}/Train", wait_until="domcontentloaded")
    page.get_by_label("Base model (hub id or diffusers folder)", exact=True).wait_for(timeout=60_000)
    _fill(page, "Base model (hub id or diffusers folder)", str(tiny_sd))
    start_short_training(page, 3)
    page.get_by_text("Training job").first.wait_for(timeout=30_000)
    # the job panel refreshes itself while the job runs; the loss curve appears with the first metrics
    page.locator(".js-plotly-plot").first.wait_for(timeout=180_000)
    page.get_by_text("3 / 3").first.wait_for(timeout=120_000)
    page.screenshot(path=str(tmp_path / "train.png"), full_page=True)
    assert (Path(demo_app.data_dir) / "train" / Path(out_dir).name / "metrics.jsonl").is_file()
