"""The model registry: finding models (hub cache layout, models folder, added folder or file),
failing fast with the fix when the hub cannot be reached, and the tiny models driving real jobs."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db.engine import session_scope
from workbench.cli import app
from workbench.jobs import get_job, refresh_jobs
from workbench.models import add_model, get_model, hub_cli, is_tiny, list_models, resolve
from workbench.settings import get_settings
from workbench.tiny.captioners import save_tiny_blip


@pytest.fixture
def store(engine, tmp_path, monkeypatch):
    """Settings whose models folder and hub cache are empty folders under ``tmp_path``."""
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DB_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    return get_settings()


def _in_cache(cache: Path, repo: str, save=save_tiny_blip) -> Path:
    """A tiny model saved by ``save`` as ``repo``'s main revision in a hub cache."""
    base = cache / ("models--" + repo.replace("/", "--"))
    snapshot = save(base / "snapshots" / "0123abcd")
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text("0123abcd")
    return snapshot


def _tiny_blip_in_cache(cache: Path, repo: str) -> Path:
    return _in_cache(cache, repo)


def test_a_model_in_the_hub_cache_layout_is_found_sized_and_loaded_from_there(engine, store, tmp_path):
    snapshot = _tiny_blip_in_cache(tmp_path / "hf-cache", "Salesforce/blip-image-captioning-base")
    with session_scope(engine) as session:
        found = get_model(session, "blip-base", store)
        large = get_model(session, "blip-large", store)
    assert found.location == snapshot and found.where == "Hugging Face cache"
    assert found.state == "unchecked" and found.ready and found.size > 100_000
    assert large.state == "missing" and not large.ready
    assert "hf download Salesforce/blip-image-captioning-large" in large.fix if hub_cli() == "hf download" else True
    # a hub id (or the registry name) resolves to the cached copy: nothing is fetched
    assert resolve("Salesforce/blip-image-captioning-base", "caption") == str(snapshot)
    assert resolve("blip-base", "caption") == str(snapshot)


def test_a_download_pinned_to_a_commit_has_no_refs_main_and_is_still_found(tmp_path):
    from workbench.models import cache_snapshot

    base = tmp_path / "models--org--net" / "snapshots"
    for rev, files in (("aaa1", ["README.md"]), ("bbb2", ["config.json", "diffusion_pytorch_model.safetensors"])):
        for name in files:
            (base / rev / name).parent.mkdir(parents=True, exist_ok=True)
            (base / rev / name).write_text("x")
    assert cache_snapshot(tmp_path, "org/net", "controlnet") == base / "bbb2"  # the one holding a ControlNet
    assert cache_snapshot(tmp_path, "org/other", "controlnet") is None


def test_the_models_folder_holds_models_by_name_or_in_the_cache_layout(engine, store):
    save_tiny_blip(Path(store.models_dir) / "blip-large")
    _tiny_blip_in_cache(Path(store.models_dir), "microsoft/git-large-coco")
    with session_scope(engine) as session:
        by_name = {m.spec.name: m for m in list_models(session, store, "caption")}
    assert by_name["blip-large"].where == "models folder" and by_name["blip-large"].ready
    assert by_name["git-large-coco"].where == "models folder (hub cache layout)"
    assert by_name["blip2"].state == "missing"
    # ready ones come first in a kind
    names = list(by_name)
    assert names.index("blip-large") < names.index("blip2")


def test_an_added_folder_and_an_added_single_file_are_registered_and_found(engine, store, tmp_path):
    folder = save_tiny_blip(tmp_path / "my-blip")
    onnx = tmp_path / "cloth.onnx"
    onnx.write_bytes(b"\x08\x01" * 64)
    with session_scope(engine) as session:
        assert add_model(session, "my-blip", path=folder).kind == "caption"  # kind read from config.json
        assert add_model(session, "my-cloth", path=onnx).kind == "segmenter"
    with session_scope(engine) as session:
        blip, cloth = get_model(session, "my-blip", store), get_model(session, "my-cloth", store)
    assert (blip.location, blip.where, blip.state) == (folder.resolve(), "added", "unchecked")
    assert (cloth.location, cloth.size) == (onnx.resolve(), 128)
    # loaders resolve added names from the store without a session
    assert resolve("my-blip", "caption") == str(folder.resolve())
    result = CliRunner().invoke(app, ["models", "add", "bad name", str(folder)])
    assert result.exit_code == 2 and "model name 'bad name'" in result.output
    gone = CliRunner().invoke(app, ["models", "add", "x", str(tmp_path / "nothing")])
    assert gone.exit_code == 2 and "does not exist" in gone.output


@pytest.mark.parametrize("source, repo", [
    ("hf-hub:org/tiny-clip", "org/tiny-clip"),
    ("ViT-B-32/laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),  # open_clip's repo for that tag
])
@pytest.mark.parametrize("cache_env", ["HF_HUB_CACHE", "HF_HOME"])
def test_a_clip_added_by_hub_id_is_found_in_the_hub_cache_and_loaded_from_there(engine, store, tmp_path, monkeypatch,
                                                                                source, repo, cache_env):
    import torch

    from workbench.captions.interrogator import load_clip
    from workbench.tiny.captioners import save_tiny_clip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if cache_env == "HF_HOME":
        monkeypatch.delenv("HF_HUB_CACHE")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    cache = tmp_path / ("hf-cache" if cache_env == "HF_HUB_CACHE" else "hf-home/hub")
    snapshot = _in_cache(cache, repo, save_tiny_clip)
    for name, hub_id in (("my-clip", source), ("other-clip", "hf-hub:org/not-downloaded")):
        added = CliRunner().invoke(app, ["models", "add", name, hub_id, "--hub", "--kind", "clip"])
        assert added.exit_code == 0, added.output
    listed = CliRunner().invoke(app, ["models", "list", "--kind", "clip", "--json"])
    by_name = {m["name"]: m for m in json.loads(listed.output)}
    assert (by_name["my-clip"]["state"], by_name["my-clip"]["where"]) == ("unchecked", "Hugging Face cache")
    assert by_name["my-clip"]["location"] == str(snapshot) and by_name["my-clip"]["spec"] == source
    assert by_name["other-clip"]["state"] == "missing" and "org/not-downloaded" in by_name["other-clip"]["fix"]
    assert resolve("my-clip", "clip") == str(snapshot)
    clip = load_clip("my-clip", "cpu")  # the cached tiny model: 32-dimensional, not a ViT-B-32's 512
    with torch.no_grad():
        assert clip.model.encode_image(torch.zeros(1, 3, 32, 32)).shape == (1, 32)


def test_check_records_ready_broken_and_missing_with_the_fix(engine, store, tmp_path):
    from workbench.models_check import check_models

    good = save_tiny_blip(tmp_path / "good")
    bad = save_tiny_blip(tmp_path / "bad")
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    with session_scope(engine) as session:
        add_model(session, "good-blip", path=good)
        add_model(session, "bad-blip", path=bad)
    results = {r["name"]: r for r in check_models(engine, store, ["good-blip", "bad-blip", "blip2"])}
    assert results["good-blip"]["state"] == "ready"
    assert results["bad-blip"]["state"] == "broken" and str(bad.resolve()) in results["bad-blip"]["fix"]
    assert results["blip2"]["state"] == "missing" and "Salesforce/blip2-opt-2.7b" in results["blip2"]["fix"]
    with session_scope(engine) as session:  # stored: the list shows the last check
        shown = {m.spec.name: m for m in list_models(session, store, "caption")}
    assert shown["bad-blip"].state == "broken" and not shown["bad-blip"].ready and shown["bad-blip"].reason
    assert shown["good-blip"].state == "ready" and shown["good-blip"].checked_at is not None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hub_unreachable(store, monkeypatch):
    """The hub at a closed local port, HF_HUB_OFFLINE unset: what a machine without internet sees."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    return store


def _fails_fast(call, error, *needles: str) -> str:
    start = time.monotonic()
    with pytest.raises(error) as caught:
        call()
    seconds = time.monotonic() - start
    message = str(caught.value)
    assert seconds < 10, f"took {seconds:.1f} s: {message}"
    assert "cannot be reached" in message, message
    for needle in needles:
        assert needle in message, message
    return message


def test_captioners_fail_in_seconds_offline_with_the_registry_fix(hub_unreachable):
    from workbench.captions.base import CaptionerError, clear_models
    from workbench.captions.blip import load_caption_model
    from workbench.captions.interrogator import load_clip
    from workbench.captions.kosmos2 import Kosmos2Captioner

    clear_models()
    cli = hub_cli()
    _fails_fast(lambda: load_caption_model("blip-large", "cpu"), CaptionerError,
                f"{cli} Salesforce/blip-image-captioning-large --local-dir")
    message = _fails_fast(lambda: load_clip("ViT-L-14/openai", "cpu"), CaptionerError,
                          f"{cli} timm/vit_large_patch14_clip_224.openai open_clip_config.json",
                          "pretrained=")
    # the old hint gave the open_clip spec to a hub download command, with a CLI this venv lacks
    assert "download ViT-L-14/openai" not in message
    assert "huggingface-cli" not in message or cli != "hf download"
    _fails_fast(lambda: Kosmos2Captioner().load(), CaptionerError, f"{cli} microsoft/kosmos-2-patch14-224")


def test_detectors_fail_in_seconds_offline_with_the_fix(hub_unreachable):
    from workbench.people.detectors import DetectorError
    from workbench.people.grounding_dino import GroundingDinoDetector

    _fails_fast(lambda: GroundingDinoDetector().load(), DetectorError,
                f"{hub_cli()} IDEA-Research/grounding-dino-tiny --local-dir")


def test_the_training_base_model_fails_in_seconds_offline_with_the_fix(hub_unreachable, tmp_path):
    from train.add_control import AddControlError, create_controlnet
    from train.config import ConfigError, TrainConfig
    from train.controlnet import load_models

    config = TrainConfig(pretrained_model_name_or_path="runwayml/stable-diffusion-v1-5",
                         train_data_dir=str(tmp_path), output_dir=str(tmp_path / "out"))
    _fails_fast(lambda: load_models(config, 3), ConfigError,
                f"{hub_cli()} stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir")
    _fails_fast(lambda: create_controlnet("sd15", tmp_path / "cn"), AddControlError, "sd15")



def test_the_repair_models_fail_in_seconds_offline_with_the_fix(hub_unreachable):
    from workbench.repair_models import RepairError, clear_models, load_inpaint, load_sam

    clear_models()
    _fails_fast(lambda: load_sam("sam-vit-base", "cpu"), RepairError,
                f"{hub_cli()} facebook/sam-vit-base --local-dir", "models add sam-vit-base")
    _fails_fast(lambda: load_inpaint("sd15-inpaint", "cpu"), RepairError,
                f"{hub_cli()} stable-diffusion-v1-5/stable-diffusion-inpainting --local-dir")

# -- tiny models, end to end ---------------------------------------------------------------------------
def run_cli(db: str, *args: str):
    return CliRunner().invoke(app, ["--db", db, *args])


def wait_job(engine, job_id: int, data_dir: Path, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while True:
        refresh_jobs(engine)
        with session_scope(engine) as session:
            status = get_job(session, job_id).status
        if status not in ("queued", "running", "cancelling") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == "finished", (data_dir / "jobs" / f"{job_id}.log").read_text()
    return status


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, demo_template):
    """A demo store whose models folder got ``models tiny`` (every tiny model written and checked)."""
    from db.engine import make_engine
    from tests.tiny_models import demo_store_with_tiny_models

    with demo_store_with_tiny_models(tmp_path_factory.mktemp("tiny-store"), demo_template[0]) as (db, data, checked):
        yield make_engine(db), db, data, checked


def test_models_tiny_makes_every_kind_ready(tiny_store):
    engine, db, data_dir, checked = tiny_store
    assert {r["state"] for r in checked} == {"ready"}
    listed = json.loads(run_cli(db, "models", "list", "--json").stdout)
    ready_kinds = {m["kind"] for m in listed if m["ready"] and m["tiny"]}
    from workbench.models import KINDS

    assert ready_kinds == set(KINDS)
    assert next(m for m in listed if m["name"] == "tiny-openpose")["state"] == "ready"
    assert all(is_tiny(m["location"]) for m in listed if m["tiny"])


def test_a_clip_fast_caption_job_runs_on_the_tiny_models_by_name(tiny_store):
    engine, db, data_dir, _ = tiny_store
    started = run_cli(db, "captions", "run", "--dataset", "demo", "--captioner", "clip-fast", "--model", "tiny-clip",
                      "--limit", "4", "--background")
    assert started.exit_code == 0, started.output
    wait_job(engine, int(started.output.split()[1]), data_dir)
    rows = json.loads(run_cli(db, "captions", "list", "--dataset", "demo", "--source", "clip-fast", "--json").stdout)
    assert len(rows) == 4 and all(r["model"] == "tiny-clip" for r in rows)
    assert all(r["random_weights"] for r in rows)


def test_a_detection_job_runs_on_the_tiny_detector_by_name(tiny_store):
    engine, db, data_dir, _ = tiny_store
    started = run_cli(db, "people", "detect", "--dataset", "demo", "--detector", "grounding-dino",
                      "--model", "tiny-grounding-dino", "--limit", "3", "--background")
    assert started.exit_code == 0, started.output
    wait_job(engine, int(started.stdout.strip()), data_dir)
    torchvision = run_cli(db, "people", "detect", "--dataset", "demo", "--detector", "torchvision",
                          "--model", "tiny-maskrcnn", "--limit", "2")
    assert torchvision.exit_code == 0, torchvision.output
    assert json.loads(torchvision.stdout[torchvision.stdout.index("{"):])["processed"] == 2


def test_a_training_job_runs_on_the_tiny_base_by_name(tiny_store, tiny_export, tmp_path):
    engine, db, data_dir, _ = tiny_store
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps({"pretrained_model_name_or_path": "tiny-sd", "train_data_dir": str(tiny_export),
                                  "output_dir": str(tmp_path / "out"), "resolution": 64, "train_batch_size": 2,
                                  "max_train_steps": 2, "checkpointing_steps": 2, "validation_steps": 100}))
    started = run_cli(db, "train", "start", "--config", str(config))
    assert started.exit_code == 0, started.output
    job_id = int(started.stdout.strip())
    wait_job(engine, job_id, data_dir, timeout=300)
    assert (tmp_path / "out" / "config.json").is_file()
