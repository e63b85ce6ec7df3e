"""Cloth segmenters: tiny SegFormer and tiny cloth-U2NET stand-in predict, train, resume, store, export."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from db.engine import session_scope
from db.models import Annotation
from db.segment import PredictedAnnotation
from workbench.segment.loaders import SegmentError, clear_caches
from workbench.segment.predict import SegformerSegmenter, open_segmenter, predict_mask
from workbench.segment.tiny import build_tiny_cloth_onnx, build_tiny_segformer, tiny_segformer_config

CLOTH = ["background", "upper body", "lower body", "full body"]

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clear_caches()
    yield
    clear_caches()


@pytest.fixture(scope="module")
def tiny_segformer(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("segformer")
    build_tiny_segformer(4, folder, names=CLOTH)
    return folder


@pytest.fixture(scope="module")
def cloth_onnx(tmp_path_factory) -> Path:
    return build_tiny_cloth_onnx(tmp_path_factory.mktemp("u2net") / "u2net_cloth_seg.onnx")


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(40, 56), (64, 48), (33, 70)]):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


# -- predictors ------------------------------------------------------------------------------------
def test_segformer_predicts_label_maps_of_each_photos_size_in_the_schemes_values(tiny_segformer, photos):
    images = [Image.open(p).convert("RGB") for p in sorted(photos.iterdir())]
    segmenter = open_segmenter(str(tiny_segformer), resolution=64, device="cpu")
    maps = segmenter.predict(images)
    assert [m.shape for m in maps] == [(im.size[1], im.size[0]) for im in images]
    assert all(m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1, 2, 3} for m in maps)
    # one photo at a time gives the same maps as the batch
    assert all(np.array_equal(a, segmenter.predict([im])[0]) for a, im in zip(maps, images))


def test_a_model_trained_on_another_scheme_is_refused_by_name(tiny_segformer, photos):
    image = Image.open(next(photos.iterdir()))
    assert predict_mask(image, "cloth-seg", model=str(tiny_segformer)).shape == (image.size[1], image.size[0])
    with pytest.raises(SegmentError, match="scheme 'fine'.*segment train --scheme fine"):
        predict_mask(image, "fine", model=str(tiny_segformer))


def test_cloth_u2net_runs_through_rembg_from_a_local_file(cloth_onnx, photos):
    image = Image.open(next(photos.iterdir())).convert("RGB")
    mask = predict_mask(image, "cloth-seg-compat", model=f"u2net-cloth:{cloth_onnx.parent}")
    assert mask.shape == (image.size[1], image.size[0])
    assert set(np.unique(mask)) <= {0, 1, 2, 3}
    # the same logits, read as rembg's session computes them: argmax of its first output
    session = open_segmenter(str(cloth_onnx)).session
    logits = session.inner_session.run(None, session.normalize(image, (0.485, 0.456, 0.406),
                                                               (0.229, 0.224, 0.225), (768, 768)))[0]
    expected = np.asarray(Image.fromarray(logits[0].argmax(0).astype(np.uint8)).resize(image.size, Image.NEAREST))
    assert np.array_equal(mask, expected)


def test_a_missing_cloth_model_says_where_to_get_it_without_downloading(tmp_path, monkeypatch, photos):
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    started = time.monotonic()
    with pytest.raises(SegmentError, match=r"'u2net-cloth-seg' is missing: u2net_cloth_seg.onnx: not found in .*"
                                           r"data/models.*empty.*Fix: .*https://github.com/danielgatis.*"
                                           r"md5 2434d1f3cb744e0e49386c906e5a08bb"):
        predict_mask(Image.open(next(photos.iterdir())))
    assert time.monotonic() - started < 5


def test_a_hub_id_not_in_the_cache_fails_at_once_offline(photos):
    started = time.monotonic()
    with pytest.raises(SegmentError, match="hub id 'nvidia/segformer-b0-not-cached'.*not in the Hugging Face cache"
                                           ".*Fix: .*download nvidia/segformer-b0-not-cached"):
        open_segmenter("nvidia/segformer-b0-not-cached")
    assert time.monotonic() - started < 20


def test_predict_mask_refuses_what_is_not_an_image(tiny_segformer):
    with pytest.raises(SegmentError, match="PIL image"):
        predict_mask(np.zeros((4, 4)), "cloth-seg", model=str(tiny_segformer))


# -- training -------------------------------------------------------------------------------------
def _config(demo_engine, out: Path, **values):
    from train.segmenter import load_segmenter_config

    base = dict(segformer_config=tiny_segformer_config(2).to_dict(), dataset="demo", scheme="cloth-seg",
                db_url=str(demo_engine.url), output_dir=str(out), resolution=32, train_batch_size=2,
                max_train_steps=4, checkpointing_steps=2, validation_steps=2, logging_steps=1,
                class_weights="inverse-frequency", max_validation_images=2, validation_split=0.25)
    return load_segmenter_config(None, {**base, **values})


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_the_segmenter_trains_logs_iou_and_resumes_exactly(demo_engine, tmp_path):
    from train.controlnet import StopRequested
    from train.segmenter import train

    straight = train(_config(demo_engine, tmp_path / "a"))
    assert straight.global_step == 4
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    evaluated = [r for r in records if "val_miou" in r]
    assert [r["step"] for r in evaluated] == [2, 4]
    assert set(evaluated[-1]["val_iou"]) == set(CLOTH)
    assert 0 <= evaluated[-1]["val_miou"] <= 1
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["workbench_scheme"]["name"] == "cloth-seg" and saved["workbench_scheme"]["names"] == CLOTH

    reached = {"step": 0}
    with pytest.raises(StopRequested):  # stopped after step 2, as a job cancel does
        train(_config(demo_engine, tmp_path / "b"), progress=lambda done, _total: reached.update(step=done),
              should_stop=lambda: reached["step"] >= 2)
    assert (tmp_path / "b" / "checkpoint-2" / "model" / "config.json").is_file()
    resumed = train(_config(demo_engine, tmp_path / "b", resume_from_checkpoint="latest"))
    assert resumed.global_step == 4
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    losses = lambda d: [json.loads(x)["loss"] for x in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert losses(tmp_path / "a") == losses(tmp_path / "b")

    # the trained model predicts masks of the photo's size in its scheme's classes
    photo = Image.new("RGB", (30, 41), (200, 10, 10))
    mask = predict_mask(photo, "cloth-seg", model=str(tmp_path / "a"))
    assert mask.shape == (41, 30) and set(np.unique(mask)) <= {0, 1, 2, 3}


def test_augmentation_moves_photo_and_mask_together():
    from train.segmenter import scale_crop

    photo = np.zeros((40, 60, 3), np.uint8)
    photo[:, :20] = 255  # a white band on the left ...
    mask = np.zeros((40, 60), np.uint8)
    mask[:, :20] = 1  # ... and its class
    for scale, fx, fy, flip in [(1.0, 0.0, 0.0, False), (1.5, 0.7, 0.3, True), (0.6, 0.5, 0.5, False)]:
        pixels, labels = scale_crop(Image.fromarray(photo), mask, 32, scale, fx, fy, flip)
        inside = labels != 255
        assert np.array_equal(pixels[..., 0][inside] > 127, labels[inside] == 1)


def test_bad_segmenter_configs_name_the_key(tmp_path):
    from train.config import ConfigError
    from train.segmenter import load_segmenter_config

    with pytest.raises(ConfigError, match="exactly one of pretrained_model_name_or_path"):
        load_segmenter_config(None, {"dataset": "demo", "output_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="learning_rat.*not a known key; see train/segmenter.py"):
        load_segmenter_config(None, {"dataset": "demo", "output_dir": str(tmp_path), "learning_rat": 1,
                                     "segformer_config": {}})


def test_the_segmenter_script_names_its_own_file_for_a_bad_config(tmp_path):
    """Run as ``python train/segmenter.py``, the module is ``__main__``: the message still points at the file."""
    import subprocess
    import sys

    config = tmp_path / "bad.yaml"
    config.write_text(f"dataset: demo\noutput_dir: {tmp_path}\nlearning_rat: 1\nsegformer_config: {{}}\n")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "train/segmenter.py", "--config", str(config)], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "learning_rat: not a known key; see train/segmenter.py (did you mean learning_rate?)" in done.stderr


# -- predictions in the store -----------------------------------------------------------------------
@pytest.fixture
def photo_dataset(engine, photos):
    from workbench.formats.folder import import_folder

    import_folder(engine, images_dir=photos, name="shoot")
    return engine


def test_predictions_are_stored_apart_from_real_annotations_and_resume(photo_dataset, tiny_segformer):
    from workbench.segment.store import predict_dataset, predicted_label_map

    segmenter = SegformerSegmenter(build_tiny_segformer(4, names=CLOTH), open_segmenter(str(tiny_segformer)).scheme,
                                   source="tiny", resolution=32, device="cpu")
    first = predict_dataset(photo_dataset, "shoot", segmenter, scheme="cloth-seg", limit=2, batch_size=2)
    assert (first.predicted, first.skipped) == (2, 0)
    again = predict_dataset(photo_dataset, "shoot", segmenter, scheme="cloth-seg", batch_size=2)
    assert (again.predicted, again.skipped, again.total) == (1, 2, 3)  # resumed: only the third
    with session_scope(photo_dataset) as session:
        assert session.scalar(select(func.count()).select_from(Annotation)) == 0
        image_ids = sorted(set(session.scalars(select(PredictedAnnotation.image_id))))
        assert len(image_ids) == 3
        from db.models import Image as ImageRow

        row = session.get(ImageRow, image_ids[0])
        stored = predicted_label_map(session, first.source_id, row.id)
    photo = Image.open(Path(photos_root(photo_dataset)) / row.file_name).convert("RGB")
    assert np.array_equal(stored, segmenter.predict([photo])[0])


def photos_root(engine) -> str:
    from workbench.datasets import get_dataset

    with session_scope(engine) as session:
        return get_dataset(session, "shoot").images_root


def test_export_uses_predicted_masks_only_when_asked(photo_dataset, tiny_segformer, tmp_path):
    from workbench.export import ExportError, ExportRecipe, export_dataset
    from workbench.segment.store import predict_dataset
    from workbench.settings import get_settings

    settings = get_settings(data_dir=str(tmp_path / "data"))
    recipe = dict(dataset="shoot", scheme="cloth-seg", resolution=32, people="ignore", caption_recipe=None)
    with pytest.raises(ExportError, match="no predicted masks in scheme 'cloth-seg'.*segment predict"):
        export_dataset(photo_dataset, settings, ExportRecipe(**recipe, use_predicted_masks=True), tmp_path / "x")
    predict_dataset(photo_dataset, "shoot", open_segmenter(str(tiny_segformer), resolution=32, device="cpu"),
                    scheme="cloth-seg")
    with pytest.raises(ExportError, match="no garment masks"):  # real masks only: nothing to export
        export_dataset(photo_dataset, settings, ExportRecipe(**recipe), tmp_path / "real")
    with session_scope(photo_dataset) as session:
        from db.captions import Caption
        from db.models import Image as ImageRow

        for image in session.scalars(select(ImageRow)):  # prompts, so that the photos are exportable
            session.add(Caption(dataset_id=image.dataset_id, image_id=image.id, source="manual", settings_key="manual",
                                text="a person", status="accepted"))
    result = export_dataset(photo_dataset, settings, ExportRecipe(**recipe, use_predicted_masks=True),
                            tmp_path / "predicted", workers=1)
    manifest = json.loads((tmp_path / "predicted" / "manifest.json").read_text())
    assert result.images == 3 and manifest["counts"]["predicted_masks"] == 3
    assert manifest["sources"]["predicted_masks"]["scheme"] == "cloth-seg"
    assert all(item["mask"] == "predicted" for item in manifest["items"])
    mask = np.asarray(Image.open(tmp_path / "predicted" / "conditioning_images" / "000000.png"))
    assert set(np.unique(mask)) <= {0, 1, 2, 3}


# -- CLI --------------------------------------------------------------------------------------------
def test_cli_predicts_a_folder_into_palette_pngs_and_names_usage_errors(tiny_segformer, photos, tmp_path):
    from workbench.cli import app

    runner = CliRunner()
    db = ["--db", f"sqlite:///{(tmp_path / 'cli.db').as_posix()}"]
    usage = runner.invoke(app, db + ["segment", "predict", "--model", str(tiny_segformer)])
    assert usage.exit_code == 2 and "--dataset NAME or --folder DIR" in usage.output
    result = runner.invoke(app, db + ["segment", "predict", "--model", str(tiny_segformer), "--folder", str(photos),
                                      "--out", str(tmp_path / "masks"), "--scheme", "cloth-seg"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["predicted"] == 3
    for photo in photos.iterdir():
        mask = Image.open((tmp_path / "masks" / photo.name).with_suffix(".png"))
        assert mask.mode == "P" and mask.size == Image.open(photo).size
    assert json.loads((tmp_path / "masks" / "legend.json").read_text())["1"] == "upper body"
    missing = runner.invoke(app, db + ["segment", "predict", "--model", f"u2net-cloth:{tmp_path / 'none'}",
                                       "--folder", str(photos), "--out", str(tmp_path / "m2")])
    assert missing.exit_code == 2 and "download it" in missing.output and "Traceback" not in missing.output


def test_eda_facets_tell_real_from_predicted_masks(demo_engine, tiny_segformer, tmp_path):
    from workbench.eda import EdaFilter, attach_facets, compute_eda, image_facets, load_frames
    from workbench.segment.store import predict_dataset

    predict_dataset(demo_engine, "demo", open_segmenter(str(tiny_segformer), resolution=32, device="cpu"),
                    scheme="cloth-seg", limit=5)
    facets = [f for f in image_facets() if f.name in ("masks", "predicted_by")]
    assert len(facets) == 2
    with session_scope(demo_engine) as session:
        frames = load_frames(session, "demo", cache_dir=tmp_path / "cache")
        attach_facets(session, frames, facets)
    both = compute_eda(frames, EdaFilter().with_facet("masks", ["real + predicted"]))
    real_only = compute_eda(frames, EdaFilter().with_facet("masks", ["real"]))
    assert (both.images, real_only.images) == (5, 7)
    by_source = compute_eda(frames, EdaFilter().with_facet("predicted_by", ["not predicted"]))
    assert by_source.images == 7


def test_the_segmenter_trains_on_an_export_folder_with_its_manifests_classes(tiny_export, tmp_path):
    from train.segmenter import load_segmenter_config, train

    result = train(load_segmenter_config(None, dict(
        segformer_config=tiny_segformer_config(2).to_dict(), train_data_dir=str(tiny_export),
        output_dir=str(tmp_path / "run"), resolution=32, train_batch_size=2, max_train_steps=2,
        checkpointing_steps=2, validation_steps=2)))
    assert result.global_step == 2
    assert set(result.last_eval["iou"]) == set(CLOTH)  # the export's legend, validation split from its manifest
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["workbench_scheme"]
    assert saved["name"] == "cloth-seg" and saved["values"] == [0, 1, 2, 3]


def test_cli_evaluate_scores_a_segmenter_against_real_masks(demo_engine, tiny_segformer):
    from workbench.cli import app

    result = CliRunner().invoke(app, ["--db", str(demo_engine.url), "segment", "evaluate", "--dataset", "demo",
                                      "--model", str(tiny_segformer), "--scheme", "cloth-seg", "--limit", "3",
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["images"] == 3 and report["scheme"] == "cloth-seg"
    assert list(report["iou"]) == CLOTH and 0 <= report["pixel_accuracy"] <= 1
    defined = [v for v in report["iou"].values() if v is not None]
    assert report["miou"] == pytest.approx(sum(defined) / len(defined))
