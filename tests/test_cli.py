"""The CLI twin of every page action: ``python -m workbench ...``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from db.engine import dispose_engines
from workbench.cli import app
from workbench.rle import mask_to_text
from workbench.taxonomy import BUNDLED_IMAT2019_LABELS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db_url(tmp_path):
    yield f"sqlite:///{(tmp_path / 'cli.db').as_posix()}"
    dispose_engines()


@pytest.fixture
def source(tmp_path) -> dict[str, Path]:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30), "white").save(images / "a.jpg")
    mask = np.zeros((30, 40), bool)
    mask[5:25, 10:30] = True
    csv = tmp_path / "train.csv"
    csv.write_text(
        "ImageId,EncodedPixels,Height,Width,ClassId\n"
        f"a.jpg,{mask_to_text(mask)},30,40,10_3\n"
        "a.jpg,1 2 3,30,40,1\n",
        encoding="utf-8",
    )
    labels = tmp_path / "labels.json"
    shutil.copy(BUNDLED_IMAT2019_LABELS, labels)
    return {"images": images, "csv": csv, "labels": labels}


def _import(db_url: str, source: dict[str, Path], *extra: str):
    return CliRunner().invoke(app, [
        "--db", db_url, "import", "imat2019", "--csv", str(source["csv"]), "--labels",
        str(source["labels"]), "--images", str(source["images"]), "--name", "shop", *extra,
    ])


def test_import_writes_the_report_and_exits_0_with_rejected_rows(db_url, source, tmp_path):
    report_path = tmp_path / "report.json"
    result = _import(db_url, source, "--report", str(report_path))
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert (report["dataset"], report["images"], report["annotations"]) == ("shop", 1, 1)
    assert report["rejected"] == [
        {"line": 3, "image_id": "a.jpg", "reason": "odd number of tokens (3): EncodedPixels must be 'start length' pairs"}
    ]


def test_strict_import_exits_non_zero_having_written_nothing(db_url, source):
    result = _import(db_url, source, "--strict")
    assert result.exit_code == 1
    assert "line 3" in result.output and "nothing was written" in result.output
    stats = CliRunner().invoke(app, ["--db", db_url, "stats", "--dataset", "shop", "--json"])
    assert stats.exit_code == 2 and "no dataset named 'shop'" in stats.output


def test_stats_json_counts_images_annotations_and_categories(db_url, source):
    _import(db_url, source)
    result = CliRunner().invoke(app, ["--db", db_url, "stats", "--dataset", "shop", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["images"], data["annotations"]) == (1, 1)
    assert data["categories"]["dress"] == 1 and len(data["categories"]) == 46
    assert data["attributes"] == {"mini (length)": 1}


def test_unknown_dataset_is_a_clear_error(db_url):
    result = CliRunner().invoke(app, ["--db", db_url, "stats", "--dataset", "nope"])
    assert result.exit_code == 2
    assert "no dataset named 'nope'" in result.output


def test_config_prints_the_database_url_given_by_db(db_url):
    result = CliRunner().invoke(app, ["--db", db_url, "config"])
    assert json.loads(result.output)["database_url"] == db_url


def test_module_entry_point_runs(db_url, source):
    out = subprocess.run(
        [sys.executable, "-m", "workbench", "--db", db_url, "import", "imat2019", "--csv", str(source["csv"]),
         "--labels", str(source["labels"]), "--images", str(source["images"]), "--name", "shop"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["annotations"] == 1
    assert "rejected line 3: odd number of tokens" in out.stderr


def test_demo_counts_images_drawn_then_rows_stored(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["--db", db_url, "demo", "--images", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    bars = result.stderr.replace("\r", "\n")
    # One bar per stage, each ending at its real count (no percent per second).
    assert "demo: drawing images: 100%" in bars and "3/3" in bars
    rows = report["annotations"] + len(report["rejected"])
    assert "demo: importing rows: 100%" in bars and f"{rows}/{rows}" in bars
    assert "%/s" not in bars
