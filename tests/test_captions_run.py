"""Captioning runs over the demo store: batched, resumable after a cancel, idempotent, the CLI
twins (run, list --json, --background as a job), and a run sharded over two processes under
``accelerate launch`` merging into the store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from db.captions import Caption, CaptionPhrase, CaptionVersion
from db.engine import session_scope
from tiny_captioners import shared_tiny_models
from workbench.captions.base import CaptionResult, Captioner, Phrase
from workbench.captions.blip import BlipCaptioner, BlipSettings
from workbench.captions.run import run_captioning, store_dataset_prompts
from workbench.captions.store import list_captions
from workbench.cli import app
from workbench.progress import Cancelled
from workbench.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return shared_tiny_models(tmp_path_factory)


@pytest.fixture
def settings(demo_engine, tmp_path):
    return get_settings(db_url=str(demo_engine.url), data_dir=tmp_path / "data")


def count_captions(engine, source: str | None = None) -> int:
    with session_scope(engine) as session:
        query = select(func.count()).select_from(Caption)
        if source:
            query = query.where(Caption.source == source)
        return session.scalar(query)


def test_blip_run_captions_every_image_once_and_a_second_run_skips_them(demo_engine, settings, tiny) -> None:
    seen: list[tuple[int, int | None]] = []
    captioner = BlipCaptioner(BlipSettings(model=str(tiny.blip), max_new_tokens=5), batch_size=5)
    report = run_captioning(demo_engine, settings, "demo", captioner, progress=lambda d, t: seen.append((d, t)))
    assert (report.captioned, report.skipped, report.stored) == (12, 0, 12)
    assert seen[0] == (0, 12) and seen[-1] == (12, 12) and len(seen) == 4  # batches of 5, 5, 2
    again = run_captioning(demo_engine, settings, "demo", captioner)
    assert (again.captioned, again.skipped) == (0, 12)
    other = BlipCaptioner(BlipSettings(model=str(tiny.blip), max_new_tokens=5, prefix="a photo of"), batch_size=6)
    assert run_captioning(demo_engine, settings, "demo", other).captioned == 12
    with session_scope(demo_engine) as session:
        rows = list_captions(session, "demo", sources=["blip"])
        versions = session.scalar(select(func.count()).select_from(CaptionVersion))
    assert len(rows) == 24 and versions == 24
    assert {r.status for r in rows} == {"pending"} and {r.version for r in rows} == {1}
    assert sum(r.text.startswith("a photo of") for r in rows) == 12


class CountingCaptioner(Captioner):
    """A captioner that asks to stop after its first batch (and says what it captioned)."""

    def __init__(self, stop_after: int | None):
        self.sources, self.model, self.batch_size = ["blip"], "counting", 4
        self.calls = 0
        self.stop_after = stop_after

    def settings_for(self, source):
        return {"kind": "counting"}

    def caption_batch(self, images):
        self.calls += 1
        return {"blip": [CaptionResult(f"image {image.size}") for image in images]}

    def should_stop(self) -> bool:
        return self.stop_after is not None and self.calls >= self.stop_after


def test_a_cancelled_run_keeps_its_batches_and_the_next_run_resumes(demo_engine, settings) -> None:
    first = CountingCaptioner(stop_after=1)
    with pytest.raises(Cancelled):
        run_captioning(demo_engine, settings, "demo", first, should_stop=first.should_stop)
    assert count_captions(demo_engine) == 4
    resumed = CountingCaptioner(stop_after=None)
    report = run_captioning(demo_engine, settings, "demo", resumed)
    assert (report.captioned, report.skipped) == (8, 4) and resumed.calls == 2
    assert count_captions(demo_engine) == 12


class GroundedCaptioner(Captioner):
    """Kosmos-2-shaped output with one phrase on the image's largest garment and one off it."""

    def __init__(self, boxes):
        self.sources, self.model, self.batch_size = ["kosmos2"], "grounded", 12
        self.boxes = boxes

    def settings_for(self, source):
        return {}

    def caption_batch(self, images):
        out = []
        for image, (name, box) in zip(images, self.boxes):
            text = f"a photo of a {name} and a hat"
            out.append(CaptionResult(text, [Phrase(f"a {name}", 11, 13 + len(name), box),
                                            Phrase("a hat", len(text) - 5, len(text), (0, 0, 1, 1))]))
        return {"kosmos2": out}


def test_grounded_phrases_are_stored_with_their_agreement(demo_engine, settings) -> None:
    from workbench.captions.dataset_prompts import load_garments
    from workbench.datasets import get_dataset

    with session_scope(demo_engine) as session:
        garments = load_garments(session, get_dataset(session, "demo").id)
    boxes = []
    for item in garments.values():
        g = item.garments[0]
        boxes.append((g.category.split(",")[0], (g.box[0], g.box[1], g.box[0] + g.box[2], g.box[1] + g.box[3])))
    run_captioning(demo_engine, settings, "demo", GroundedCaptioner(boxes))
    with session_scope(demo_engine) as session:
        phrases = session.scalars(select(CaptionPhrase)).all()
        flagged = session.scalars(select(Caption.extra)).all()
    garment_rows = [p for p in phrases if p.phrase != "a hat"]
    assert len(garment_rows) == 12 and all(p.agrees and p.overlap == pytest.approx(1.0) for p in garment_rows)
    hats = [p for p in phrases if p.phrase == "a hat"]
    assert all(p.garment == "hat" for p in hats)
    # A hat phrase disagrees: either no hat mask, or a box far from it.
    assert all(p.agrees is False and p.note for p in hats)
    assert all(extra["disagreements"] >= 1 for extra in flagged)


def test_dataset_prompts_are_stored_as_captions(demo_engine) -> None:
    report = store_dataset_prompts(demo_engine, "demo")
    assert (report.captioned, report.total) == (12, 12)
    assert store_dataset_prompts(demo_engine, "demo").captioned == 0
    assert count_captions(demo_engine, "dataset") == 12


def test_cli_run_list_json_and_background_job(demo_engine, tmp_path, tiny, monkeypatch) -> None:
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    db = str(demo_engine.url)
    result = runner.invoke(app, ["--db", db, "captions", "run", "--dataset", "demo", "--captioner", "blip",
                                 "--model", str(tiny.blip), "--batch-size", "6", "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert "12 images captioned" in result.output
    listed = runner.invoke(app, ["--db", db, "captions", "list", "--dataset", "demo", "--json"])
    rows = json.loads(listed.stdout)
    assert len(rows) == 12 and {"image_id", "source", "text", "status", "version"} <= set(rows[0])
    bad = runner.invoke(app, ["--db", db, "captions", "run", "--dataset", "demo", "--captioner", "nope"])
    assert bad.exit_code == 2 and "unknown --captioner nope" in bad.output

    from workbench.jobs import get_job

    started = runner.invoke(app, ["--db", db, "captions", "run", "--dataset", "demo", "--captioner", "dataset",
                                  "--symbol-style", "angle", "--background"])
    assert started.exit_code == 0, started.output
    job_id = int(started.output.split()[1])
    deadline = time.monotonic() + 120
    while True:
        with session_scope(demo_engine) as session:
            job = get_job(session, job_id)
            status, argv = job.status, job.argv
        if status not in ("queued", "running") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == "finished", argv
    assert argv[:2] == ["captions", "run"] and "--background" not in argv and "--symbol-style" in argv
    with session_scope(demo_engine) as session:
        texts = [c.text for c in list_captions(session, "demo", sources=["dataset"])]
    assert len(texts) == 12 and all("<" in t for t in texts if t)


@pytest.mark.timeout(240)
def test_accelerate_launch_shards_over_two_processes_and_merges(demo_engine, tmp_path, tiny) -> None:
    if shutil.which("accelerate", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("accelerate's launcher is not installed in this environment")
    env = {**os.environ, "WORKBENCH_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1",
           "ACCELERATE_CONFIG_FILE": str(tmp_path / "none.yaml")}
    # accelerate's `--cpu --num_processes 2` starts one process unless MPI is there; `--multi_gpu`
    # on a machine without GPUs starts two torchrun processes that talk over gloo.
    command = [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "workbench",
               "--db", str(demo_engine.url), "captions", "run", "--dataset", "demo", "--captioner", "blip",
               "--model", str(tiny.blip), "--batch-size", "4", "--max-new-tokens", "4"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=220)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "by process 0 of 2" in done.stdout
    with session_scope(demo_engine) as session:
        rows = list_captions(session, "demo", sources=["blip"])
    assert len(rows) == 12 and len({r.image_id for r in rows}) == 12
    with session_scope(demo_engine) as session:
        per_process = dict(session.execute(select(Caption.run, func.count()).group_by(Caption.run)).all())
    assert per_process == {"cli/rank-0": 6, "cli/rank-1": 6}
    assert not list((tmp_path / "data" / "captions" / "shards").glob("*/rank-*.jsonl"))
