"""pages/01_Import.py through streamlit's AppTest: an import job with rejected rows, and clear errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from db.engine import make_engine, session_scope
from db.jobs import Job
from workbench.datasets import dataset_stats, list_datasets
from workbench.jobs import start_job
from workbench.rle import mask_to_text
from workbench.settings import get_settings
from workbench.taxonomy import BUNDLED_IMAT2019_LABELS

PAGE = Path(__file__).resolve().parent.parent / "pages" / "01_Import.py"
IMAT = "iMaterialist 2019/2020 CSV"


@pytest.fixture
def store(app_store: Path) -> Path:
    """An isolated, empty store under tmp_path."""
    return app_store


@pytest.fixture
def shop(tmp_path: Path) -> dict[str, Path]:
    """A tiny iMaterialist dataset: two images, three good rows, two bad ones (lines 3 and 5)."""
    images = tmp_path / "shop" / "images"
    images.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (40, 30), (120, 80, 60)).save(images / name)
    box = np.zeros((30, 40), bool)
    box[5:25, 10:30] = True
    rle = mask_to_text(box)
    csv = tmp_path / "shop" / "train.csv"
    csv.write_text(
        "\n".join([
            "ImageId,EncodedPixels,Height,Width,ClassId",
            f"a.jpg,{rle},30,40,10_3",
            "a.jpg,1 2 3,30,40,10",  # odd number of RLE tokens
            f"b.jpg,{rle},30,40,23",
            f"b.jpg,{rle},30,40,999",  # unknown category
            f"b.jpg,{rle},30,40,31",
        ]) + "\n",
        encoding="utf-8",
    )
    return {"csv": csv, "images": images}


def page() -> AppTest:
    """The import page, run once."""
    app = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def run(app: AppTest) -> AppTest:
    """Run the page once more; it must not end in an exception."""
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def press_import(app: AppTest, timeout: float = 90) -> AppTest:
    """Press Import, then rerun the page (as its fragment's timer would) until the job has ended."""
    before = app.session_state["import_job"] if "import_job" in app.session_state else None
    app.button[0].click()
    run(app)
    if "import_job" not in app.session_state or app.session_state["import_job"] == before:
        return app  # no job was started
    job_id = app.session_state["import_job"]
    assert any(f"Import job {job_id}" in (p.proto.text or "") for p in app.get("progress"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(p.proto.text.startswith(f"Import job {job_id}: {s}") for p in app.get("progress")
                   for s in ("queued", "running", "cancelling")):
            return app
        time.sleep(0.3)
        run(app)
    raise AssertionError(f"import job {job_id} did not end within {timeout} s")


def fill_imat(app: AppTest, name: str, csv: Path, images: Path) -> None:
    """Fill the iMaterialist form (the label file keeps its bundled default)."""
    app.radio(key="import_format").set_value(IMAT)
    app.text_input(key="import_name").input(name)
    app.text_input(key="import_csv").input(str(csv))
    app.text_input(key="import_images").input(str(images))


def test_import_shows_counts_and_rejected_rows(store: Path, shop: dict[str, Path]) -> None:
    app = page()
    assert app.text_input(key="import_labels").value == str(BUNDLED_IMAT2019_LABELS)
    fill_imat(app, "shop", shop["csv"], shop["images"])
    press_import(app)
    assert not app.error, [e.value for e in app.error]
    assert [s.value for s in app.success][0] == "Imported shop"

    shown = {m.label: int(str(m.value).replace(",", "")) for m in app.metric}
    assert shown == {"Images": 2, "Annotations": 3, "New images": 2, "New annotations": 3, "Rejected": 2}
    rejected = app.dataframe[0].value
    assert list(rejected["line"]) == [3, 5]
    assert "odd number of tokens" in rejected["reason"][0]
    assert "unknown category" in rejected["reason"][1]

    download = app.get("download_button")[0]
    assert download.proto.label == "Download report (JSON)"
    report = app.session_state["import_report"]
    assert json.loads(json.dumps(report))["rejected"][1]["line"] == 5

    engine = make_engine(get_settings().database_url)
    with session_scope(engine) as session:
        assert list_datasets(session) == ["shop"]
        stats = dataset_stats(session, "shop")
    assert (stats["images"], stats["annotations"]) == (2, 3)


def test_reimport_adds_nothing(store: Path, shop: dict[str, Path]) -> None:
    app = page()
    fill_imat(app, "shop", shop["csv"], shop["images"])
    press_import(app)
    first = app.session_state["import_job"]
    press_import(app)
    assert app.session_state["import_job"] != first
    assert not app.error, [e.value for e in app.error]
    shown = {m.label: int(str(m.value).replace(",", "")) for m in app.metric}
    assert (shown["Images"], shown["New images"], shown["New annotations"]) == (2, 0, 0)


def test_missing_fields_are_named(store: Path) -> None:
    app = page()
    app.radio(key="import_format").set_value(IMAT).run()
    press_import(app)
    assert "dataset name" in app.error[0].value
    assert "csv path" in app.error[0].value
    assert "import_job" not in app.session_state


def test_unusable_source_is_an_error_and_the_form_keeps_its_values(
    store: Path, shop: dict[str, Path], tmp_path: Path
) -> None:
    app = page()
    missing = tmp_path / "nowhere.csv"
    fill_imat(app, "shop", missing, shop["images"])
    press_import(app)
    job_id = app.session_state["import_job"]
    # the reason in the importer's words, not an exit code; its log wraps; nothing to resume
    assert app.error[0].value.startswith(f"Import job {job_id} failed before its first step: ")
    assert "CSV file not found" in app.error[0].value and str(missing) in app.error[0].value
    assert app.code[0].proto.wrap_lines and "CSV file not found" in app.code[0].value
    assert not [b for b in app.button if b.label in ("Resume", "Run again")]
    assert "import_report" not in app.session_state
    assert app.text_input(key="import_csv").value == str(missing)
    assert app.text_input(key="import_name").value == "shop"


def test_strict_mode_writes_nothing(store: Path, shop: dict[str, Path]) -> None:
    app = page()
    fill_imat(app, "shop", shop["csv"], shop["images"])
    app.checkbox(key="import_strict").check()
    press_import(app)
    assert "nothing was written" in app.error[0].value
    assert "line 3" in app.error[0].value
    engine = make_engine(get_settings().database_url)
    with session_scope(engine) as session:
        assert list_datasets(session) == []


def test_folder_import_rejects_a_corrupt_file(store: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (32, 48), (200, 10, 10)).save(photos / "good.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    app = page()
    app.radio(key="import_format").set_value("Image folder").run()
    assert not app.checkbox  # strict applies to annotation files only
    app.text_input(key="import_name").input("photos")
    app.text_input(key="import_images").input(str(photos))
    press_import(app)
    assert not app.error, [e.value for e in app.error]
    shown = {m.label: int(str(m.value).replace(",", "")) for m in app.metric}
    assert (shown["Images"], shown["Annotations"], shown["Rejected"]) == (1, 0, 1)
    assert "broken.jpg" in " ".join(app.dataframe[0].value["image_id"].astype(str))


def test_the_title_is_drawn_before_the_slow_libraries_load(store: Path) -> None:
    # In a fresh server the store's libraries take seconds to import: the page must show its
    # title (and a spinner) before it imports them, not a blank page. A fresh interpreter
    # records which of them are loaded when the title is drawn.
    import subprocess
    import sys

    probe = (
        "import json, runpy, sys\n"
        "import streamlit as st\n"
        "def title(*args, **kwargs):\n"
        "    print(json.dumps(sorted(m for m in ('pandas', 'sqlalchemy', 'pydantic', 'db', 'ui.common')"
        " if m in sys.modules)))\n"
        "    raise SystemExit(0)\n"
        "st.title = title\n"
        f"runpy.run_path({str(PAGE)!r})\n"
        "raise SystemExit('the page drew no title')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=PAGE.parent.parent, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_a_fresh_session_watches_the_import_already_running_and_shows_its_report(
        store: Path, shop: dict[str, Path]) -> None:
    """A reload (or a second curator's tab) finds the import running in the store, follows it and
    shows its report when it ends."""
    settings = get_settings()
    engine = make_engine(settings.database_url)
    report = Path(settings.data_dir) / "jobs" / "import-elsewhere.json"
    job_id = start_job(engine, settings, kind="import", dataset="shop", details={"report": str(report)},
                       argv=["import", "imat2019", "--name", "shop", "--csv", str(shop["csv"]),
                             "--labels", str(BUNDLED_IMAT2019_LABELS), "--images", str(shop["images"]),
                             "--report", str(report)])
    with session_scope(engine) as session:
        runner = psutil.Process(session.get(Job, job_id).pid)
    runner.suspend()  # held before it starts, so that the page meets it unfinished
    try:
        app = page()  # a new session: nothing in its state
        assert app.session_state["import_job"] == job_id
        assert any(p.proto.text.startswith(f"Import job {job_id}: queued") for p in app.get("progress")), \
            [p.proto.text for p in app.get("progress")]
    finally:
        runner.resume()
    deadline = time.monotonic() + 120
    while not app.success and not app.error:
        assert time.monotonic() < deadline, [p.proto.text for p in app.get("progress")]
        time.sleep(0.3)
        run(app)
    assert [s.value for s in app.success][:1] == ["Imported shop"], [e.value for e in app.error]
    shown = {m.label: int(str(m.value).replace(",", "")) for m in app.metric}
    assert (shown["Images"], shown["Annotations"], shown["Rejected"]) == (2, 3, 2)
