"""A real browser generates one image with a tiny trained ControlNet on the Generate page and sees it in the grid."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from db.engine import dispose_engines, make_engine, session_scope
from tests.browser.conftest import ROOT, free_port, kill_tree, wait_healthy
from workbench.generate import list_generations


@pytest.fixture
def generate_app(tmp_path: Path, trained_run) -> Iterator[tuple[str, str]]:
    """``streamlit run Home.py`` on a copy of the store that holds a finished tiny training run."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(trained_run.store, data_dir / "workbench.db")
    db_url = f"sqlite:///{(data_dir / 'workbench.db').as_posix()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env.update(WORKBENCH_DATA_DIR=str(data_dir), WORKBENCH_DB_URL=db_url, WORKBENCH_DEMO_IMAGES="0",
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    port = free_port()
    log = tmp_path / "streamlit.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "Home.py", "--server.port", str(port),
                                    "--server.headless", "true", "--server.fileWatcherType", "none",
                                    "--browser.gatherUsageStats", "false"],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process, log)
        yield url, db_url
    finally:
        kill_tree(process.pid)


@pytest.mark.timeout(300)
def test_generate_one_image_and_see_it_in_the_grid(browser, generate_app, tmp_path: Path) -> None:
    url, db_url = generate_app
    page = browser.new_page()
    page.goto(f"{url}/Generate", wait_until="domcontentloaded")
    steps = page.get_by_label("Steps", exact=True)
    steps.wait_for(timeout=120_000)
    page.get_by_text("Conditioning mask (body-parts, 64 px)").wait_for(timeout=60_000)
    steps.fill("1")
    steps.press("Enter")
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_text("Generated 1 images").wait_for(timeout=180_000)
    caption = page.get_by_text("step final · seed 0").first
    caption.wait_for(timeout=60_000)
    page.screenshot(path=str(tmp_path / "generate.png"), full_page=True)
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as session:
            rows = list_generations(session)
            assert len(rows) == 1 and rows[0].seed == 0 and Path(rows[0].path).is_file()
            assert caption.inner_text().startswith(f"#{rows[0].id}")
    finally:
        dispose_engines()
