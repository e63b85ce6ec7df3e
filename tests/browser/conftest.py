"""Real-browser fixtures: the app as a subprocess on a free port, and Debian's chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
START_TIMEOUT_S = 90
DEMO_IMAGES = 8


@dataclass
class RunningApp:
    """A started ``streamlit run Home.py`` and the store it uses."""

    url: str
    db_url: str
    data_dir: Path
    demo_images: int
    log: Path


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_tree(pid: int) -> None:
    """Stop a process and everything it started."""
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [*parent.children(recursive=True), parent]
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    """Wait until streamlit answers its health check, or fail with its log."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"streamlit exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"streamlit did not answer in {START_TIMEOUT_S}s:\n{log.read_text(errors='replace')}")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator["BrowserContext"]:
    """Debian's chromium, headless, with a fresh profile; a skip that says why if it is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install it with `apt-get install chromium` (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1600},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def app_env() -> dict[str, str]:
    """More ``WORKBENCH_*`` settings for the app (a test module overrides this fixture)."""
    return {}


@contextmanager
def running_app(tmp_path: Path, demo_images: int, app_env: dict[str, str] | None = None, *,
                port: int | None = None, streamlit_args: Sequence[str] = ()) -> Iterator[RunningApp]:
    """``streamlit run Home.py`` on an isolated, empty store (so it builds a demo of ``demo_images``),
    with ``app_env`` on top of the test settings; on ``port`` (default: a free one), with more
    ``streamlit run`` options (``--secrets.files PATH``)."""
    data_dir = tmp_path / "data"
    db_url = f"sqlite:///{(data_dir / 'workbench.db').as_posix()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env.update(
        WORKBENCH_DATA_DIR=str(data_dir),
        WORKBENCH_DB_URL=db_url,
        WORKBENCH_DEMO_IMAGES=str(demo_images),
        # paths typed into pages may point into pytest's temporary folders (the tiny models)
        WORKBENCH_ALLOWED_ROOTS=str(tmp_path.parent),
        PYTHONUNBUFFERED="1",
    )
    env.update(app_env or {})
    port = port or free_port()
    log = tmp_path / "streamlit.log"
    command = [
        sys.executable, "-m", "streamlit", "run", "Home.py",
        "--server.port", str(port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        *streamlit_args,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process, log)
        yield RunningApp(url=url, db_url=db_url, data_dir=data_dir, demo_images=demo_images, log=log)
    finally:
        kill_tree(process.pid)


@pytest.fixture
def demo_app(tmp_path: Path, app_env: dict[str, str]) -> Iterator[RunningApp]:
    """``streamlit run Home.py`` on an isolated, empty store (so it builds a small demo), with
    ``app_env`` on top of the test settings."""
    with running_app(tmp_path, DEMO_IMAGES, app_env) as app:
        yield app
