"""Repair previews as files (``workbench/repair_preview.py``, ``people repair --preview-only / --from-preview``):
made by a background job with progress, stored later exactly as made; bad input refused before any
file is written (tiny random SAM and inpainting pipeline)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select
from typer.testing import CliRunner

from db.engine import dispose_engines, session_scope
from db.models import Image
from db.repair import RepairAnnotation
from tests.job_waits import wait_job_ended
from tests.test_repair import unlabelled
from workbench.cli import app
from workbench.jobs import start_job
from workbench.progress import Cancelled
from workbench.repair import InpaintSettings, RepairError, list_repairs
from workbench.repair_preview import (
    EDITED, META, PREVIEW_JOB_KIND, PreviewRequest, make_preview, new_preview_folder, preview_argv, previews_dir,
    read_preview, save_preview,
)
from workbench.rle import counts_to_runs, decode_runs
from workbench.settings import get_settings

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def store(demo_engine, tmp_path, monkeypatch):
    """The demo store, with the settings a job launched from here gets (its data folder in tmp_path)."""
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DB_URL", demo_engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield demo_engine
    dispose_engines()


def run(engine, *args: str):
    return CliRunner().invoke(app, ["--db", engine.url.render_as_string(hide_password=False), *args])


def pixels(path_or_image) -> np.ndarray:
    image = path_or_image if isinstance(path_or_image, PILImage.Image) else PILImage.open(path_or_image)
    return np.asarray(image.convert("RGB"))


def test_an_inpaint_preview_job_reports_its_steps_and_saving_stores_the_photo_it_made(
        store, demo_files, tiny_inpaint_dir, tmp_path):
    (name, box), *_ = unlabelled(demo_files)
    settings = get_settings()
    request = PreviewRequest(dataset="demo", image=name, box=box, action="erase", method="inpaint",
                             model=str(tiny_inpaint_dir), device="cpu",
                             inpaint=InpaintSettings(steps=3, resolution=64, seed=7))
    folder = tmp_path / "data" / "repairs" / "previews" / "one"
    argv = preview_argv(request, folder)
    assert argv[:2] == ["people", "repair"] and "--preview-only" in argv and argv[argv.index("--out") + 1] == str(folder)
    job_id = start_job(store, settings, kind=PREVIEW_JOB_KIND, argv=argv, dataset="demo", user="ana")
    job = wait_job_ended(store, job_id, timeout=300)
    assert job["status"] == "finished", job
    assert (job["done"], job["total"], job["message"]) == (3, 3, "inpainting")  # the steps, counted
    assert (folder / EDITED).is_file() and (folder / META).is_file()
    with session_scope(store) as session:
        assert list_repairs(session, "demo") == []  # a preview stores nothing

    preview = read_preview(folder)
    assert preview.request == request and preview.box == box
    photo = pixels(demo_files.images_dir / name)
    made = pixels(preview.edited)
    inside = np.zeros(photo.shape[:2], bool)
    inside[box[1]:box[3], box[0]:box[2]] = True
    assert (made[~inside] == photo[~inside]).all() and (made[inside] != photo[inside]).any()
    with session_scope(store) as session:
        info = save_preview(session, settings, preview, "ana")
    assert (info.action, info.source, info.model, info.curator) == ("erase", "inpaint", str(tiny_inpaint_dir), "ana")
    assert info.random_weights
    assert (pixels(info.photo_path) == pixels(folder / EDITED)).all()  # exactly what the preview showed


def test_a_sam_preview_from_the_cli_is_stored_later_with_the_same_masks(store, demo_files, tiny_sam_dir, tmp_path):
    (name, box), *_ = unlabelled(demo_files)
    folder = tmp_path / "sam-preview"
    made = run(store, "people", "repair", "--dataset", "demo", "--image-id", name, "--box", ",".join(map(str, box)),
               "--label", "--segmenter", "sam", "--category", "coat", "--model", str(tiny_sam_dir), "--device", "cpu",
               "--preview-only", "--out", str(folder), "--curator", "ana")
    assert made.exit_code == 0, made.output
    report = json.loads(made.stdout)
    assert (report["preview"], report["made"], report["model"]) == (str(folder), "coat", str(tiny_sam_dir))
    with session_scope(store) as session:
        assert list_repairs(session, "demo") == []
    masks = np.load(folder / "segments.npz")["mask0"]
    assert masks.any()

    saved = run(store, "people", "repair", "--dataset", "demo", "--from-preview", str(folder), "--curator", "ben")
    assert saved.exit_code == 0, saved.output
    info = json.loads(saved.stdout)
    assert (info["action"], info["source"], info["model"], info["curator"]) == ("label", "sam", str(tiny_sam_dir), "ben")
    assert info["random_weights"] and info["masks"][0]["category"] == "coat"
    with session_scope(store) as session:
        image = session.scalar(select(Image).where(Image.file_name == name))
        [row] = session.scalars(select(RepairAnnotation).where(RepairAnnotation.repair_id == info["id"]))
        stored = decode_runs(counts_to_runs(row.counts, image.height, image.width), image.height, image.width)
    assert (stored == masks).all()


def test_stages_are_reported_and_a_stop_request_ends_the_inpainting_between_steps(
        store, demo_files, tiny_inpaint_dir, tiny_sam_dir, tmp_path):
    from workbench.segment.tiny import build_tiny_cloth_segformer

    (name, box), *_ = unlabelled(demo_files)
    seen: list[tuple[str, int, int | None]] = []

    def stage(what: str, unit: str):
        return lambda done, total: seen.append((what, done, total))

    label = PreviewRequest(dataset="demo", image=name, box=box, action="label", source="sam", category="coat",
                           model=str(tiny_sam_dir), device="cpu")
    with session_scope(store) as session:
        make_preview(session, label, stage=stage)
    assert seen == [("loading the model", 0, 1), ("loading the model", 1, 1), ("segmenting", 0, 1),
                    ("segmenting", 1, 1)]

    seen.clear()
    cloth = PreviewRequest(dataset="demo", image=name, box=box, action="label", source="cloth-segmenter",
                           model=str(build_tiny_cloth_segformer(tmp_path / "cloth")))
    with session_scope(store) as session:
        made = make_preview(session, cloth, stage=stage)
    assert seen == [("segmenting", 0, 1), ("segmenting", 1, 1)] and made.segments  # it loads as it predicts

    seen.clear()
    erase = PreviewRequest(dataset="demo", image=name, box=box, action="erase", method="inpaint",
                           model=str(tiny_inpaint_dir), device="cpu", inpaint=InpaintSettings(steps=5, resolution=64))
    with session_scope(store) as session, pytest.raises(Cancelled):
        make_preview(session, erase, stage=stage, should_stop=lambda: any(w == "inpainting" for w, *_ in seen))
    assert [s for s in seen if s[0] == "inpainting"] == [("inpainting", 1, 5)]  # stopped after its first step


def test_bad_input_is_refused_before_a_preview_is_written(store, demo_files, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # no model there
    (name, _), *_ = unlabelled(demo_files)
    out = tmp_path / "never"
    base = ["people", "repair", "--dataset", "demo", "--image-id", name, "--curator", "ana"]
    one_line = [
        ([*base, "--box", "5000,5000,5100,5100", "--erase", "--method", "inpaint", "--preview-only", "--out", str(out)],
         "lies outside"),
        ([*base, "--box", "1,2,30,40", "--erase", "--out", str(out)], "--out is where --preview-only writes"),
        ([*base, "--box", "1,2,30,40", "--erase", "--method", "inpaint", "--steps", "0", "--preview-only"],
         "inpainting option steps"),
        (["people", "repair", "--dataset", "demo", "--from-preview", str(out), "--box", "1,2,3,4"],
         "give no --image-id, --box"),
        (["people", "repair", "--dataset", "demo", "--from-preview", str(tmp_path), "--curator", "ana"],
         "no readable repair preview"),
    ]
    for args, needle in one_line:
        done = run(store, *args)
        assert done.exit_code == 2, (args, done.output)
        assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    start = time.monotonic()
    missing = run(store, *base, "--box", "1,2,30,40", "--label", "--segmenter", "sam", "--category", "dress",
                  "--preview-only", "--out", str(out))
    assert time.monotonic() - start < 20 and missing.exit_code == 2
    error, fix = missing.stderr.strip().splitlines()[-2:]  # the registry's reason, then its fix
    assert error.startswith("error: SAM (segment anything) 'sam-vit-base' is missing") and "Fix:" not in error
    assert fix.startswith("fix: ") and "facebook/sam-vit-base" in fix
    assert not out.exists()
    with session_scope(store) as session:
        assert list_repairs(session, "demo") == []


def test_a_preview_folder_without_its_description_is_no_preview(tmp_path):
    (tmp_path / EDITED).write_bytes(b"not a png")
    with pytest.raises(RepairError, match="no readable repair preview in .*preview the repair again"):
        read_preview(tmp_path)


def test_a_new_preview_folder_clears_previews_older_than_a_day(store):
    import os

    settings = get_settings()
    old, fresh = previews_dir(settings) / "old", previews_dir(settings) / "fresh"
    for folder in (old, fresh):
        folder.mkdir(parents=True)
        (folder / META).write_text("{}")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    new = new_preview_folder(settings)
    assert new.parent == previews_dir(settings) and not new.exists()
    assert not old.exists() and fresh.is_dir()
