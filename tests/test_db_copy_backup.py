"""`db copy` between SQLite and PostgreSQL, `db backup` / `db restore` on both, and rotation."""

from __future__ import annotations

import multiprocessing
import time
from datetime import datetime, timezone

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from db.backup import BackupError, backup_store, rotated
from db.engine import dispose_engines, make_engine, session_scope
from db.models import Annotation, Curator
from db.transfer import row_counts, store_tables
from workbench.captions.review import edit as edit_caption
from workbench.load import prepare
from workbench.people.queue import decide
from tests.store_writer import pairs_match, write_pairs
from workbench.cli import app
from workbench.people.queue import ensure_curator

runner = CliRunner()


def cli(url: str, *args: str):
    return runner.invoke(app, ["--db", url, "db", *args])


def url_of(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def counts(url: str) -> dict[str, int]:
    with make_engine(url).connect() as connection:
        return row_counts(connection)


def _instant(value):
    """Times as naive UTC: the importer's SQLite rows read back with their zone, other rows without."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def contents(url: str) -> dict[str, list[tuple]]:
    """Every row of every table, in key order (dates, JSON, booleans as the ORM reads them)."""
    with make_engine(url).connect() as connection:
        return {t.name: [tuple(map(_instant, r)) for r in connection.execute(select(t).order_by(*t.primary_key.columns))]
                for t in store_tables()}


@pytest.fixture
def pg_url():
    """An empty, migrated PostgreSQL store (skipped when no PostgreSQL is available)."""
    from tests.pg import ENV, drop, fresh_database, server_url

    if server_url() is None:
        pytest.skip(f"no PostgreSQL: set {ENV} or install the postgresql package")
    url, name = fresh_database()
    yield url
    dispose_engines()
    drop(name)


def test_copy_to_postgresql_and_back_keeps_every_row(demo_engine, pg_url, tmp_path):
    source = url_of(demo_engine)
    plan = prepare(demo_engine, "demo", 3)  # flags, captions, decisions: JSON, booleans, times
    with session_scope(demo_engine) as session:
        decide(session, plan.flag_ids[0], "ana", "mask-region", regions=[[1, 2, 3, 4]])
        edit_caption(session, plan.caption_ids[0], 1, "a red dress", "ana")
    done = cli(source, "copy", "--to", pg_url)
    assert done.exit_code == 0, done.output
    assert "counts match" in done.output
    assert counts(pg_url) == counts(source)
    assert contents(pg_url) == contents(source)
    with session_scope(make_engine(pg_url)) as session:  # the id sequences moved past the copied ids
        ensure_curator(session, "bo")
        session.add(Annotation(**{**_first_annotation(session), "id": None, "source_key": "new"}))

    again = cli(source, "copy", "--to", pg_url)
    assert again.exit_code == 1
    assert "not empty" in again.output and "--replace" in again.output

    back = f"sqlite:///{(tmp_path / 'back.db').as_posix()}"
    done = cli(back, "copy", "--from", pg_url)
    assert done.exit_code == 0, done.output
    assert counts(back) == counts(pg_url)
    copied_back, original = contents(back), contents(source)
    assert copied_back["annotation"][:-1] == original["annotation"]  # and the one added on PostgreSQL
    assert {k: v for k, v in copied_back.items() if k not in ("annotation", "curator")} == \
        {k: v for k, v in original.items() if k not in ("annotation", "curator")}

    replaced = cli(source, "copy", "--to", pg_url, "--replace")
    assert replaced.exit_code == 0, replaced.output
    assert counts(pg_url) == counts(source)


def _first_annotation(session) -> dict:
    row = session.scalars(select(Annotation).order_by(Annotation.id).limit(1)).one()
    return {c.key: getattr(row, c.key) for c in Annotation.__table__.columns}


@pytest.mark.both_databases
def test_a_backup_taken_while_another_process_writes_is_consistent(db_url, tmp_path):
    make_engine(db_url)
    context = multiprocessing.get_context("spawn")
    started, stop = context.Event(), context.Event()
    writer = context.Process(target=write_pairs, args=(db_url, started, stop))
    writer.start()
    try:
        assert started.wait(120), "the writer never got going"
        files = []
        for n in range(2):
            files.append(backup_store(db_url, tmp_path / "backups", keep=5))
            time.sleep(0.2)
    finally:
        stop.set()
        writer.join(60)
    assert writer.exitcode == 0
    for n, backup in enumerate(files):
        target = _empty_store_like(db_url, tmp_path, f"r{n}")
        done = cli(target, "restore", str(backup))
        assert done.exit_code == 0, done.output
        pairs, consistent = pairs_match(make_engine(target))
        assert pairs >= 20 and consistent, f"backup {backup.name}: {pairs} pairs, consistent={consistent}"


def _empty_store_like(url: str, tmp_path, tag: str) -> str:
    if url.startswith("sqlite"):
        return f"sqlite:///{(tmp_path / f'{tag}.db').as_posix()}"
    from tests.pg import fresh_database

    return fresh_database()[0]


@pytest.mark.both_databases
def test_restore_round_trip_refuses_a_store_with_rows_without_force(demo_engine, tmp_path):
    url = url_of(demo_engine)
    before = counts(url)
    done = cli(url, "backup", str(tmp_path / "store.bak"))
    assert done.exit_code == 0, done.output

    refused = cli(url, "restore", str(tmp_path / "store.bak"))
    assert refused.exit_code == 1
    assert "not empty" in refused.output and "--force" in refused.output

    with session_scope(demo_engine) as session:  # a change after the backup, which restore undoes
        ensure_curator(session, "after-the-backup")
    forced = cli(url, "restore", str(tmp_path / "store.bak"), "--force")
    assert forced.exit_code == 0, forced.output
    assert counts(url) == before
    with session_scope(make_engine(url)) as session:
        assert session.scalar(select(Curator).where(Curator.name == "after-the-backup")) is None

    fresh = _empty_store_like(url, tmp_path, "fresh")
    assert cli(fresh, "restore", str(tmp_path / "store.bak")).exit_code == 0
    assert counts(fresh) == before


def test_rotation_keeps_the_newest_backups_and_nothing_else(engine, tmp_path):
    url = url_of(engine)
    folder = tmp_path / "backups"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    written = []
    for _ in range(4):
        done = cli(url, "backup", str(folder), "--keep", "2")
        assert done.exit_code == 0, done.output
        written.append(done.output.split("backup written: ")[1].strip())
    assert [str(p) for p in rotated(folder)] == written[:1:-1]
    assert (folder / "notes.txt").read_text() == "mine"
    assert cli(url, "backup", str(folder), "--keep", "0").exit_code == 2


def test_backups_name_what_is_missing(tmp_path, monkeypatch):
    import db.backup
    import db.pg_server

    monkeypatch.setattr(db.backup.shutil, "which", lambda name: None)
    monkeypatch.setattr(db.pg_server, "find_server_bin", lambda: None)
    with pytest.raises(BackupError, match="pg_dump is not installed.*postgresql-client"):
        backup_store("postgresql+psycopg://wb@127.0.0.1:1/wb", tmp_path / "x.dump")
    with pytest.raises(BackupError, match="does not exist"):
        backup_store(f"sqlite:///{(tmp_path / 'typo.db').as_posix()}", tmp_path / "x.db")
    assert not (tmp_path / "typo.db").exists()
    (tmp_path / "junk.bak").write_text("not a backup")
    done = cli(f"sqlite:///{(tmp_path / 's.db').as_posix()}", "restore", str(tmp_path / "junk.bak"))
    assert done.exit_code == 1 and "neither a SQLite backup nor a pg_dump" in done.output
