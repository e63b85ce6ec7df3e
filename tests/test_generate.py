"""workbench/generate.py and ``python -m workbench generate``: a tiny trained ControlNet, end to end."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from db.engine import make_engine, session_scope
from db.generations import Generation
from tests.job_waits import wait_job_ended
from train.data import control_input, fit_mask, load_mask, palette_table, read_records, read_scheme
from workbench import generate as gen
from workbench.cli import app
from workbench.progress import Cancelled

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def store(tmp_path, trained_run):
    """A private copy of the trained run's store, and its engine."""
    copy = tmp_path / "store.db"
    shutil.copy(trained_run.store, copy)
    return make_engine(f"sqlite:///{copy.as_posix()}")


def _exported(trained_run, split: str = "validation") -> dict:
    info = gen.resolve_controlnet(trained_run.run_dir / "checkpoint-2")
    return next(item for item in gen.export_images(info) if item["split"] == split)


def _request(trained_run, image_id: int, **values) -> gen.GenerateRequest:
    base = dict(base_model=str(trained_run.base_model), controlnets=[str(trained_run.run_dir / "checkpoint-2")],
                mask={"kind": "dataset", "image_id": image_id}, seeds=[3], steps=2, device="cpu")
    return gen.GenerateRequest(**{**base, **values})


def test_a_checkpoint_knows_its_scheme_export_and_resolution(trained_run):
    info = gen.resolve_controlnet(trained_run.run_dir / "checkpoint-1")
    manifest = trained_run.export_dir / "manifest.json"
    assert info.path == trained_run.run_dir / "checkpoint-1" / "controlnet"
    assert (info.step, info.channels, info.conditioning, info.resolution) == (1, 3, "palette", 64)
    assert info.scheme == "body-parts" and info.legend == json.loads(manifest.read_text())["scheme"]["legend"]
    assert info.manifest_sha256 == hashlib.sha256(manifest.read_bytes()).hexdigest()
    final = gen.resolve_controlnet(trained_run.run_dir)  # the run's final ControlNet
    assert final.step is None and final.export_dir == trained_run.export_dir


def test_trained_controlnets_lists_every_checkpoint_of_the_stored_training_jobs(trained_run, store):
    with session_scope(store) as session:
        found = gen.trained_controlnets(session)
    assert [(i.step, i.path) for i in found] == [
        (1, trained_run.run_dir / "checkpoint-1" / "controlnet"),
        (2, trained_run.run_dir / "checkpoint-2" / "controlnet"), (None, trained_run.run_dir)]


def test_the_dataset_mask_and_control_input_are_what_the_trainer_was_fed(trained_run, store):
    item = _exported(trained_run)
    info = gen.resolve_controlnet(trained_run.run_dir / "checkpoint-2")
    with session_scope(store) as session:
        mask = gen.conditioning_mask(session, info, gen.MaskSource(kind="dataset", image_id=item["image_id"]), 64)
    records = read_records(trained_run.export_dir, 0.0)
    record = next(r for r in records if r.prompt == item["prompt"] and r.split == "validation")
    exported, _palette = load_mask(record.mask)
    assert np.array_equal(mask.array, fit_mask(exported, 64, False))  # the export's crop, rendered again
    assert mask.prompt == record.prompt and mask.prompt  # the training prompt, pre-filled
    mask.palette = gen.control_palette(info)
    table = torch.from_numpy(palette_table(read_scheme(trained_run.export_dir), records).astype(np.int64))
    expected = control_input(torch.from_numpy(exported.astype(np.int64))[None], "palette", 3, table)
    assert torch.equal(gen.control_tensor(mask, info), expected)


def test_generation_saves_every_image_with_its_provenance_and_lines_checkpoints_up(trained_run, store, tmp_path):
    item = _exported(trained_run)
    request = _request(trained_run, item["image_id"], seeds=[3, 4], negative_prompt="blurry", scheduler="ddim",
                       controlnets=[str(trained_run.run_dir / "checkpoint-1"),
                                    str(trained_run.run_dir / "checkpoint-2")])
    seen = []
    results = gen.generate(store, tmp_path / "data", request, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]  # per-image progress
    assert [(r.step, r.seed) for r in results] == [(1, 3), (1, 4), (2, 3), (2, 4)]
    manifest_sha = hashlib.sha256((trained_run.export_dir / "manifest.json").read_bytes()).hexdigest()
    with session_scope(store) as session:
        rows = [session.get(Generation, r.id) for r in results]
        for row, result in zip(rows, results):
            path = Path(row.path)
            assert path.is_file() and path.is_relative_to(tmp_path / "data" / "generations")
            assert Image.open(path).size == (64, 64)
            assert row.image_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
            assert row.base_model == str(trained_run.base_model)
            assert row.controlnet == str(trained_run.run_dir / f"checkpoint-{result.step}" / "controlnet")
            assert row.export_manifest_sha256 == manifest_sha and row.scheme == "body-parts"
            assert row.prompt == item["prompt"] and row.negative_prompt == "blurry"
            assert row.settings["steps"] == 2 and row.settings["scheduler"] == "ddim"
            assert row.settings["resolution"] == 64 and row.settings["guidance"] == 7.5
            assert row.mask_source["image_id"] == item["image_id"] and Path(row.mask_path).is_file()
        assert len({r.mask_sha256 for r in rows}) == 1
        compared = gen.side_by_side(session, results[1].id)  # seed 4 across checkpoints 1 and 2
        assert [(r.checkpoint_step, r.seed) for r in compared] == [(1, 4), (2, 4)]
    # the same seed on the same checkpoint gives the same image: the seed is what the row says
    again = gen.generate(store, tmp_path / "data", request.model_copy(update={"seeds": [4]}))
    assert again[-1].path.read_bytes() == results[-1].path.read_bytes()
    assert results[0].path.read_bytes() != results[1].path.read_bytes()


def test_an_edited_mask_conditions_the_image_and_is_recorded(trained_run, store, tmp_path):
    item = _exported(trained_run)
    edits = [{"op": "paint", "shape": "ellipse", "box": [0.2, 0.2, 0.8, 0.8], "value": 1}]
    plain = gen.generate(store, tmp_path, _request(trained_run, item["image_id"]))[0]
    edited = gen.generate(store, tmp_path, _request(trained_run, item["image_id"],
                                                    mask={"kind": "dataset", "image_id": item["image_id"],
                                                          "edits": edits}))[0]
    with session_scope(store) as session:
        a, b = session.get(Generation, plain.id), session.get(Generation, edited.id)
        assert b.mask_source["edits"] == edits and a.mask_sha256 != b.mask_sha256
    assert (np.asarray(Image.open(b.mask_path)) != np.asarray(Image.open(a.mask_path))).any()


def test_cancel_between_images_keeps_what_was_generated(trained_run, store, tmp_path):
    item = _exported(trained_run)
    done = []
    with pytest.raises(Cancelled):
        gen.generate(store, tmp_path, _request(trained_run, item["image_id"], seeds=[1, 2, 3]),
                     should_stop=lambda: len(done) >= 1, on_image=done.append)
    with session_scope(store) as session:
        assert len(gen.list_generations(session)) == 1


def test_an_uploaded_mask_in_the_scheme_colours_or_as_class_ids(trained_run, store, tmp_path):
    info = gen.resolve_controlnet(trained_run.run_dir / "checkpoint-2")
    palette = gen.control_palette(info)
    ids = np.zeros((64, 64), np.uint8)
    ids[10:40, 20:44] = 2
    Image.fromarray(ids, mode="L").save(tmp_path / "ids.png")
    Image.fromarray(palette[ids]).save(tmp_path / "rgb.png")
    with session_scope(store) as session:
        for name in ("ids.png", "rgb.png"):
            mask = gen.conditioning_mask(session, info, gen.MaskSource(kind="file", path=str(tmp_path / name)), 64)
            assert np.array_equal(mask.array, ids), name


def _error(store, info, source: gen.MaskSource, match: str) -> None:
    with session_scope(store) as session, pytest.raises(gen.GenerateError, match=match):
        gen.conditioning_mask(session, info, source, 64)


def test_bad_input_gets_a_clear_message(trained_run, store, tmp_path):
    info = gen.resolve_controlnet(trained_run.run_dir / "checkpoint-2")
    item = _exported(trained_run)
    # a folder that is not a checkpoint, and one that does not exist
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    with pytest.raises(gen.GenerateError, match="is not a ControlNet checkpoint: no config.json of a ControlNetModel"):
        gen.resolve_controlnet(tmp_path / "notes")
    with pytest.raises(gen.GenerateError, match="no such file or folder"):
        gen.resolve_controlnet(tmp_path / "missing")
    # an upload that is not an image
    (tmp_path / "mask.png").write_bytes(b"this is text, not a PNG")
    _error(store, info, gen.MaskSource(kind="file", path=str(tmp_path / "mask.png")), "mask mask.png is not an image")
    # a mask of another scheme: a body-parts model never gets a fine mask
    _error(store, info, gen.MaskSource(kind="dataset", image_id=item["image_id"], scheme="fine"),
           "trained on body-parts masks, not fine")
    fine_like = np.full((64, 64), 40, np.uint8)
    Image.fromarray(fine_like, mode="L").save(tmp_path / "fine.png")
    _error(store, info, gen.MaskSource(kind="file", path=str(tmp_path / "fine.png")),
           "holds class 40, which scheme body-parts .* does not have")
    # colours that are no class colour of the scheme
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "odd.png")
    _error(store, info, gen.MaskSource(kind="file", path=str(tmp_path / "odd.png")), "colour \\(1, 2, 3\\)")


def test_a_controlnet_whose_channels_do_not_fit_the_scheme_is_refused(trained_run, store, tmp_path):
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(trained_run.base_model, subfolder="unet")
    run = tmp_path / "run"
    ControlNetModel.from_unet(unet, conditioning_channels=5).save_pretrained(run / "checkpoint-1" / "controlnet")
    config = json.loads((trained_run.run_dir / "train_config.json").read_text())
    (run / "train_config.json").write_text(json.dumps({**config, "conditioning": "onehot"}))
    info = gen.resolve_controlnet(run / "checkpoint-1")
    assert (info.channels, info.conditioning) == (5, "onehot")
    _error(store, info, gen.MaskSource(kind="dataset", image_id=_exported(trained_run)["image_id"]),
           f"takes 5 conditioning channels but its scheme body-parts has {len(info.legend)} classes")
    # palette-trained weights with another channel count are refused when read
    (run / "train_config.json").write_text(json.dumps({**config, "conditioning": "palette"}))
    with pytest.raises(gen.GenerateError, match="takes 5 conditioning channels but was trained with palette"):
        gen.resolve_controlnet(run / "checkpoint-1")


def test_a_photos_mask_comes_from_the_cloth_segmenter_in_the_controlnets_scheme(trained_run, store, tmp_path):
    from workbench.segment.predict import scheme_class_names
    from workbench.segment.tiny import build_tiny_cloth_segformer

    info = gen.resolve_controlnet(trained_run.run_dir / "checkpoint-2")
    Image.new("RGB", (80, 64), (200, 100, 50)).save(tmp_path / "photo.jpg")
    segmenter = build_tiny_cloth_segformer(tmp_path / "segformer")
    with session_scope(store) as session:
        mask = gen.conditioning_mask(session, info, gen.MaskSource(kind="photo", path=str(tmp_path / "photo.jpg"),
                                                                   segmenter=str(segmenter)), 64)
    assert mask.array.shape == (64, 64) and mask.photo is not None and mask.photo.size == (64, 64)
    cloth_values = {scheme_class_names(info.scheme)[n] for n in ("background", "upper body", "lower body", "full body")}
    assert set(np.unique(mask.array)) <= cloth_values  # the cloth classes, as the body-parts ControlNet numbers them
    _error(store, info, gen.MaskSource(kind="photo", path=str(tmp_path / "photo.jpg"),
                                       segmenter=str(tmp_path / "nothing")), "the photo's mask: .*nothing")


def test_a_missing_model_fails_at_once_offline_with_the_registry_fix(monkeypatch, tmp_path):
    from workbench.models import hub_cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("WORKBENCH_MODELS_DIR", str(tmp_path / "models"))
    started = time.monotonic()
    with pytest.raises(gen.GenerateError) as caught:
        gen.load_model("base", "someone/no-such-model")
    message = str(caught.value)
    assert message.startswith("base model someone/no-such-model:") and "cannot be reached" in message, message
    assert f"Fix: on a machine with internet run `{hub_cli()} someone/no-such-model --local-dir " \
           f"{tmp_path / 'models' / 'no-such-model'}`" in message, message
    # a registry name is looked up: the fix downloads the repo it stands for
    with pytest.raises(gen.GenerateError, match=f"`{hub_cli()} stable-diffusion-v1-5/stable-diffusion-v1-5 "):
        gen.load_model("base", "sd15")
    with pytest.raises(gen.GenerateError, match=f"OpenPose annotator openpose: .*`{hub_cli()} lllyasviel/Annotators "):
        gen.load_model("pose", "openpose")
    with pytest.raises(gen.GenerateError, match="ControlNet ./nowhere: no such file or folder"):
        gen.load_model("controlnet", "./nowhere")
    assert time.monotonic() - started < 10


def test_mask_and_pose_controlnets_together(trained_run, store, tmp_path, tiny_openpose):
    from diffusers import ControlNetModel, UNet2DConditionModel
    from diffusers import MultiControlNetModel

    unet = UNet2DConditionModel.from_pretrained(trained_run.base_model, subfolder="unet")
    ControlNetModel.from_unet(unet).save_pretrained(tmp_path / "pose-cn")
    item = _exported(trained_run)
    request = _request(trained_run, item["image_id"], conditioning_scale=0.8,
                       pose={"detector": str(tiny_openpose), "controlnet": str(tmp_path / "pose-cn"), "scale": 0.5})
    with session_scope(store) as session:
        prepared = gen.prepare(session, request, request.controlnets[0], tmp_path, gen.load_pose(request))
    assert isinstance(prepared.pipe.controlnet, MultiControlNetModel) and len(prepared.pipe.controlnet.nets) == 2
    assert prepared.scales == [0.8, 0.5] and [tuple(c.shape) for c in prepared.controls] == [(1, 3, 64, 64)] * 2
    result = gen.generate(store, tmp_path, request)[0]
    with session_scope(store) as session:
        row = session.get(Generation, result.id)
        assert row.settings["pose"] == {"detector": str(tiny_openpose), "controlnet": str(tmp_path / "pose-cn"),
                                        "scale": 0.5}
    assert Image.open(result.path).size == (64, 64)


def test_cli_generates_lists_and_compares(trained_run, tmp_path, monkeypatch):
    copy = tmp_path / "store.db"
    shutil.copy(trained_run.store, copy)
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    url = f"sqlite:///{copy.as_posix()}"
    item = _exported(trained_run)
    runner = CliRunner()
    args = ["--db", url, "generate", "run", "--base", str(trained_run.base_model), "--image-id", str(item["image_id"]),
            "--controlnet", str(trained_run.run_dir / "checkpoint-1"), "--controlnet", str(trained_run.run_dir),
            "--seed", "5", "--steps", "1", "--edit", "swap 1 2", "--device", "cpu", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["checkpoint_step"], r["seed"]) for r in rows] == [(1, 5), (None, 5)]
    assert rows[0]["prompt"] == item["prompt"]
    assert rows[0]["mask_source"]["edits"] == [{"op": "swap", "from": 1, "to": 2}]
    listed = runner.invoke(app, ["--db", url, "generate", "list", "--json"])
    assert {r["id"] for r in json.loads(listed.stdout)} == {r["id"] for r in rows}
    assert not any(r["random_weights"] for r in json.loads(listed.stdout))  # the test base is not marked tiny
    compared = runner.invoke(app, ["--db", url, "generate", "compare", str(rows[1]["id"]), "--json"])
    assert [r["checkpoint_step"] for r in json.loads(compared.stdout)] == [1, None]
    # usage errors: one line, exit 2
    bad = runner.invoke(app, ["--db", url, "generate", "run", "--base", "x", "--controlnet", str(tmp_path),
                              "--image-id", "1", "--background"])
    assert bad.exit_code == 2 and "is not a ControlNet checkpoint" in bad.output
    bad = runner.invoke(app, ["--db", url, "generate", "run", "--base", "x", "--controlnet", "y"])
    assert bad.exit_code == 2 and "exactly one of --image-id" in bad.output
    bad = runner.invoke(app, ["--db", url, "generate", "run", "--base", "x", "--controlnet", "y", "--image-id", "1",
                              "--edit", "swap 1"])
    assert bad.exit_code == 2 and "write 'swap FROM TO'" in bad.output


def test_images_from_a_tiny_test_model_are_labelled_random_weights(trained_run, tmp_path, monkeypatch):
    from workbench.models import TINY_LABEL
    from workbench.tiny import mark_tiny

    copy = tmp_path / "store.db"
    shutil.copy(trained_run.store, copy)
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    url = f"sqlite:///{copy.as_posix()}"
    base = mark_tiny(shutil.copytree(trained_run.base_model, tmp_path / "tiny-sd"), "sd")
    runner = CliRunner()
    made = runner.invoke(app, ["--db", url, "generate", "run", "--base", str(base), "--image-id",
                               str(_exported(trained_run)["image_id"]), "--controlnet", str(trained_run.run_dir),
                               "--steps", "1", "--device", "cpu", "--json"])
    assert made.exit_code == 0, made.output
    listed = json.loads(runner.invoke(app, ["--db", url, "generate", "list", "--json"]).stdout)
    assert [r["random_weights"] for r in listed] == [True]
    assert TINY_LABEL in gen.result_caption(listed[0])
    assert TINY_LABEL in runner.invoke(app, ["--db", url, "generate", "list"]).stdout


def test_a_background_job_generates_with_progress(trained_run, tmp_path, monkeypatch):
    from workbench.jobs import start_job
    from workbench.settings import get_settings

    copy = tmp_path / "store.db"
    shutil.copy(trained_run.store, copy)
    url = f"sqlite:///{copy.as_posix()}"
    settings = get_settings(db_url=url, data_dir=tmp_path / "data")
    engine = make_engine(url)
    request = _request(trained_run, _exported(trained_run)["image_id"], seeds=[1, 2])
    job_id = start_job(engine, settings, kind="generate", argv=gen.generate_argv(request))
    job = wait_job_ended(engine, job_id, timeout=240)
    assert job["status"] == "finished", Path(job["log_path"]).read_text()[-3000:]
    assert (job["done"], job["total"]) == (2, 2)
    with session_scope(engine) as session:
        rows = gen.list_generations(session, job_id=job_id)
        assert sorted(r.seed for r in rows) == [1, 2]
        assert all(Path(r.path).is_relative_to(tmp_path / "data" / "generations") for r in rows)
