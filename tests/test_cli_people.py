"""``python -m workbench people ...``: detect (foreground and as a job), list, decide, flag, undo."""

from __future__ import annotations

import json
import time

from sqlalchemy import select
from typer.testing import CliRunner

from db.engine import session_scope
from db.models import AuditLog
from workbench.cli import app
from workbench.jobs import get_job, refresh_jobs


def run(engine, *args: str):
    return CliRunner().invoke(app, ["--db", engine.url.render_as_string(hide_password=False), *args])


def test_detect_then_list_as_json(demo_engine):
    done = run(demo_engine, "people", "detect", "--dataset", "demo", "--detector", "annotations", "--threshold", "0")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert (report["processed"], report["flagged"], report["threshold"]) == (12, 12, 0.0)
    listed = run(demo_engine, "people", "list", "--dataset", "demo", "--status", "pending", "--json")
    rows = json.loads(listed.stdout)
    assert len(rows) == 12
    assert {"image_id", "score", "status", "decision", "curator"} <= set(rows[0])
    assert rows[0]["image_id"].startswith("demo_") and rows[0]["status"] == "pending"
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    again = run(demo_engine, "people", "detect", "--dataset", "demo", "--detector", "annotations")
    assert json.loads(again.stdout[again.stdout.index("{"):])["already_done"] == 12


def test_decide_lists_as_decided_and_is_audited(demo_engine):
    run(demo_engine, "people", "detect", "--dataset", "demo", "--detector", "annotations", "--threshold", "0")
    first = json.loads(run(demo_engine, "people", "list", "--dataset", "demo", "--json").stdout)[0]["image_id"]
    done = run(demo_engine, "people", "decide", "--dataset", "demo", "--image-id", first, "--decision",
               "mask-region", "--region", "10,20,30,40", "--curator", "ana")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["outcome"] == "applied"
    [decided] = json.loads(run(demo_engine, "people", "list", "--dataset", "demo", "--status", "decided", "--json").stdout)
    assert (decided["image_id"], decided["decision"], decided["curator"]) == (first, "mask-region", "ana")
    assert decided["regions"] == [[10.0, 20.0, 30.0, 40.0]]
    undone = run(demo_engine, "people", "undo", "--dataset", "demo", "--curator", "ana")
    assert undone.exit_code == 0 and "back to pending" in undone.stdout
    with session_scope(demo_engine) as session:
        actions = list(session.scalars(select(AuditLog.action).order_by(AuditLog.id)))
    assert actions == ["people.decide", "people.undo"]


def test_decide_and_flag_an_image_no_detector_flagged(demo_engine):
    flagged = run(demo_engine, "people", "flag", "--dataset", "demo", "--image-id", "demo_0003.jpg",
                  "--curator", "ben", "--note", "someone at the back")
    assert flagged.exit_code == 0, flagged.output
    done = run(demo_engine, "people", "decide", "--dataset", "demo", "--image-id", "demo_0004.jpg",
               "--decision", "exclude", "--curator", "ben")
    assert done.exit_code == 0, done.output
    rows = json.loads(run(demo_engine, "people", "list", "--dataset", "demo", "--json").stdout)
    assert {(r["image_id"], r["status"], r["source"]) for r in rows} == {
        ("demo_0003.jpg", "pending", "manual"), ("demo_0004.jpg", "decided", "manual")}


def test_bad_input_is_a_clear_error(demo_engine):
    cases = [
        (["people", "detect", "--dataset", "demo", "--detector", "yolo"], "must be one of grounding-dino"),
        (["people", "detect", "--dataset", "nope", "--detector", "annotations"], "no dataset named 'nope'"),
        (["people", "decide", "--dataset", "demo", "--image-id", "demo_0001.jpg", "--decision", "maybe",
          "--curator", "ana"], "choose one of ok, exclude, mask-region"),
        (["people", "decide", "--dataset", "demo", "--image-id", "demo_0001.jpg", "--decision", "mask-region",
          "--curator", "ana"], "needs at least one region"),
        (["people", "decide", "--dataset", "demo", "--image-id", "nope.jpg", "--decision", "ok",
          "--curator", "ana"], "has no image 'nope.jpg'"),
        (["people", "list", "--dataset", "demo", "--status", "done"], "unknown status 'done'"),
        (["people", "undo", "--dataset", "demo", "--curator", "ana"], "no decision to undo"),
    ]
    for args, message in cases:
        result = run(demo_engine, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)


def test_background_detection_runs_as_a_job(demo_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    started = run(demo_engine, "people", "detect", "--dataset", "demo", "--detector", "annotations",
                  "--threshold", "0", "--background")
    assert started.exit_code == 0, started.output
    job_id = int(started.stdout.strip())
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        refresh_jobs(demo_engine)
        with session_scope(demo_engine) as session:
            job = get_job(session, job_id)
            status, done, total, argv = job.status, job.done, job.total, job.argv
        if status in ("finished", "failed", "cancelled"):
            break
        time.sleep(0.3)
    assert status == "finished", (tmp_path / "data" / "jobs" / f"{job_id}.log").read_text()
    assert (done, total) == (12, 12)
    assert argv[:6] == ["people", "detect", "--dataset", "demo", "--detector", "annotations"]
    rows = json.loads(run(demo_engine, "people", "list", "--dataset", "demo", "--json").stdout)
    assert len(rows) == 12  # the job's flags are in the store


# -- repairs ----------------------------------------------------------------------------------------
def test_repair_erase_and_label_then_list_export_and_unrepair(demo_engine, demo_files, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    from tests.test_repair import unlabelled

    (erased, box), (labelled, _), *_ = unlabelled(demo_files)
    done = run(demo_engine, "people", "repair", "--dataset", "demo", "--image-id", erased, "--box",
               ",".join(map(str, box)), "--erase", "--method", "fill", "--curator", "ana")
    assert done.exit_code == 0, done.output
    erase = json.loads(done.stdout)
    assert (erase["action"], erase["source"], erase["curator"], erase["box"]) == ("erase", "fill", "ana", list(box))
    assert erase["photo_path"].startswith(str((tmp_path / "data").resolve())) and not erase["masks"]
    done = run(demo_engine, "people", "repair", "--dataset", "demo", "--image-id", labelled, "--proposal", "--label",
               "--segmenter", "manual", "--category", "dress", "--curator", "ben")
    assert done.exit_code == 0, done.output
    label = json.loads(done.stdout)
    assert (label["source"], label["masks"][0]["category"]) == ("manual", "dress")
    assert "from the annotations" in done.stderr  # where the box came from

    listed = json.loads(run(demo_engine, "people", "repairs", "--dataset", "demo", "--json").stdout)
    assert [(r["id"], r["image_id"], r["action"]) for r in listed] == [(erase["id"], erased, "erase"),
                                                                       (label["id"], labelled, "label")]
    run(demo_engine, "people", "flag", "--dataset", "demo", "--image-id", erased, "--curator", "ana")
    assert "repaired (1)" in run(demo_engine, "people", "list", "--dataset", "demo").stdout

    out = tmp_path / "export"
    done = run(demo_engine, "export", "--dataset", "demo", "--format", "imagefolder", "--out", str(out),
               "--resolution", "64", "--repaired", "include", "--workers", "1")
    assert done.exit_code == 0, done.output
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert (counts["repaired"], counts["repaired_erased"], counts["repaired_labelled"]) == (2, 1, 1)

    undone = run(demo_engine, "people", "unrepair", "--dataset", "demo", "--curator", "ben")
    assert undone.exit_code == 0 and f"repair #{label['id']}" in undone.stdout
    removed = run(demo_engine, "people", "unrepair", "--dataset", "demo", "--curator", "ana", "--repair",
                  str(erase["id"]))
    assert removed.exit_code == 0 and "removed by ana" in removed.stdout
    assert json.loads(run(demo_engine, "people", "repairs", "--dataset", "demo", "--json").stdout) == []
    every = json.loads(run(demo_engine, "people", "repairs", "--dataset", "demo", "--removed", "--json").stdout)
    assert [r["removed_by"] for r in every] == ["ana", "ben"]
    with session_scope(demo_engine) as session:
        actions = list(session.scalars(select(AuditLog.action).where(AuditLog.entity == "people_repair")))
    assert actions == ["people.repair", "people.repair", "people.repair-remove", "people.repair-remove"]


def test_repair_usage_errors_exit_2_with_one_line(demo_engine, demo_files, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    name = "demo_0000.jpg"
    base = ["people", "repair", "--dataset", "demo", "--image-id", name, "--curator", "ana"]
    cases = [
        ([*base, "--box", "1,2,30,40", "--erase", "--label"], "choose one repair"),
        ([*base, "--erase"], "give the box"),
        ([*base, "--box", "1,2,30", "--erase"], "must be x0,y0,x1,y1"),
        ([*base, "--box", "1,2,30,40", "--erase", "--method", "blur"], "--method must be one of fill, inpaint"),
        ([*base, "--box", "1,2,30,40", "--label", "--segmenter", "manual", "--category", "tutu"], "no category 'tutu'"),
        ([*base, "--box", "1,2,30,40", "--label", "--segmenter", "manual"], "needs the garment category"),
        (["people", "unrepair", "--dataset", "demo", "--curator", "ana", "--repair", "99"], "no repair 99"),
    ]
    for args, needle in cases:
        done = run(demo_engine, *args)
        assert done.exit_code == 2, (args, done.output)
        assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_missing_sam_fails_in_seconds_with_the_registry_fix(demo_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    start = time.monotonic()
    done = run(demo_engine, "people", "repair", "--dataset", "demo", "--image-id", "demo_0000.jpg", "--box",
               "1,2,30,40", "--label", "--segmenter", "sam", "--category", "dress", "--curator", "ana")
    assert time.monotonic() - start < 20
    assert done.exit_code == 2
    assert "download facebook/sam-vit-base --local-dir" in done.stderr and "sam-vit-base" in done.stderr
