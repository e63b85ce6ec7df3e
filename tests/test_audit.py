"""The audit log: a row for every kind of write (through the CLI and the library), filters, CSV,
and the CLI's users / audit commands with sign-in on and off."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from PIL import Image as PILImage
from sqlalchemy import select
from typer.testing import CliRunner

from db.engine import session_scope
from db.models import AuditLog, Dataset
from tests.signin import add_users, password_of
from workbench.audit import parse_time, query, record, to_csv
from workbench.cli import app
from workbench.jobs import cancel_job, start_job
from workbench.settings import get_settings


@pytest.fixture
def cli(demo_engine, tmp_path, monkeypatch):
    """Run the CLI against a copy of the demo store (sign-in off unless a test turns it on)."""
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("WORKBENCH_SIGN_IN", raising=False)
    monkeypatch.delenv("WORKBENCH_USER", raising=False)
    url = demo_engine.url.render_as_string(hide_password=False)

    def invoke(*args: str, input: str | None = None):
        return CliRunner().invoke(app, ["--db", url, *args], input=input)

    return invoke


def audit_rows(engine, action: str | None = None):
    with session_scope(engine) as session:
        return query(session, action=action)


def test_filters_by_user_action_dataset_and_time(engine):
    base = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    with session_scope(engine) as session:
        record(session, "ana", "people.decide", "people_flag", 1, dataset="demo", at=base)
        record(session, "ben", "people.skip", "people_flag", 2, dataset="demo", at=base + timedelta(days=1))
        record(session, "ana", "recipe.save", "mix_recipe", "r@1", dataset="other", at=base + timedelta(days=2))
        record(session, "boss", "user.add", "user", "ana", at=base + timedelta(days=3))
    with session_scope(engine) as session:
        ids = lambda **f: [r["entity_id"] for r in query(session, **f)]  # noqa: E731
        assert ids() == ["ana", "r@1", "2", "1"]  # newest first
        assert ids(user="ana") == ["r@1", "1"]
        assert ids(action="people") == ["2", "1"] and ids(action="people.skip") == ["2"]
        assert ids(action="peop") == []  # a group is a whole word, not a prefix
        assert ids(dataset="demo") == ["2", "1"]
        assert ids(since=parse_time("2026-12-02"), until=parse_time("2026-12-03", end=True)) == ["r@1", "2"]
        assert ids(since=parse_time("2026-12-02T12:00:00+00:00")) == ["ana", "r@1", "2"]
    with pytest.raises(ValueError, match="not a date"):
        parse_time("yesterday")


def test_csv_has_one_line_per_row_with_before_and_after_as_json(engine):
    with session_scope(engine) as session:
        record(session, "ana", "caption.edit", "caption", 7, dataset="demo",
               before={"text": "a, b"}, after={"text": 'say "hi"\nnew line'})
        rows = query(session)
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [(r["user"], r["action"], r["dataset"], r["entity_id"]) for r in parsed] == [("ana", "caption.edit", "demo", "7")]
    assert json.loads(parsed[0]["after"]) == {"text": 'say "hi"\nnew line'}
    assert json.loads(parsed[0]["before"]) == {"text": "a, b"}


def test_decisions_imports_exports_recipes_schemes_deletions_and_users_are_audited(cli, demo_engine, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    PILImage.new("RGB", (32, 48), "white").save(photos / "a.png")
    steps = [
        ("users", "add", "boss", "--role", "admin", "--password-stdin"),
        ("import", "folder", "--images", str(photos), "--name", "photos"),
        ("people", "decide", "--dataset", "demo", "--image-id", "demo_0000.jpg", "--decision", "ok"),
        ("export", "--dataset", "demo", "--format", "controlnet", "--out", str(tmp_path / "cn"), "--resolution", "64",
         "--workers", "1"),
        ("delete-dataset", "photos", "--yes"),
    ]
    for step in steps:
        result = cli(*step, input="password-boss\n")
        assert result.exit_code == 0, (step, result.output)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"weights": {"blip": 1.0}}))
    assert cli("captions", "mix", "--dataset", "demo", "--recipe", str(recipe), "--save", "mine").exit_code == 0
    scheme = cli("schemes", "show", "cloth-seg").output
    assert cli("schemes", "save", "-", "--name", "my-seg", input=scheme).exit_code == 0
    user = get_settings().user or __import__("getpass").getuser()
    by_action = {r["action"]: r for r in audit_rows(demo_engine)}
    assert set(by_action) == {"user.add", "import", "people.flag", "people.decide", "export", "dataset.delete",
                              "recipe.save", "scheme.save"}
    assert by_action["import"]["dataset"] == "photos" and by_action["import"]["after"]["new_images"] == 1
    assert by_action["export"]["dataset"] == "demo" and by_action["export"]["after"]["manifest_sha256"]
    assert by_action["dataset.delete"]["before"]["images"] == 1
    assert by_action["people.decide"]["dataset"] == "demo" and by_action["recipe.save"]["dataset"] == "demo"
    assert {r["user"] for r in by_action.values()} == {user}  # sign-in off: the local user, an admin
    with session_scope(demo_engine) as session:
        assert session.scalar(select(Dataset).where(Dataset.name == "photos")) is None


def test_a_job_launch_is_audited_as_its_launcher_with_its_command(demo_engine, tmp_path):
    settings = get_settings(db_url=demo_engine.url.render_as_string(hide_password=False), data_dir=tmp_path)
    job_id = start_job(demo_engine, settings, kind="train", argv=["datasets"], user="boss", audit="train.start")
    cancel_job(demo_engine, job_id, grace_seconds=5)
    [row] = audit_rows(demo_engine, "train")
    assert (row["user"], row["action"], row["entity_id"], row["after"]["argv"]) == \
        ("boss", "train.start", str(job_id), ["datasets"])


def test_users_cli_never_echoes_the_password_and_keeps_an_admin(cli, demo_engine):
    result = cli("users", "add", "ana", "--role", "curator", "--password-stdin", input="secret-ana-1\n")
    assert result.exit_code == 2 and "first user must be an admin" in result.output
    result = cli("users", "add", "boss", "--role", "admin", input="secret-boss-1\nsecret-boss-1\n")  # a prompt
    assert result.exit_code == 0, result.output
    assert "secret-boss-1" not in result.output
    assert cli("users", "add", "ana", "--password-stdin", input="secret-ana-1\n").exit_code == 0
    listed = json.loads(cli("users", "list").output)
    assert [(u["name"], u["role"]) for u in listed] == [("boss", "admin"), ("ana", "curator")]
    assert "$2" not in cli("users", "list").output  # no hash either
    for args, message in [(("users", "set-role", "boss", "viewer"), "last admin"),
                          (("users", "remove", "boss"), "last admin"),
                          (("users", "set-role", "zed", "viewer"), "no user named 'zed'"),
                          (("users", "set-role", "ana", "owner"), "unknown role 'owner'")]:
        result = cli(*args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert cli("users", "set-role", "ana", "viewer").exit_code == 0
    assert cli("users", "remove", "ana").exit_code == 0
    assert [u["name"] for u in json.loads(cli("users", "list").output)] == ["boss"]


def test_with_sign_in_on_the_cli_acts_as_a_user_and_their_role_is_checked(cli, demo_engine, monkeypatch, tmp_path):
    add_users(demo_engine, boss="admin", ana="curator", vic="viewer")
    monkeypatch.setenv("WORKBENCH_SIGN_IN", "local")
    decide = ("people", "decide", "--dataset", "demo", "--image-id", "demo_0001.jpg", "--decision", "ok")
    monkeypatch.setenv("WORKBENCH_USER", "nobody")
    result = cli(*decide)
    assert result.exit_code == 2 and "'nobody' is not a user of this store" in result.output
    monkeypatch.setenv("WORKBENCH_USER", "vic")
    result = cli(*decide)
    assert result.exit_code == 2 and "vic is a viewer: decide needs the curator role" in result.output
    monkeypatch.setenv("WORKBENCH_USER", "ana")
    assert cli(*decide).exit_code == 0
    assert cli(*decide[:-2], "--decision", "exclude", "--curator", "vic").exit_code == 2  # --curator names who acts
    for admin_only in (("delete-dataset", "demo", "--yes"), ("users", "add", "zoe", "--password-stdin"),
                       ("train", "start", "--config", str(tmp_path / "none.yaml"))):
        result = cli(*admin_only, input=password_of("zoe") + "\n")
        assert result.exit_code == 2 and "ana is a curator" in result.output, (admin_only, result.output)
    [row] = audit_rows(demo_engine, "people.decide")
    assert (row["user"], row["dataset"]) == ("ana", "demo")


def test_audit_cli_filters_and_writes_csv(cli, demo_engine, tmp_path):
    with session_scope(demo_engine) as session:
        record(session, "ana", "people.decide", "people_flag", 1, dataset="demo")
        record(session, "ben", "recipe.save", "mix_recipe", "r@1", dataset="demo")
    rows = json.loads(cli("audit", "--user", "ana").output)
    assert [(r["user"], r["action"]) for r in rows] == [("ana", "people.decide")]
    assert [r["action"] for r in json.loads(cli("audit", "--action", "recipe").output)] == ["recipe.save"]
    assert json.loads(cli("audit", "--dataset", "other").output) == []
    assert json.loads(cli("audit", "--until", "2000-01-01").output) == []
    out = tmp_path / "audit.csv"
    result = cli("audit", "--since", datetime.now(timezone.utc).date().isoformat(), "--csv", str(out))
    assert result.exit_code == 0 and "2 audit rows written" in result.output
    assert [r["user"] for r in csv.DictReader(out.open())] == ["ben", "ana"]
    result = cli("audit", "--since", "last week")
    assert result.exit_code == 2 and "--since/--until" in result.output
    with session_scope(demo_engine) as session:
        assert session.scalar(select(AuditLog.id).where(AuditLog.curator == "ben")) is not None
