"""A real browser imports an iMaterialist CSV large enough for the parallel parser from the Import
page: the import runs as a job, so its spawned workers start from the job's process and never
re-run the page script (Streamlit makes the page ``__main__``, which spawned workers re-import by
path); the page follows the job and shows the report when it ends, without a reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from db.engine import dispose_engines, make_engine, session_scope
from workbench.datasets import dataset_stats
from tests.browser.waits import metric_values
from workbench.formats.imat2019 import PARALLEL_MIN_BYTES

HEIGHT, WIDTH = 800, 600
REPORT_METRICS = ("Images", "Annotations", "New images", "New annotations", "Rejected")


def write_large_csv(path: Path) -> int:
    """A train.csv just over the parallel parser's threshold: garment masks with one run per
    covered column (rows of a few kilobytes, as in the real file); returns the row count."""
    rows = ["ImageId,EncodedPixels,Height,Width,ClassId"]
    size, i = 0, 0
    while size < PARALLEL_MIN_BYTES + 1024 * 1024:
        x0, top = (i * 7) % 200, 100 + (i * 13) % 300
        runs = " ".join(f"{col * HEIGHT + top + 1} {200 + col % 50}" for col in range(x0, x0 + 300))
        row = f"img_{i // 8:05d}.jpg,{runs},{HEIGHT},{WIDTH},{i % 27}"
        rows.append(row)
        size += len(row) + 1
        i += 1
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return i


def _fill(page, label: str, value: str) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(value)
    field.press("Enter")
    page.wait_for_timeout(400)


@pytest.mark.timeout(300)
def test_a_large_import_runs_as_a_job_and_the_page_shows_its_report(browser, demo_app, tmp_path: Path) -> None:
    csv = tmp_path / "shop" / "train.csv"
    (tmp_path / "shop" / "images").mkdir(parents=True)
    n_rows = write_large_csv(csv)
    assert csv.stat().st_size >= PARALLEL_MIN_BYTES

    page = browser.new_page()
    page.goto(f"{demo_app.url}/Import", wait_until="domcontentloaded")
    page.get_by_label("Dataset name", exact=True).wait_for(timeout=60_000)
    _fill(page, "Dataset name", "shop")
    _fill(page, "train.csv", str(csv))
    _fill(page, "Images folder", str(tmp_path / "shop" / "images"))
    page.get_by_role("combobox", name="Image check").click()
    page.get_by_role("option", name="none", exact=True).click()  # there are no photos: trust the CSV
    page.wait_for_timeout(400)
    page.get_by_role("button", name="Import", exact=True).click()

    # Wait for the report's numbers themselves: the heading above them can render seconds earlier.
    shown = metric_values(page, REPORT_METRICS, timeout_ms=240_000)
    page.get_by_text("Imported shop").wait_for(timeout=30_000)
    # A page script run outside a session (in a worker) logs this warning for each st call.
    assert "missing ScriptRunContext" not in demo_app.log.read_text(errors="replace")
    log = next((demo_app.data_dir / "jobs").glob("*.log")).read_text(errors="replace")
    page.screenshot(path=str(tmp_path / "import.png"), full_page=True)
    assert page.get_by_text("Report: shop").count() == 1, log
    assert shown["Annotations"] == shown["New annotations"] == n_rows, log
    assert shown["Rejected"] == 0, log
    assert "BrokenProcessPool" not in log and "finished" in log

    engine = make_engine(demo_app.db_url)
    try:
        with session_scope(engine) as session:
            stats = dataset_stats(session, "shop")
    finally:
        dispose_engines()
    assert (stats["images"], stats["annotations"]) == (shown["Images"], n_rows)
    report = json.loads(next((demo_app.data_dir / "jobs").glob("import-*.json")).read_text())
    assert report["new_annotations"] == n_rows
