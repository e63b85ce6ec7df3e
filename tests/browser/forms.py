"""Filling Streamlit widgets in a real browser: a text or number field, a selectbox option."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError


def fill(page, label: str, value: str) -> None:
    """Type ``value`` into the field labelled ``label`` and submit it (Enter), then let the app rerun."""
    field = page.get_by_label(label, exact=True)
    field.fill(value)
    field.press("Enter")
    page.wait_for_timeout(400)


def pick(page, label: str, option: str, timeout_ms: float = 60_000) -> None:
    """Choose the option whose text holds ``option`` in the selectbox labelled ``label``.

    The list can move while the app reruns under it (an option "not stable"): then it is closed and
    opened again, until the selectbox shows the option."""
    from tests.browser.waits import picked

    box = page.get_by_role("combobox", name=label)
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        try:
            box.click(timeout=10_000)
            page.get_by_role("option", name=re.compile(re.escape(option))).first.click(timeout=10_000)
            picked(page, label, option, 5_000)
            return
        except (PlaywrightTimeoutError, pytest.fail.Exception):
            if time.monotonic() > deadline:
                raise
            page.keyboard.press("Escape")
            page.wait_for_timeout(500)


def start_short_training(page, steps: int) -> None:
    """On the Train page: ``steps`` steps of batch 2, one quick validation image, then Start training."""
    fill(page, "Max steps", str(steps))
    fill(page, "Batch size", "2")
    fill(page, "Gradient accumulation", "1")
    extra = page.get_by_label("More settings (key=value per line)", exact=True)
    extra.fill("validation_inference_steps=1\nnum_validation_images=1\nvalidation_loss_samples=1")
    extra.press("Control+Enter")
    page.wait_for_timeout(400)
    page.get_by_role("button", name="Start training").click()
