"""Issue 11's first hour in a real browser, on a fresh store: make the tiny test models on the Models
page, caption the demo with CLIP fast (tiny-clip), save a mixing recipe, export with it (the
manifest names it), train on the tiny base and see the loss curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import expect

from db.engine import dispose_engines, make_engine, session_scope
from tests.browser.forms import fill, pick, start_short_training
from tests.browser.waits import demo_imported, export_finished, picked
from workbench.captions.store import list_captions
from workbench.models import list_models
from workbench.settings import get_settings
from workbench.tiny import TINY_MODELS

WAIT_MS = 120_000
RECIPE = "first-hour"


def _store(app):
    return make_engine(app.db_url), get_settings(db_url=app.db_url, data_dir=app.data_dir)


@pytest.mark.timeout(1800)
def test_first_hour_from_tiny_models_to_a_loss_curve(browser, demo_app, tmp_path: Path) -> None:
    page = browser.new_page()
    page.goto(demo_app.url, wait_until="domcontentloaded")  # Home builds the demo store on first start
    demo_imported(demo_app.db_url, timeout=300)

    # Models: make the tiny test models; every one of them is then ready
    page.goto(f"{demo_app.url}/Models", wait_until="domcontentloaded")
    page.get_by_role("button", name="Make tiny test models").click(timeout=WAIT_MS)
    page.get_by_text("Done: the list below is up to date.").wait_for(timeout=900_000)
    engine, settings = _store(demo_app)
    try:
        with session_scope(engine) as session:
            states = {m.spec.name: (m.state, m.tiny) for m in list_models(session, settings)}
    finally:
        dispose_engines()
    assert {n: states.get(n) for n in TINY_MODELS} == {n: ("ready", True) for n in TINY_MODELS}, states

    # Captions: CLIP fast with tiny-clip over the demo's images
    page.goto(f"{demo_app.url}/Captions", wait_until="domcontentloaded")
    page.get_by_text("Generate captions (runs as a background job)").click(timeout=WAIT_MS)
    pick(page, "Captioner", "clip-fast")
    pick(page, "CLIP model", "tiny-clip")
    expect(page.get_by_text("random weights (tiny test model): output from this model is noise").first) \
        .to_be_visible(timeout=WAIT_MS)
    page.get_by_role("button", name="Start captioning job").click()
    page.get_by_text("Captions stored: review them below.").wait_for(timeout=600_000)
    engine, _ = _store(demo_app)
    try:
        with session_scope(engine) as session:
            made = [(c.model, bool((c.extra or {}).get("random_weights")))
                    for c in list_captions(session, "demo", sources=["clip-fast"])]
    finally:
        dispose_engines()
    assert made == [("tiny-clip", True)] * demo_app.demo_images, made

    # Mixing: save a recipe (a new one weighs the sources the demo has captions from)
    page.goto(f"{demo_app.url}/Mixing", wait_until="domcontentloaded")
    fill(page, "Recipe name", RECIPE)
    page.get_by_role("button", name="Save version").click()
    page.get_by_text(f"Saved '{RECIPE}' version 1 for demo").wait_for(timeout=WAIT_MS)

    # Export: with that saved recipe, 64 px
    page.goto(f"{demo_app.url}/Export", wait_until="domcontentloaded")
    fill(page, "Resolution (short side, px)", "64")
    pick(page, "Prompts: mixing recipe", RECIPE)
    page.get_by_role("button", name="Export", exact=True).click()
    out_dir = Path(export_finished(demo_app.db_url, timeout=300))
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["recipe"]["caption_recipe"] == RECIPE, manifest["recipe"]
    used = manifest["sources"]["prompts"]["caption_recipe_version"]
    assert (used["name"], used["version"], used["definition"]["weights"]) == (RECIPE, 1, {"clip-fast": 1.0}), used

    # Train: the tiny base is offered first (sd15 is not on this machine); a few steps at 64 px
    page.goto(f"{demo_app.url}/Train", wait_until="domcontentloaded")
    picked(page, "Base model", "tiny-sd", WAIT_MS)
    fill(page, "Resolution", "64")
    start_short_training(page, 2)
    page.get_by_text("Training job").first.wait_for(timeout=WAIT_MS)
    page.locator(".js-plotly-plot").first.wait_for(timeout=600_000)  # the loss curve, with the first metrics
    page.get_by_text("2 / 2").first.wait_for(timeout=600_000)
    page.screenshot(path=str(tmp_path / "first-hour.png"), full_page=True)
    metrics = Path(demo_app.data_dir) / "train" / out_dir.name / "metrics.jsonl"
    assert any("loss" in json.loads(line) for line in metrics.read_text().splitlines()), metrics.read_text()
