"""The PostgreSQL server of a test session: ``WORKBENCH_TEST_PG_URL`` (CI starts one), or a
private cluster started here when the server programs are installed; None when neither is.

Each test gets a fresh database copied from a template (``CREATE DATABASE ... TEMPLATE``),
which is much faster than running the migrations again.
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading

from db.engine import dispose_engines, make_engine
from db.pg_server import LocalServer, create_database, drop_database, find_server_bin

ENV = "WORKBENCH_TEST_PG_URL"
_lock = threading.Lock()
_state: dict = {}
_names = itertools.count()


def server_url() -> str | None:
    """The superuser URL of this session's PostgreSQL server, started on first use; or None."""
    with _lock:
        if "url" not in _state:
            _state["url"] = os.environ.get(ENV) or _start_private()
        return _state["url"]


def _start_private() -> str | None:
    if find_server_bin() is None:
        return None
    server = LocalServer()
    url = server.start()
    atexit.register(server.stop)
    return url


def _template(key: str, build) -> str:
    """The name of a template database built once per session by ``build(url)``."""
    with _lock:
        if key not in _state:
            name = f"wb_tpl_{key}_{os.getpid()}"
            server = _state["url"]
            drop_database(server, name)
            url = create_database(server, name)
            build(url)
            dispose_engines()  # a template must have no open connections
            _state[key] = name
            atexit.register(drop_database, server, name)
        return _state[key]


def fresh_database(template_key: str = "schema", build=None) -> tuple[str, str]:
    """A new migrated database (or a copy of the template ``build`` filled); returns (url, name)."""
    server = server_url()
    assert server is not None, "no PostgreSQL server: check server_url() first"
    template = _template(template_key, build or (lambda url: make_engine(url)))
    name = f"wb_test_{os.getpid()}_{next(_names)}"
    return create_database(server, name, template=template), name


def drop(name: str) -> None:
    """Drop a test database (its engines must be disposed first)."""
    drop_database(server_url(), name)
