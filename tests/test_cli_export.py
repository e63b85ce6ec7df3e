"""``python -m workbench export``: foreground, recipe files, errors, and as a background job."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from db.engine import session_scope
from workbench.cli import app
from workbench.export import read_manifest, verify_export
from workbench.jobs import get_job, job_summary, refresh_jobs


@pytest.fixture
def cli(demo_engine, tmp_path, monkeypatch):
    """Run the CLI against the demo store, with caches under tmp_path."""
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    url = str(demo_engine.url)

    def invoke(*args: str):
        return CliRunner().invoke(app, ["--db", url, *args])

    return invoke


def test_export_writes_the_format_and_prints_a_summary(cli, tmp_path):
    out = tmp_path / "cn"
    result = cli("export", "--dataset", "demo", "--format", "controlnet", "--out", str(out),
                 "--resolution", "64", "--scheme", "fine", "--crop", "person", "--workers", "1")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["images"] == len((out / "prompt.json").read_text().splitlines()) > 0
    manifest = read_manifest(out)
    assert (manifest["recipe"]["scheme"], manifest["recipe"]["crop"], manifest["recipe"]["resolution"]) == \
        ("fine", "person", 64)
    assert verify_export(out) == []


def test_a_manifest_is_a_recipe_that_reproduces_the_export(cli, tmp_path):
    first = cli("export", "--dataset", "demo", "--format", "imagefolder", "--out", str(tmp_path / "a"),
                "--resolution", "64", "--split", "train", "--validation-fraction", "0.25", "--workers", "1")
    assert first.exit_code == 0, first.output
    again = cli("export", "--recipe", str(tmp_path / "a" / "manifest.json"), "--out", str(tmp_path / "b"),
                "--workers", "1")
    assert again.exit_code == 0, again.output
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


@pytest.mark.parametrize("args, message", [
    (["--dataset", "nope"], "no dataset named 'nope'"),
    (["--dataset", "demo", "--resolution", "100"], "not a multiple of 8"),
    (["--dataset", "demo", "--crop", "left"], "crop"),
    (["--dataset", "demo", "--scheme", "nope"], "no mask scheme named 'nope'"),
    (["--dataset", "demo", "--require", "gown"], "no category 'gown'"),
    (["--format", "imagefolder"], "--dataset"),
])
def test_bad_requests_exit_2_with_a_message(cli, tmp_path, args, message):
    defaults = [] if "--resolution" in args else ["--resolution", "64"]
    result = cli("export", "--out", str(tmp_path / "out"), *defaults, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_background_export_runs_as_a_job(cli, demo_engine, tmp_path):
    out = tmp_path / "bg"
    result = cli("export", "--dataset", "demo", "--format", "imagefolder", "--out", str(out),
                 "--resolution", "64", "--background")
    assert result.exit_code == 0, result.output
    job_id = int(result.output.strip())
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        refresh_jobs(demo_engine)
        with session_scope(demo_engine) as session:
            job = job_summary(get_job(session, job_id))
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.3)
    assert job["status"] == "finished", (job, (tmp_path / "data" / "jobs" / f"{job_id}.log").read_text())
    assert job["kind"] == "export" and job["dataset"] == "demo"
    assert job["done"] == job["total"] == read_manifest(out)["counts"]["images"]
    assert job["details"]["manifest_sha256"] and verify_export(out) == []


@pytest.fixture
def undecided_flag(demo_engine):
    """One demo image flagged by a detector and not decided yet; its file name."""
    from sqlalchemy import select

    from db.models import Image
    from workbench.people.queue import flag_image

    with session_scope(demo_engine) as session:
        image_id, name = session.execute(select(Image.id, Image.file_name).order_by(Image.file_name)).first()
        flag_image(session, image_id, "ana")
    return name


def test_undecided_wait_refuses_with_the_way_on(cli, tmp_path, undecided_flag):
    result = cli("export", "--dataset", "demo", "--out", str(tmp_path / "out"), "--resolution", "64",
                 "--undecided", "wait", "--workers", "1")
    assert result.exit_code == 2
    assert f"1 flagged image(s) are not decided yet ({undecided_flag})" in result.output
    assert "--undecided" in result.output and not (tmp_path / "out").exists()


@pytest.mark.parametrize("choice", ["include", "exclude"])
def test_undecided_include_or_exclude_warns_and_records_the_choice(cli, tmp_path, undecided_flag, choice):
    out = tmp_path / choice
    result = cli("export", "--dataset", "demo", "--out", str(out), "--resolution", "64",
                 "--undecided", choice, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "warning: 1 flagged image(s) of 'demo' are not decided yet" in result.output
    manifest = read_manifest(out)
    assert manifest["recipe"]["undecided"] == choice
    assert manifest["sources"]["people"]["undecided_left_out"] == (choice == "exclude")
    exported = {i["file_name"] for i in manifest["items"]}
    assert (undecided_flag in exported) == (choice == "include")
