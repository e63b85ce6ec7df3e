"""Backups of the store and restoring them: SQLite's online backup API, ``pg_dump``/``pg_restore``
for PostgreSQL, and rotation of timestamped backups in a folder.

A SQLite backup is one consistent snapshot even while the app writes (WAL readers do not
block writers), checked with ``PRAGMA integrity_check`` before it is kept. Backups are written
under a temporary name and renamed when complete, so a folder never holds a half backup.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from db.engine import dispose_engines, make_engine

SQLITE_MAGIC = b"SQLite format 3\x00"
PGDUMP_MAGIC = b"PGDMP"
BACKUP_PREFIX = "workbench-"
SUFFIXES = {"sqlite": ".db", "postgresql": ".dump"}
_STAMPED = re.compile(rf"^{BACKUP_PREFIX}\d{{8}}T\d{{6}}(\d{{6}})?Z(-\d+)?\.(db|dump)$")


class BackupError(RuntimeError):
    """A backup or restore that cannot be done (names the file or program and the fix)."""


# -- SQLite ----------------------------------------------------------------------------------
def _check_integrity(path: Path) -> None:
    connection = sqlite3.connect(path)
    try:
        result = connection.execute("PRAGMA integrity_check").fetchall()
    finally:
        connection.close()
    if result != [("ok",)]:
        raise BackupError(f"{path}: integrity check failed: {'; '.join(r[0] for r in result[:5])}")


def sqlite_backup(engine: Engine, out: Path) -> None:
    """A consistent copy of a SQLite store at ``out`` through SQLite's online backup API."""
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    # All pages in one step: the copy is one read transaction, so a writer committing
    # meanwhile cannot make it restart or mix states.
    with engine.connect() as connection:
        target = sqlite3.connect(partial)
        try:
            connection.connection.driver_connection.backup(target)
        finally:
            target.close()
    _check_integrity(partial)
    os.replace(partial, out)


def _sqlite_restore(engine: Engine, backup: Path) -> None:
    _check_integrity(backup)
    source = sqlite3.connect(f"file:{backup.as_posix()}?mode=ro", uri=True)
    try:
        with engine.connect() as connection:
            source.backup(connection.connection.driver_connection)
    except sqlite3.Error as exc:
        raise BackupError(f"restoring {backup} failed: {exc}; stop the app and retry") from exc
    finally:
        source.close()


# -- PostgreSQL ------------------------------------------------------------------------------
def pg_program(name: str) -> str:
    """Path of ``pg_dump``/``pg_restore`` (PATH, then Debian's server folder), or a BackupError."""
    found = shutil.which(name)
    if found:
        return found
    from db.pg_server import find_server_bin

    folder = find_server_bin()
    if folder is not None and (folder / name).exists():
        return str(folder / name)
    raise BackupError(f"{name} is not installed; install PostgreSQL's client programs "
                      "(Debian: apt-get install postgresql-client, the server's major version or newer)")


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection string for a SQLAlchemy URL, the password moved to the environment."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise BackupError(f"{what} failed: {lines[-1] if lines else f'exit code {done.returncode}'}")


def _pg_backup(url: str, out: Path) -> None:
    partial = out.with_name(out.name + ".partial")
    dsn, env = _libpq(url)
    _run([pg_program("pg_dump"), "-Fc", "--no-owner", "-f", str(partial), "-d", dsn], env, "pg_dump")
    os.replace(partial, out)


def _pg_restore(url: str, backup: Path) -> None:
    dsn, env = _libpq(url)
    dispose_engines()  # pooled connections may hold plans of the tables being replaced
    _run([pg_program("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction",
          "--exit-on-error", "-d", dsn, str(backup)], env, "pg_restore")


# -- both --------------------------------------------------------------------------------------
def backend_of(url: str) -> str:
    """``sqlite`` or ``postgresql`` (anything else is refused)."""
    backend = make_url(url).get_backend_name()
    if backend not in SUFFIXES:
        raise BackupError(f"backups support SQLite and PostgreSQL stores, not {backend}")
    return backend


def stamped_name(backend: str, now: datetime | None = None) -> str:
    """``workbench-<UTC time>.db|.dump``: names that sort by time."""
    now = now or datetime.now(timezone.utc)
    return f"{BACKUP_PREFIX}{now.strftime('%Y%m%dT%H%M%S%f')}Z{SUFFIXES[backend]}"


def rotated(folder: Path) -> list[Path]:
    """The timestamped backups in ``folder``, newest first."""
    return sorted((p for p in folder.iterdir() if p.is_file() and _STAMPED.match(p.name)),
                  key=lambda p: p.name, reverse=True)


def rotate(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` timestamped backups in ``folder``; returns the deleted."""
    if keep < 1:
        raise BackupError(f"--keep {keep}: keep at least 1 backup")
    old = rotated(folder)[keep:]
    for path in old:
        path.unlink()
    return old


def backup_store(url: str, out: Path, *, keep: int | None = None) -> Path:
    """Back up the store at ``url``; returns the file written.

    ``out`` is a file, or a folder (existing, or named with ``keep``) that receives a
    timestamped backup, after which only the newest ``keep`` are kept.
    """
    backend = backend_of(url)
    out = Path(out)
    database = make_url(url).database
    if backend == "sqlite" and not Path(database or "").is_file():
        raise BackupError(f"store {database or '(in memory)'} does not exist; check --db / WORKBENCH_DB_URL")
    if keep is not None and keep < 1:
        raise BackupError(f"--keep {keep}: keep at least 1 backup")
    if out.is_dir() or keep is not None:
        if out.exists() and not out.is_dir():
            raise BackupError(f"{out} is a file; --keep needs a folder to rotate backups in")
        out.mkdir(parents=True, exist_ok=True)
        folder, target = out, out / stamped_name(backend)
    else:
        if not out.parent.is_dir():
            raise BackupError(f"folder {out.parent} does not exist; create it or name another output")
        folder, target = None, out
    if backend == "sqlite":
        sqlite_backup(make_engine(url), target)
    else:
        _pg_backup(url, target)
    if folder is not None and keep is not None:
        rotate(folder, keep)
    return target


def restore_store(url: str, backup: Path, *, force: bool = False) -> None:
    """Replace the store at ``url`` with the backup ``backup`` (made by :func:`backup_store`).

    Refuses a store that holds rows unless ``force``; the restored store is upgraded to the
    newest schema.
    """
    from db.transfer import is_empty

    backend = backend_of(url)
    backup = Path(backup)
    if not backup.is_file():
        raise BackupError(f"backup {backup} does not exist")
    with backup.open("rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    kind = "sqlite" if head == SQLITE_MAGIC else "postgresql" if head.startswith(PGDUMP_MAGIC) else None
    if kind is None:
        raise BackupError(f"{backup} is neither a SQLite backup nor a pg_dump custom-format file")
    if kind != backend:
        raise BackupError(f"{backup} is a {kind} backup and the store is {backend}; restore it into a "
                          f"{kind} store, then move it with `python -m workbench db copy`")
    engine = make_engine(url)
    if not force and not is_empty(engine):
        raise BackupError("the store is not empty; restoring would replace its rows: pass --force "
                          "(back it up first), or restore into an empty store")
    if backend == "sqlite":
        _sqlite_restore(engine, backup)
    else:
        _pg_restore(url, backup)
    dispose_engines()
    make_engine(url)  # an older backup is brought up to the newest schema
