"""A private, throw-away PostgreSQL server on loopback (tests and benchmarks), and database
creation from templates.

It needs PostgreSQL's server programs (``initdb``, ``pg_ctl``: Debian's ``postgresql``
package); :func:`find_server_bin` says where they are, or None. PostgreSQL refuses to run as
root, so under root the cluster belongs to the ``postgres`` account and its commands run
through ``runuser``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

SERVER_ACCOUNT = "postgres"
# A throw-away cluster keeps nothing across a crash, so it need not sync to disk.
THROWAWAY_SETTINGS = ("fsync=off", "full_page_writes=off", "synchronous_commit=off", "max_connections=200")


def find_server_bin() -> Path | None:
    """The folder of ``initdb``/``pg_ctl`` (on PATH or Debian's /usr/lib/postgresql/N/bin), or None."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalServer:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 only (trust login)."""

    def __init__(self, bin_dir: Path | None = None, root: Path | None = None):
        self.bin_dir = bin_dir or find_server_bin()
        if self.bin_dir is None:
            raise RuntimeError("PostgreSQL's server programs (initdb, pg_ctl) are not installed; "
                               "install Debian's `postgresql` package or pass a server URL")
        self.root = Path(root or tempfile.mkdtemp(prefix="workbench-pg-"))
        self.port = free_port()
        self._as_root = hasattr(os, "geteuid") and os.geteuid() == 0

    @property
    def url(self) -> str:
        """The superuser's SQLAlchemy URL (psycopg 3) of the ``postgres`` database."""
        return f"postgresql+psycopg://{SERVER_ACCOUNT}@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self._as_root:
            command = ["runuser", "-u", SERVER_ACCOUNT, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> str:
        """Create and start the cluster; returns its superuser URL."""
        data = self.root / "data"
        if self._as_root:
            shutil.chown(self.root, SERVER_ACCOUNT)
        self._run("initdb", "-D", str(data), "-U", SERVER_ACCOUNT, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = " ".join([f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}",
                            *(f"-c {setting}" for setting in THROWAWAY_SETTINGS)])
        self._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(self.root / "server.log"), "-w", "start")
        return self.url

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def database_url(server_url: str, name: str) -> str:
    """``server_url`` pointing at database ``name`` instead."""
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _admin(server_url: str):
    url: URL = make_url(server_url)
    if url.database in (None, ""):
        url = url.set(database="postgres")
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)


def create_database(server_url: str, name: str, *, template: str | None = None) -> str:
    """Create database ``name`` (a copy of ``template`` if given) on the server; returns its URL."""
    engine = _admin(server_url)
    try:
        with engine.connect() as connection:
            quoted = connection.dialect.identifier_preparer.quote
            clause = f" TEMPLATE {quoted(template)}" if template else ""
            connection.execute(text(f"CREATE DATABASE {quoted(name)}{clause}"))
    finally:
        engine.dispose()
    return database_url(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, closing other sessions on it (PostgreSQL 13+)."""
    engine = _admin(server_url)
    try:
        with engine.connect() as connection:
            quoted = connection.dialect.identifier_preparer.quote
            connection.execute(text(f"DROP DATABASE IF EXISTS {quoted(name)} WITH (FORCE)"))
    finally:
        engine.dispose()
