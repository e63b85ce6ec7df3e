"""Faults: long work killed outright (SIGKILL) at a random point of its run.

Each test starts the work as ``python -m workbench ...`` in a process group of its own, waits for a
seeded random progress milestone (never a fixed sleep), kills it, then checks what a user relies
on: the store passes ``PRAGMA integrity_check``, every row committed before the kill is still
there, the run's record says failed (or the dataset incomplete), no worker process of the killed
run is alive, and running the same command again (or resuming) gives what an uninterrupted run
gives: the same rows, byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from db.engine import dispose_engines, make_engine, session_scope
from workbench.settings import PROJECT_ROOT

pytestmark = pytest.mark.skipif(os.name == "nt", reason="SIGKILL of a process group is POSIX; "
                                                        "the parent watch itself is portable")
DEADLINE = 180.0  # generous: the test machine may be shared and busy


# -- helpers --------------------------------------------------------------------------------------
def _env(root: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "WORKBENCH_DATA_DIR": str(root / "data"),
            "WORKBENCH_DB_URL": f"sqlite:///{(root / 'store.db').as_posix()}", "WORKBENCH_DEMO_IMAGES": "0",
            "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``python -m workbench ARGS`` in a new session (its own process group), output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=PROJECT_ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _run(args: list[str], env: dict[str, str], timeout: float = DEADLINE) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "workbench", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _wait_for(what: str, condition: Callable[[], Any], process: subprocess.Popen | None = None,
              timeout: float = DEADLINE, log: Path | None = None) -> Any:
    """Poll ``condition`` until it returns something truthy; fail if ``process`` ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process ended (code {process.returncode}) before {what}"
                        + (f"; its log:\n{log.read_text()[-3000:]}" if log else ""))
        time.sleep(0.02)
    pytest.fail(f"{what}: not within {timeout} s" + (f"; log:\n{log.read_text()[-3000:]}" if log else ""))


def _sql(db: Path, query: str, *params: Any) -> list[tuple]:
    """Read the store with a connection of its own (as another program would), retrying while busy."""
    for _ in range(200):
        try:
            with sqlite3.connect(db, timeout=10) as connection:
                return connection.execute(query, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "no such table" not in str(exc):
                raise
            time.sleep(0.05)
    raise AssertionError(f"{db} stayed locked")


def _integrity_ok(db: Path) -> None:
    assert _sql(db, "PRAGMA integrity_check") == [("ok",)]


def _kill(process: subprocess.Popen, whole_group: bool = False) -> list[psutil.Process]:
    """SIGKILL the process (or its whole group); returns its descendants as they were just before."""
    assert process.poll() is None, "the run finished before the kill: the milestone came too late"
    descendants = psutil.Process(process.pid).children(recursive=True)
    if whole_group:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.kill()
    process.wait(timeout=30)
    return descendants


def _assert_all_gone(processes: list[psutil.Process], timeout: float = 60) -> None:
    _gone, alive = psutil.wait_procs(processes, timeout=timeout)
    left = [(p.pid, " ".join(p.cmdline())[:200]) for p in alive]
    for process in alive:  # leave nothing behind, then fail
        process.kill()
    assert not left, f"still running {timeout} s after the kill: {left}"


def _file_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


ROWS = """SELECT i.file_name, a.source_key, a.counts, a.area, a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h,
                 c.source_id, (SELECT group_concat(t.source_id) FROM (SELECT at.source_id FROM annotation_attribute aa
                               JOIN attribute at ON at.id = aa.attribute_id WHERE aa.annotation_id = a.id
                               ORDER BY at.source_id) t)
          FROM annotation a JOIN image i ON i.id = a.image_id JOIN category c ON c.id = a.category_id
          JOIN dataset d ON d.id = a.dataset_id WHERE d.name = ? ORDER BY i.file_name, a.source_key"""
IMAGES = """SELECT i.file_name, i.width, i.height, i.checksum, i.file_size FROM image i JOIN dataset d
            ON d.id = i.dataset_id WHERE d.name = ? ORDER BY i.file_name"""


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    """A demo dataset's files, large enough that an import or export takes a few seconds."""
    from workbench.demo import generate_demo

    return generate_demo(tmp_path_factory.mktemp("fault-demo") / "files", n_images=24, seed=3)


def _import_args(files, name: str) -> list[str]:
    return ["import", "imat2019", "--csv", str(files.csv), "--labels", str(files.labels),
            "--images", str(files.images_dir), "--name", name]


# -- the parent watch -----------------------------------------------------------------------------
PARENT_WITH_POOL = """
import sys, time
from workbench.processes import watched_process_pool
pool = watched_process_pool(2)
futures = [pool.submit(time.sleep, 600) for _ in range(2)]
while len(pool._processes) < 2:
    time.sleep(0.05)
print(" ".join(map(str, pool._processes)), flush=True)
time.sleep(600)
"""

# The child watches through the environment, as a training rank under accelerate's launcher does:
# the psutil watch alone, without Linux's death signal.
PARENT_WITH_WATCHING_CHILD = """
import os, subprocess, sys, time
from workbench.processes import parent_env
child = subprocess.Popen([sys.executable, "-c", (
    "import time\\n"
    "from workbench.processes import watch_parent_from_env\\n"
    "assert watch_parent_from_env() is not None\\n"
    "print('watching', flush=True)\\n"
    "time.sleep(600)\\n")], env={**os.environ, **parent_env()})
print(child.pid, flush=True)
time.sleep(600)
"""


def _parent_script(code: str) -> tuple[subprocess.Popen, list[int]]:
    process = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                               text=True, start_new_session=True)
    pids = [int(p) for p in process.stdout.readline().split()]
    return process, pids


def test_pool_workers_end_when_their_parent_is_killed():
    """The pool export and import use: SIGKILL of the parent leaves no worker running."""
    parent, pids = _parent_script(PARENT_WITH_POOL)
    workers = [psutil.Process(pid) for pid in pids]
    assert len(workers) == 2 and all(w.is_running() for w in workers)
    _kill(parent)
    _assert_all_gone(workers, timeout=30)


def test_the_parent_watch_alone_ends_a_process_whose_parent_died():
    """Without Linux's death signal (as on Windows and macOS) the psutil watch ends the child."""
    parent, (child_pid,) = _parent_script(PARENT_WITH_WATCHING_CHILD)
    child = psutil.Process(child_pid)
    assert parent.stdout.readline().strip() == "watching" and child.is_running()
    _kill(parent)
    _assert_all_gone([child], timeout=30)


# -- import ---------------------------------------------------------------------------------------
@pytest.mark.timeout(400)
def test_a_killed_import_keeps_its_rows_shows_incomplete_and_a_reimport_completes_it(demo_files, tmp_path):
    rng = random.Random(1201)
    reference = tmp_path / "reference"
    _run(_import_args(demo_files, "fashion"), _env(reference))
    expected_rows = _sql(reference / "store.db", ROWS, "fashion")
    expected_images = _sql(reference / "store.db", IMAGES, "fashion")
    assert len(expected_rows) > 100

    root = tmp_path / "killed"
    env = _env(root, WORKBENCH_IMPORT_BATCH_ROWS="2")  # many small commits: many points to die at
    db, log = root / "store.db", tmp_path / "import.log"
    milestone = rng.randint(len(expected_rows) // 10, len(expected_rows) // 2)
    process = _start(_import_args(demo_files, "fashion"), env, log)
    _wait_for(f"{milestone} annotations stored", lambda: db.exists() and _sql(
        db, "SELECT count(*) FROM sqlite_master WHERE name = 'annotation'")[0][0] and _sql(
        db, "SELECT count(*) FROM annotation")[0][0] >= milestone, process, log=log)
    committed = _sql(db, ROWS, "fashion")
    _kill(process)

    _integrity_ok(db)
    after = _sql(db, ROWS, "fashion")
    assert set(committed) <= set(after) and len(after) < len(expected_rows)
    assert set(after) <= set(expected_rows)  # nothing half-written either

    listed = _run(["datasets"], env).stdout
    assert "fashion  (incomplete: import 1 failed: the import's process ended" in listed
    stats = json.loads(_run(["stats", "--dataset", "fashion", "--json"], env).stdout)
    assert stats["import_status"] == "incomplete" and "import the same files" in stats["import_note"]
    assert _sql(db, "SELECT status, error IS NOT NULL FROM import_run") == [("failed", 1)]

    _run(_import_args(demo_files, "fashion"), env)
    _integrity_ok(db)
    assert _sql(db, ROWS, "fashion") == expected_rows
    assert _sql(db, IMAGES, "fashion") == expected_images
    assert json.loads(_run(["datasets", "--json"], env).stdout) == [
        {"name": "fashion", "import_status": "complete", "import_note": ""}]
    assert "incomplete" not in _run(["stats", "--dataset", "fashion"], env).stdout


# -- export ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def export_store(demo_files, tmp_path_factory):
    """A store with the demo imported, and an uninterrupted export (one process, no cache) to compare with."""
    from workbench.export import ExportRecipe, export_dataset
    from workbench.formats.imat2019 import import_imat2019
    from workbench.settings import Settings

    root = tmp_path_factory.mktemp("export-store")
    engine = make_engine(f"sqlite:///{(root / 'store.db').as_posix()}")
    import_imat2019(engine, csv_path=demo_files.csv, labels_path=demo_files.labels,
                    images_dir=demo_files.images_dir, name="fashion")
    recipe = ExportRecipe(dataset="fashion", format="imagefolder", resolution=512, people="ignore")
    result = export_dataset(engine, Settings(data_dir=root / "data"), recipe, root / "reference",
                            workers=1, use_cache=False)
    assert result.images == 24
    dispose_engines()
    return root, _file_hashes(root / "reference")


def _export_args(out: Path) -> list[str]:
    return ["export", "--dataset", "fashion", "--format", "imagefolder", "--resolution", "512",
            "--people", "ignore", "--out", str(out), "--workers", "2"]


def _partial_files(parent: Path) -> int:
    return sum(1 for folder in parent.glob(".out.partial-*") for p in folder.rglob("*.png"))


@pytest.mark.timeout(400)
@pytest.mark.parametrize("whole_group", [False, True], ids=["main-process", "process-group"])
def test_a_killed_export_leaves_no_worker_is_failed_and_a_rerun_is_byte_identical(export_store, tmp_path, whole_group):
    from workbench.export import list_exports

    root, reference = export_store
    copy = tmp_path / "store.db"
    copy.write_bytes((root / "store.db").read_bytes())
    env = {**_env(tmp_path), "WORKBENCH_DB_URL": f"sqlite:///{copy.as_posix()}"}
    out, log = tmp_path / "exports" / "out", tmp_path / "export.log"
    milestone = random.Random(1202 + whole_group).randint(2, 12)  # masks written, of 24
    process = _start(_export_args(out), env, log)

    def workers_busy() -> bool:
        try:
            children = psutil.Process(process.pid).children()
        except psutil.NoSuchProcess:
            return False
        return len(children) >= 2 and _partial_files(out.parent) >= milestone

    _wait_for(f"workers started and {milestone} masks written", workers_busy, process, log=log)
    descendants = _kill(process, whole_group)
    assert len(descendants) >= 2
    _assert_all_gone(descendants)  # the workers end with their parent, even killed alone
    _integrity_ok(copy)
    assert not out.exists() and _partial_files(out.parent) >= milestone  # never a half export in place
    engine = make_engine(f"sqlite:///{copy.as_posix()}")
    with session_scope(engine) as session:
        info = list_exports(session, "fashion")[0]  # newest first
    assert info.status == "failed" and "process ended before it finished" in info.error
    dispose_engines()

    _run(_export_args(out), env)
    assert _file_hashes(out) == reference
    assert not list(out.parent.glob(".out.*"))  # the killed run's leftovers were swept
    assert _sql(copy, "SELECT status FROM export ORDER BY id") == [("finished",), ("failed",), ("finished",)]


# -- captions -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    from workbench.tiny.captioners import save_tiny_blip

    return save_tiny_blip(tmp_path_factory.mktemp("tiny-blip") / "blip")


CAPTIONS = """SELECT i.file_name, c.source, c.model, c.settings_key, c.text, c.status, c.version
              FROM caption c JOIN image i ON i.id = c.image_id ORDER BY i.file_name, c.source"""


@pytest.mark.timeout(500)
def test_a_killed_captioning_job_is_failed_and_its_resume_gives_the_uninterrupted_captions(
        export_store, tiny_blip, tmp_path):
    from tests.job_waits import job_now, wait_job_ended
    from workbench.captions.run import make_captioner, run_captioning
    from workbench.settings import Settings

    root, _ = export_store
    args = ["captions", "run", "--dataset", "fashion", "--captioner", "blip", "--model", str(tiny_blip),
            "--batch-size", "1", "--max-new-tokens", "4"]
    reference = tmp_path / "reference.db"
    reference.write_bytes((root / "store.db").read_bytes())
    engine = make_engine(f"sqlite:///{reference.as_posix()}")
    settings = Settings(data_dir=tmp_path / "reference-data")
    run_captioning(engine, settings, "fashion", make_captioner(
        "blip", engine=engine, settings=settings, dataset="fashion", model=str(tiny_blip), batch_size=1,
        options={"max_new_tokens": 4}))
    dispose_engines()
    expected = _sql(reference, CAPTIONS)
    assert len(expected) == 24

    work = tmp_path / "work"
    work.mkdir()
    db = work / "store.db"
    db.write_bytes((root / "store.db").read_bytes())
    env = _env(work)
    job_id = int(_run([*args, "--background"], env).stdout.split()[1])
    milestone = random.Random(1203).randint(2, 12)
    pid = _wait_for(f"{milestone} images captioned", lambda: _sql(db, "SELECT count(*) FROM caption")[0][0] >= milestone
                    and _sql(db, "SELECT pid FROM job WHERE id = ?", job_id)[0][0], timeout=DEADLINE)
    committed = _sql(db, CAPTIONS)
    job_process = psutil.Process(pid)
    descendants = job_process.children(recursive=True)
    job_process.kill()
    _assert_all_gone([job_process, *descendants])

    _integrity_ok(db)
    assert set(committed) <= set(_sql(db, CAPTIONS))
    engine = make_engine(env["WORKBENCH_DB_URL"])
    job = job_now(engine, job_id)
    assert job["status"] == "failed" and "ended without reporting" in job["error"]
    resumed = int(_run(["jobs", "resume", str(job_id)], env).stdout.strip().split()[-1])
    assert wait_job_ended(engine, resumed, timeout=DEADLINE)["status"] == "finished"
    dispose_engines()
    _integrity_ok(db)
    assert _sql(db, CAPTIONS) == expected


# -- training -------------------------------------------------------------------------------------
@pytest.mark.timeout(600)
def test_a_killed_training_job_is_failed_and_resumes_to_the_uninterrupted_run(tiny_sd, tiny_export, tmp_path):
    """Killed after a random checkpoint, with a data loader worker (torch ends its own workers when
    their parent dies); the resume ends where an uninterrupted run ends."""
    import torch
    from safetensors.torch import load_file

    from tests.job_waits import job_now, wait_job_ended
    from train.config import load_config

    def config(name: str) -> Path:
        return load_config(None, dict(
            pretrained_model_name_or_path=str(tiny_sd), train_data_dir=str(tiny_export),
            output_dir=str(tmp_path / name), resolution=64, train_batch_size=2, max_train_steps=12,
            checkpointing_steps=2, checkpoints_total_limit=None, validation_steps=1000, num_validation_images=0,
            validation_loss_samples=1, logging_steps=1, report_to="none", dataloader_num_workers=1,
        )).to_file(tmp_path / f"{name}.yaml")

    env = _env(tmp_path)
    _run(["train", "run", "--config", str(config("reference"))], env, timeout=400)

    job_id = int(_run(["train", "start", "--config", str(config("run")), "--num-processes", "1"], env).stdout.strip())
    db = tmp_path / "store.db"
    milestone = random.Random(1204).choice([2, 4, 6])
    metrics = tmp_path / "run" / "metrics.jsonl"
    pid = _wait_for(f"checkpoint {milestone} saved and a step after it", lambda: (
        (tmp_path / "run" / f"checkpoint-{milestone}" / "train_state.json").is_file() and metrics.is_file()
        and len(metrics.read_text().splitlines()) > milestone
        and _sql(db, "SELECT pid FROM job WHERE id = ?", job_id)[0][0]), timeout=400)
    job_process = psutil.Process(pid)
    descendants = job_process.children(recursive=True)  # the data loader's worker
    assert descendants, "the run has no data loader worker to watch"
    job_process.kill()
    _assert_all_gone([job_process, *descendants])

    _integrity_ok(db)
    engine = make_engine(env["WORKBENCH_DB_URL"])
    job = job_now(engine, job_id)
    assert job["status"] == "failed" and job["restart"] == "resume"
    resumed = int(_run(["train", "resume", str(job_id)], env).stdout.strip().split()[-1])
    assert wait_job_ended(engine, resumed, timeout=400)["status"] == "finished"
    dispose_engines()
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    reference = [json.loads(line) for line in (tmp_path / "reference" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 13))
    # a resume is exact to float rounding (tests/test_train_controlnet.py), not to the bit
    assert [r["loss"] for r in records] == pytest.approx([r["loss"] for r in reference], rel=1e-5)
    resumed_weights, reference_weights = (
        load_file(str(tmp_path / name / "checkpoint-12" / "controlnet" / "diffusion_pytorch_model.safetensors"))
        for name in ("run", "reference"))
    assert resumed_weights.keys() == reference_weights.keys()
    for key, value in reference_weights.items():
        torch.testing.assert_close(resumed_weights[key], value, rtol=1e-4, atol=1e-6)
