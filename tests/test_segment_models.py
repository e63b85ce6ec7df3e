"""Segmenters picked from the model registry: tiny ones by name after ``models tiny``, their
predictions labelled as random weights, and a missing cloth U2NET failing at once with its fix."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.tiny_models import demo_store_with_tiny_models
from workbench.cli import app
from workbench.models import TINY_LABEL
from workbench.segment.loaders import clear_caches
from workbench.segment.tiny import build_tiny_segformer

CLOTH = ["background", "upper body", "lower body", "full body"]

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny_seg_store(tmp_path_factory, demo_template):
    """A demo store whose models folder got ``models tiny`` for the two tiny segmenters (no cloth U2NET)."""
    root = tmp_path_factory.mktemp("seg-store")
    clear_caches()
    with demo_store_with_tiny_models(root, demo_template[0], ("tiny-segformer", "tiny-u2net-cloth"),
                                     U2NET_HOME=str(root / "no-u2net")) as (db, _data, checked):
        yield db, root, checked
    clear_caches()


def cli(db: str, *args: str):
    return CliRunner().invoke(app, ["--db", db, *args])


def printed_json(result):
    assert result.exit_code == 0, result.output
    text = result.stdout
    return json.loads(text[min(i for i in (text.find("{"), text.find("[")) if i >= 0):])


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i, size in enumerate([(40, 56), (64, 48)]):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_tiny_segmenters_are_registered_and_load(tiny_seg_store):
    db, _root, checked = tiny_seg_store
    assert {(r["name"], r["state"]) for r in checked} == {("tiny-segformer", "ready"), ("tiny-u2net-cloth", "ready")}
    listed = {m["name"]: m for m in printed_json(cli(db, "models", "list", "--kind", "segmenter", "--json"))}
    assert listed["tiny-u2net-cloth"]["location"].endswith("tiny-u2net-cloth/u2net_cloth_seg.onnx")
    assert listed["tiny-segformer"]["tiny"] and listed["tiny-u2net-cloth"]["tiny"]


def test_predict_by_registry_name_stores_cloth_seg_masks_labelled_random_weights(tiny_seg_store, tmp_path):
    db, _root, _ = tiny_seg_store
    summary = printed_json(cli(db, "segment", "predict", "--model", "tiny-segformer", "--dataset", "demo",
                               "--limit", "3"))
    assert summary["predicted"] == 3
    plain = tmp_path / "plain-segformer"  # the same architecture, not marked tiny: a model of the user's
    build_tiny_segformer(4, plain, names=CLOTH)
    assert printed_json(cli(db, "segment", "predict", "--model", str(plain), "--dataset", "demo", "--limit", "2",
                            "--scheme", "cloth-seg"))["predicted"] == 2
    rows = {r["model"]: r for r in printed_json(cli(db, "segment", "sources", "--dataset", "demo", "--json"))}
    tiny = rows["tiny-segformer"]
    assert tiny["scheme"] == "cloth-seg" and tiny["images"] == 3  # the scheme its config records
    assert tiny["label"].endswith(TINY_LABEL)
    assert TINY_LABEL not in rows[str(plain)]["label"]
    listing = cli(db, "segment", "sources", "--dataset", "demo")
    assert f"tiny-segformer (cloth-seg v1) · {TINY_LABEL}" in listing.stdout


def test_the_tiny_cloth_onnx_predicts_a_folder_by_name(tiny_seg_store, photos, tmp_path):
    db, _root, _ = tiny_seg_store
    summary = printed_json(cli(db, "segment", "predict", "--model", "tiny-u2net-cloth", "--folder", str(photos),
                               "--out", str(tmp_path / "masks")))
    assert summary["predicted"] == 2
    for photo in photos.iterdir():
        mask = Image.open((tmp_path / "masks" / photo.name).with_suffix(".png"))
        assert mask.size == Image.open(photo).size and set(np.unique(np.asarray(mask))) <= {0, 1, 2, 3}


def test_a_missing_cloth_u2net_fails_in_seconds_with_the_fix(tiny_seg_store, photos, tmp_path):
    db, root, _ = tiny_seg_store
    started = time.monotonic()
    result = cli(db, "segment", "predict", "--model", "u2net-cloth-seg", "--folder", str(photos),
                 "--out", str(tmp_path / "masks"))
    assert time.monotonic() - started < 5
    assert result.exit_code == 2 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert "'u2net-cloth-seg' is missing" in text and str(root / "no-u2net") in text
    assert ("https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net_cloth_seg.onnx "
            "(md5 2434d1f3cb744e0e49386c906e5a08bb)") in text
    assert "models add u2net-cloth-seg PATH" in text
    assert not (tmp_path / "masks").exists() or not any((tmp_path / "masks").glob("*.png"))
