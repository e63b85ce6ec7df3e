"""workbench/evaluate.py and ``python -m workbench evaluate``: controllability of a tiny trained ControlNet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from db.engine import make_engine, session_scope
from db.evaluations import Evaluation
from workbench import evaluate as ev
from workbench.cli import app
from workbench.generate import resolve_controlnet
from workbench.segment.tiny import build_tiny_segformer

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def judge(tmp_path_factory, trained_run) -> Path:
    """A tiny random SegFormer whose classes are the body-parts classes of the run's export (by name)."""
    legend = resolve_controlnet(trained_run.run_dir / "checkpoint-2").legend
    folder = tmp_path_factory.mktemp("judge") / "segformer"
    build_tiny_segformer(len(legend), folder, names=[legend[k] for k in sorted(legend, key=int)])
    return folder


@pytest.fixture
def store(tmp_path, trained_run):
    copy = tmp_path / "store.db"
    shutil.copy(trained_run.store, copy)
    return f"sqlite:///{copy.as_posix()}"


def _validation(trained_run) -> list[dict]:
    manifest = json.loads((trained_run.export_dir / "manifest.json").read_text())
    return [item for item in manifest["items"] if item["split"] == "validation"]


def test_evaluation_aggregates_iou_over_all_pixels_not_per_image_means():
    legend = {"0": "background", "1": "upper body", "2": "lower body"}
    agreement = ev.Agreement(legend)
    top = np.zeros((4, 4), np.uint8)
    top[:2] = 1
    exact = agreement.add(top, top.copy())  # 8 px of class 1 above 8 px of background, read exactly
    right = np.zeros((4, 4), np.uint8)
    right[:, 2:] = 1
    wrong = agreement.add(np.zeros((4, 4), np.uint8), right)  # all background, half read as class 1
    assert exact == 1.0
    assert wrong == pytest.approx(0.25)  # background 8/16, class 1 0/8
    result = agreement.report()
    # background: TP 16, truth 24, predicted 16 -> 16/24; class 1: TP 8, truth 8, predicted 16 -> 8/16
    assert list(result["iou"]) == ["background", "upper body", "lower body"]
    assert result["iou"]["background"] == pytest.approx(2 / 3)
    assert result["iou"]["upper body"] == pytest.approx(0.5)
    assert result["iou"]["lower body"] is None  # in neither: no IoU, left out of the mean
    assert result["miou"] == pytest.approx(7 / 12)  # not (1.0 + 0.25) / 2
    assert result["miou_foreground"] == pytest.approx(0.5)
    assert result["pixel_accuracy"] == pytest.approx(24 / 32)


def test_an_evaluation_generates_segments_scores_and_stores_its_table(trained_run, store, judge, tmp_path):
    engine = make_engine(store)
    request = ev.EvaluateRequest(checkpoint=str(trained_run.run_dir / "checkpoint-2"), segmenter=str(judge),
                                 per_mask=2, seed=7, steps=2, resolution=64, worst=3, device="cpu")
    seen = []
    row = ev.evaluate(engine, tmp_path / "data", request, progress=lambda d, t: seen.append((d, t)))
    masks = len(_validation(trained_run))
    assert masks >= 1 and (row.masks, row.images) == (masks, 2 * masks)
    assert seen[0] == (0, 2 * masks) and seen[-1] == (2 * masks, 2 * masks)
    info = resolve_controlnet(trained_run.run_dir / "checkpoint-2")
    assert list(row.iou) == [info.legend[k] for k in sorted(info.legend, key=int)]
    defined = [v for v in row.iou.values() if v is not None]
    assert row.miou == pytest.approx(float(np.mean(defined)))
    assert list(row.ceiling["iou"]) == list(row.iou) and row.ceiling_miou == row.ceiling["miou"]
    assert row.settings["steps"] == 2 and row.settings["seeds"] == [7, 8] and row.settings["scheduler"] == "unipc"
    assert row.checkpoint_step == 2 and row.scheme == "body-parts" and row.segmenter == str(judge)
    assert row.run_dir == str(trained_run.run_dir.resolve())
    assert row.clip_score is None and "CLIP score skipped" in row.notes[0]
    # the worst cases: the lowest per-image mIoUs, each as mask | generated | segmentation files
    assert len(row.worst_cases) == min(3, 2 * masks)
    scores = [case["miou"] for case in row.worst_cases]
    assert scores == sorted(scores)
    for case in row.worst_cases:
        for kind in ("mask", "generated", "segmentation"):
            path = Path(case[kind])
            assert path.is_relative_to(tmp_path / "data" / "evaluations") and Image.open(path).size == (64, 64)
    with session_scope(engine) as session:
        assert ev.miou_curve(session, trained_run.run_dir) == [
            {"step": 2, "miou": row.miou, "ceiling_miou": row.ceiling_miou, "clip_score": None, "evaluation": row.id}]
        assert session.get(Evaluation, row.id).iou == row.iou
    # fixed seeds: the same request scores the same
    again = ev.evaluate(engine, tmp_path / "data", request)
    assert again.miou == row.miou and again.iou == row.iou


def test_a_clip_model_adds_the_clip_score(trained_run, store, judge, tmp_path):
    from workbench.tiny.captioners import save_tiny_clip

    clip = save_tiny_clip(tmp_path / "clip")
    request = ev.EvaluateRequest(checkpoint=str(trained_run.run_dir / "checkpoint-1"), segmenter=str(judge),
                                 steps=1, resolution=64, limit=1, clip_model=str(clip), device="cpu")
    row = ev.evaluate(make_engine(store), tmp_path / "data", request)
    assert row.images == 1 and row.clip_score is not None and 0.0 <= row.clip_score <= 100.0 and row.notes == []


def _run_without_validation(trained_run, tmp_path: Path) -> Path:
    """A copy of the run's checkpoint 1 trained on a copy of its export where every image is in train."""
    export = tmp_path / "export"
    shutil.copytree(trained_run.export_dir, export)
    manifest = json.loads((export / "manifest.json").read_text())
    for item in manifest["items"]:
        item["split"] = "train"
    (export / "manifest.json").write_text(json.dumps(manifest))
    for index in (export / "metadata.jsonl", export / "prompt.json"):
        if index.is_file():
            rows = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
            index.write_text("".join(json.dumps({**r, "split": "train"}) + "\n" for r in rows))
    run = tmp_path / "run"
    shutil.copytree(trained_run.run_dir / "checkpoint-1", run / "checkpoint-1")
    config = json.loads((trained_run.run_dir / "train_config.json").read_text())
    (run / "train_config.json").write_text(json.dumps({**config, "train_data_dir": str(export)}))
    return run / "checkpoint-1"


def test_bad_input_is_named_with_its_fix(trained_run, store, judge, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ev.EvaluateError, match="is not a ControlNet checkpoint"):
        ev.evaluation_target(ev.EvaluateRequest(checkpoint=str(tmp_path / "empty")))
    checkpoint = _run_without_validation(trained_run, tmp_path)
    with pytest.raises(ev.EvaluateError, match="has no 'validation' split \\(its splits: train\\); re-export"):
        ev.evaluation_target(ev.EvaluateRequest(checkpoint=str(checkpoint)))
    with pytest.raises(ValueError, match="multiple of 8"):
        ev.EvaluateRequest(checkpoint="x", resolution=60)


def test_cli_evaluates_as_json_and_names_usage_errors(trained_run, store, judge, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    result = runner.invoke(app, ["--db", store, "evaluate", "--checkpoint", str(trained_run.run_dir / "checkpoint-2"),
                                 "--split", "validation", "--segmenter", str(judge), "--per-mask", "1",
                                 "--steps", "1", "--resolution", "64", "--limit", "1", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["checkpoint_step"] == 2 and data["images"] == 1 and data["split"] == "validation"
    assert set(data["iou"]) == set(resolve_controlnet(trained_run.run_dir / "checkpoint-2").legend.values())
    bad = runner.invoke(app, ["--db", store, "evaluate", "--checkpoint", str(tmp_path), "--background"])
    assert bad.exit_code == 2 and "is not a ControlNet checkpoint" in bad.output
    bad = runner.invoke(app, ["--db", store, "evaluate", "--checkpoint", str(trained_run.run_dir), "--split", "test"])
    assert bad.exit_code == 2 and "has no 'test' split" in bad.output
    bad = runner.invoke(app, ["--db", store, "evaluate"])
    assert bad.exit_code == 2 and "give --checkpoint" in bad.output


def test_a_background_evaluation_job_reports_progress_and_stores_its_result(trained_run, store, judge, tmp_path,
                                                                            monkeypatch):
    from tests.job_waits import wait_job_ended

    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    started = CliRunner().invoke(app, ["--db", store, "evaluate", "--checkpoint", str(trained_run.run_dir / "checkpoint-1"),
                                       "--segmenter", str(judge), "--per-mask", "2", "--steps", "1", "--resolution", "64",
                                       "--limit", "1", "--device", "cpu", "--background"])
    assert started.exit_code == 0, started.output
    job_id = int(started.stdout.strip())
    engine = make_engine(store)
    job = wait_job_ended(engine, job_id, timeout=240)
    assert job["status"] == "finished", Path(job["log_path"]).read_text()[-3000:]
    assert job["kind"] == "evaluate" and (job["done"], job["total"]) == (2, 2)
    with session_scope(engine) as session:
        rows = [r for r in ev.list_evaluations(session) if r.job_id == job_id]
        assert len(rows) == 1 and rows[0].images == 2 and rows[0].checkpoint_step == 1


def test_the_trainer_starts_an_evaluation_job_at_each_checkpoint_when_asked(trained_run, store, judge, tmp_path,
                                                                              monkeypatch):
    from tests.job_waits import wait_job_ended
    from train.config import load_config
    from train.controlnet import train
    from workbench.jobs import list_jobs

    monkeypatch.setenv("WORKBENCH_DB_URL", store)
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    run = tmp_path / "run"
    train(load_config(None, dict(
        pretrained_model_name_or_path=str(trained_run.base_model), train_data_dir=str(trained_run.export_dir),
        output_dir=str(run), resolution=64, train_batch_size=2, max_train_steps=2, checkpointing_steps=1,
        checkpoints_total_limit=None, validation_steps=100, num_validation_images=0, validation_loss_samples=0,
        report_to="none", evaluate_segmenter=str(judge), evaluate_limit=1, evaluate_inference_steps=1)))
    engine = make_engine(store)
    with session_scope(engine) as session:
        job_ids = [j.id for j in list_jobs(session, kind="evaluate")]
    assert len(job_ids) == 2  # checkpoints 1 and 2
    for job_id in job_ids:
        job = wait_job_ended(engine, job_id, timeout=240)
        assert job["status"] == "finished", Path(job["log_path"]).read_text()[-3000:]
    with session_scope(engine) as session:
        curve = ev.miou_curve(session, run)
        assert all(r.settings["resolution"] == 64 and r.settings["steps"] == 1 and r.masks == 1
                   for r in ev.list_evaluations(session, run_dir=run))
    assert [point["step"] for point in curve] == [1, 2] and all(point["miou"] is not None for point in curve)
