"""Export: both formats, mask values, geometry, determinism, interruption, cache, other areas."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import Annotation, Category, Image
from db.training import Export
from workbench.export import (
    ExportError,
    ExportRecipe,
    bucket_sizes,
    export_dataset,
    list_exports,
    output_size,
    plan_geometry,
    read_manifest,
    verify_export,
)
from workbench.masks import render_image_mask
from workbench.rle import mask_to_text
from workbench.settings import PROJECT_ROOT, get_settings
from workbench.taxonomy import BUNDLED_IMAT2019_LABELS



@pytest.fixture
def settings(tmp_path):
    return get_settings(data_dir=tmp_path / "data")


def recipe(**values) -> ExportRecipe:
    return ExportRecipe(**{"dataset": "demo", "resolution": 64, **values})


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def stored_image_ids(engine) -> dict[str, int]:
    with session_scope(engine) as session:
        return dict(session.execute(select(Image.file_name, Image.id)).all())


# -- formats ----------------------------------------------------------------------------------
def test_controlnet_layout_of_the_demo(demo_engine, settings, tmp_path):
    result = export_dataset(demo_engine, settings, recipe(format="controlnet"), tmp_path / "cn")
    root = tmp_path / "cn"
    lines = [json.loads(line) for line in (root / "prompt.json").read_text().splitlines()]
    assert len(lines) == result.images == len(list((root / "source").iterdir()))
    assert result.images + result.counts["excluded_total"] == len(stored_image_ids(demo_engine))
    for line in lines:
        assert list(line) == ["source", "target", "prompt"] and line["prompt"]
        with PILImage.open(root / line["source"]) as mask, PILImage.open(root / line["target"]) as photo:
            assert (mask.mode, mask.size) == ("P", (64, 64))
            assert (photo.format, photo.mode, photo.size) == ("JPEG", "RGB", (64, 64))
    assert verify_export(root) == []
    manifest = read_manifest(root)
    assert manifest["recipe"]["scheme"] == "body-parts" and manifest["recipe"]["scheme_version"] == 1
    assert manifest["dataset"]["name"] == "demo"
    import workbench

    assert manifest["workbench_version"] == workbench.__version__
    assert set(manifest["files"]) == {p for p in tree_bytes(root) if p != "manifest.json"}


def test_imagefolder_loads_with_datasets(demo_engine, settings, tmp_path):
    import datasets

    result = export_dataset(demo_engine, settings, recipe(format="imagefolder", target_format="png"),
                            tmp_path / "hf")
    loaded = datasets.load_dataset(str(tmp_path / "hf"), cache_dir=str(tmp_path / "hf-cache"))
    train = loaded["train"]
    assert set(train.column_names) == {"image", "conditioning_image", "text"}
    assert len(train) == result.images
    row = train[0]
    assert row["image"].size == row["conditioning_image"].size == (64, 64)
    assert row["image"].format == "PNG" and isinstance(row["text"], str) and row["text"]
    first = json.loads((tmp_path / "hf" / "metadata.jsonl").read_text().splitlines()[0])
    assert row["text"] == first["text"]


# -- masks and geometry -----------------------------------------------------------------------
def test_mask_values_after_resize_are_legend_values_and_nearest_samples(demo_engine, settings,
                                                                      tmp_path):
    export_dataset(demo_engine, settings, recipe(scheme="fine", crop="person", buckets=True),
                   tmp_path / "fine")
    manifest = read_manifest(tmp_path / "fine")
    legend = {int(v) for v in manifest["scheme"]["legend"]}
    agreement = []
    for item in manifest["items"]:
        mask = np.asarray(PILImage.open(tmp_path / "fine" / f"conditioning_images/{item['index']:06d}.png"))
        assert set(np.unique(mask).tolist()) <= legend
        # Each output pixel is the full-size mask's pixel under its centre: nearest, no blending.
        with session_scope(demo_engine) as session:
            full = render_image_mask(session, item["image_id"], "fine").array
        left, top, right, bottom = item["box"]
        width, height = item["size"]
        xs = np.floor(left + (np.arange(width) + 0.5) * (right - left) / width).astype(int)
        ys = np.floor(top + (np.arange(height) + 0.5) * (bottom - top) / height).astype(int)
        expected = full[np.ix_(ys, xs)]
        agreement.append((mask == expected).mean())
    assert len(agreement) == manifest["counts"]["images"] > 0
    # Pillow samples in fixed point, so a pixel centre falling exactly on a source-pixel edge can
    # take the neighbour; anything beyond that would be a geometry or filter error.
    assert min(agreement) > 0.99, agreement


@pytest.fixture
def garment_store(engine, tmp_path):
    """Two photos drawn from their own masks (white dress, grey shoe on black), one portrait,
    one landscape, with odd sizes; the shoe lies outside a centre crop."""
    images = tmp_path / "garments" / "images"
    images.mkdir(parents=True)
    rows = []
    for name, (w, h), dress, shoe in [("tall.png", (301, 457), (40, 200, 150, 380), (210, 400, 260, 440)),
                                      ("wide.png", (457, 301), (250, 30, 400, 250), (410, 250, 450, 290))]:
        photo = np.zeros((h, w, 3), np.uint8)
        for (x0, y0, x1, y1), value, class_id in [(dress, 255, 10), (shoe, 128, 23)]:
            mask = np.zeros((h, w), bool)
            mask[y0:y1, x0:x1] = True
            photo[mask] = value
            rows.append((name, mask_to_text(mask), h, w, str(class_id)))
        PILImage.fromarray(photo).save(images / name)
    csv_path = tmp_path / "garments" / "train.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImageId", "EncodedPixels", "Height", "Width", "ClassId"])
        writer.writerows(rows)
    from workbench.formats.imat2019 import import_imat2019

    import_imat2019(engine, csv_path=csv_path, labels_path=BUNDLED_IMAT2019_LABELS, images_dir=images,
                    name="garments")
    return engine


def _box(condition: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(condition)
    return (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


@pytest.mark.parametrize("crop, buckets", [("center", False), ("person", False), ("person", True)])
def test_photo_and_mask_have_the_same_geometry(garment_store, settings, tmp_path, crop, buckets):
    out = tmp_path / f"g-{crop}-{buckets}"
    export_dataset(garment_store, settings, ExportRecipe(dataset="garments", resolution=64, crop=crop,
                                                         buckets=buckets, target_format="png",
                                                         scheme="fine"), out)
    manifest = read_manifest(out)
    legend = {name: int(value) for value, name in manifest["scheme"]["legend"].items()}
    assert len(manifest["items"]) == 2
    for item in manifest["items"]:
        photo = np.asarray(PILImage.open(out / f"images/{item['index']:06d}.png").convert("L"))
        mask = np.asarray(PILImage.open(out / f"conditioning_images/{item['index']:06d}.png"))
        assert photo.shape == mask.shape == tuple(reversed(item["size"]))
        dress_photo, dress_mask = _box(photo > 192), _box(mask == legend["dress"])
        assert max(abs(a - b) for a, b in zip(dress_photo, dress_mask)) <= 1, (item, dress_photo, dress_mask)
        # The shoe sits off to one side: only the crop around the garments keeps it.
        assert (mask == legend["shoe"]).any() == (crop == "person")
        if buckets:
            w, h = item["size"]
            assert (w > h) == (item["file_name"] == "wide.png") and w % 8 == h % 8 == 0


def test_plan_geometry_centres_follows_the_focus_and_avoids_regions():
    centre = plan_geometry(200, 400, (100, 100))
    assert centre.box == (0.0, 100.0, 200.0, 300.0)
    focus = plan_geometry(200, 400, (100, 100), focus=(0, 340, 200, 40))
    assert focus.box == (0.0, 200.0, 200.0, 400.0)  # centred on the focus, clamped to the image
    dodge = plan_geometry(200, 400, (100, 100), avoid=[(0, 0, 50, 150)])
    assert dodge.box[1] >= 150
    assert plan_geometry(200, 400, (100, 100), avoid=[(0, 100, 10, 200)]) is None
    assert plan_geometry(400, 400, (100, 100), avoid=[(0, 0, 1, 1)]) is None  # no room to slide


def test_aspect_buckets():
    sizes = bucket_sizes(512)
    assert (512, 512) in sizes and all(w % 64 == h % 64 == 0 for w, h in sizes)
    assert all(w * h <= 512 * 512 for w, h in sizes)
    w, h = output_size(3000, 2000, 512, buckets=True)
    assert abs(w / h - 1.5) < 0.2  # the 3:2 photo keeps about its aspect
    assert output_size(3000, 2000, 512, buckets=False) == (512, 512)


# -- determinism, interruption, cache --------------------------------------------------------
def test_same_recipe_on_same_data_gives_byte_identical_output(demo_engine, settings, tmp_path):
    r = recipe(format="controlnet", crop="person", validation_fraction=0.3, split="train")
    first = export_dataset(demo_engine, settings, r, tmp_path / "a", workers=1, use_cache=False)
    second = export_dataset(demo_engine, settings, r, tmp_path / "b", workers=2, use_cache=False)
    assert first.decoded == second.decoded == first.images > 0
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert first.manifest_sha256 == second.manifest_sha256
    assert read_manifest(tmp_path / "a")["counts"]["excluded"]["split: validation"] > 0


def test_a_stopped_export_leaves_nothing(demo_engine, settings, tmp_path):
    from workbench.progress import Cancelled

    seen = []
    parent = tmp_path / "exports"
    with pytest.raises(Cancelled):
        export_dataset(demo_engine, settings, recipe(), parent / "stopped", workers=1,
                       progress=lambda done, total: seen.append(done), should_stop=lambda: len(seen) > 3)
    assert 0 < max(seen) < 12
    assert list(parent.iterdir()) == []
    with session_scope(demo_engine) as session:
        assert [e.status for e in list_exports(session)] == ["cancelled"]


KILLED_EXPORT = textwrap.dedent("""
    import sys, time
    from db.engine import make_engine
    from workbench.export import ExportRecipe, export_dataset
    from workbench.settings import get_settings

    def slow(done, total):
        print(done, flush=True)
        time.sleep(0.3)

    if __name__ == "__main__":
        export_dataset(make_engine(sys.argv[1]), get_settings(), ExportRecipe(dataset="demo", resolution=64),
                       sys.argv[2], workers=1, progress=slow)
""")


def test_an_export_killed_midway_leaves_no_half_dataset(demo_engine, settings, tmp_path):
    script = tmp_path / "slow_export.py"
    script.write_text(KILLED_EXPORT)
    parent = tmp_path / "exports"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "WORKBENCH_DATA_DIR": str(settings.data_dir)}
    process = subprocess.Popen([sys.executable, str(script), str(demo_engine.url), str(parent / "killed")],
                               stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        for line in process.stdout:
            if int(line) >= 3:
                break
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert not (parent / "killed").exists()
    leftovers = list(parent.iterdir())
    assert all(p.name.startswith(".killed.partial-") for p in leftovers)  # hidden, never the destination
    with session_scope(demo_engine) as session:
        assert [(e.status, e.error is not None) for e in list_exports(session)] == [("failed", True)]
    # The next export into the same folder sweeps what the killed process could not remove.
    export_dataset(demo_engine, settings, recipe(), parent / "next", workers=1)
    assert [p.name for p in parent.iterdir()] == ["next"]


def test_reexport_with_another_scheme_decodes_no_photo(demo_engine, settings, tmp_path):
    first = export_dataset(demo_engine, settings, recipe(scheme="body-parts"), tmp_path / "parts", workers=1)
    again = export_dataset(demo_engine, settings, recipe(scheme="fine", format="controlnet"),
                           tmp_path / "fine", workers=1)
    assert first.decoded == first.images and first.cache_hits == 0
    assert again.decoded == 0 and again.cache_hits == again.images == first.images
    assert (tmp_path / "parts/images/000000.jpg").read_bytes() == (tmp_path / "fine/target/000000.jpg").read_bytes()
    assert (tmp_path / "parts/conditioning_images/000000.png").read_bytes() != \
        (tmp_path / "fine/source/000000.png").read_bytes()
    other_size = export_dataset(demo_engine, settings, recipe(resolution=128), tmp_path / "128", workers=1)
    assert other_size.decoded == other_size.images  # the key holds the resolution


def test_existing_destination_is_refused_unless_overwritten(demo_engine, settings, tmp_path):
    export_dataset(demo_engine, settings, recipe(), tmp_path / "out", workers=1)
    with pytest.raises(ExportError, match="already exists"):
        export_dataset(demo_engine, settings, recipe(), tmp_path / "out", workers=1)
    export_dataset(demo_engine, settings, recipe(format="controlnet"), tmp_path / "out", workers=1,
                   overwrite=True)
    assert (tmp_path / "out" / "prompt.json").is_file() and not (tmp_path / "out" / "metadata.jsonl").exists()
    (tmp_path / "precious").mkdir()
    with pytest.raises(ExportError, match="not an export"):
        export_dataset(demo_engine, settings, recipe(), tmp_path / "precious", workers=1, overwrite=True)


# -- selection and the other areas ------------------------------------------------------------
def test_with_no_decisions_and_no_recipe_every_image_gets_its_dataset_prompt(demo_engine, settings, tmp_path):
    from workbench.captions.mixing import training_prompts

    result = export_dataset(demo_engine, settings, recipe(format="controlnet"), tmp_path / "out", workers=1)
    manifest = read_manifest(tmp_path / "out")
    assert manifest["sources"]["people"]["source"] == "workbench.people.queue"
    assert manifest["sources"]["prompts"]["caption_recipe"] is None
    assert result.images == len(stored_image_ids(demo_engine))  # every image, no people filter
    with session_scope(demo_engine) as session:
        expected = training_prompts(session, "demo")
    first = manifest["items"][0]
    assert json.loads((tmp_path / "out/prompt.json").read_text().splitlines()[0])["prompt"] == \
        expected[first["image_id"]]


def test_reviewed_captions_only_keeps_the_images_with_an_accepted_caption(demo_engine, settings, tmp_path):
    from db.captions import Caption
    from workbench.captions.review import accept
    from workbench.captions.run import store_dataset_prompts

    store_dataset_prompts(demo_engine, "demo")
    with session_scope(demo_engine) as session:
        caption = session.scalars(select(Caption).order_by(Caption.image_id)).first()
        accept(session, caption.id, caption.version, "ana")
        accepted_image = caption.image_id
    export_dataset(demo_engine, settings, recipe(reviewed_captions_only=True), tmp_path / "out", workers=1)
    manifest = read_manifest(tmp_path / "out")
    assert [i["image_id"] for i in manifest["items"]] == [accepted_image]
    assert len(manifest["excluded"]["no reviewed caption"]) == len(stored_image_ids(demo_engine)) - 1


@pytest.fixture
def decided(demo_engine):
    """Curator decisions on four demo images: exclude, a band over the top, a full-height strip, ok."""
    from workbench.people.queue import decide, flag_image

    ids = stored_image_ids(demo_engine)
    names = sorted(ids)
    with session_scope(demo_engine) as session:
        second = session.get(Image, ids[names[1]])
        assert second.height > second.width  # a square crop can slide down past a band at the top
        band = (second.height - second.width) // 2
    choices = [("exclude", None), ("mask-region", [[0, 0, 10_000, band]]),
               ("mask-region", [[0, 0, 10, 10_000]]), ("ok", None)]
    for name, (decision, regions) in zip(names, choices):
        with session_scope(demo_engine) as session:
            flag_id = flag_image(session, ids[name], "ana")
        with session_scope(demo_engine) as session:
            decide(session, flag_id, "ana", decision, regions=regions)
    return names, ids, band


def test_people_decisions_exclude_or_crop(demo_engine, settings, tmp_path, decided):
    names, ids, band = decided
    excluded = export_dataset(demo_engine, settings, recipe(people="exclude"), tmp_path / "ex", workers=1)
    manifest = read_manifest(tmp_path / "ex")
    assert manifest["excluded"]["people: excluded by a curator"] == [names[0]]
    assert manifest["excluded"]["people: has unlabelled-person regions"] == names[1:3]
    assert excluded.images == len(names) - 3

    export_dataset(demo_engine, settings, recipe(people="crop"), tmp_path / "crop", workers=1)
    manifest = read_manifest(tmp_path / "crop")
    assert manifest["excluded"] == {"people: excluded by a curator": [names[0]],
                                    "people: no crop avoids the flagged regions": [names[2]]}
    cropped = next(i for i in manifest["items"] if i["file_name"] == names[1])
    assert cropped["box"][1] >= band  # the window starts below the flagged band

    export_dataset(demo_engine, settings, recipe(people="ignore"), tmp_path / "all", workers=1)
    assert read_manifest(tmp_path / "all")["counts"]["images"] == len(names)


@pytest.mark.parametrize("choice", ["exclude", "include", "wait"])
def test_flagged_images_no_curator_decided_follow_the_undecided_choice(demo_engine, settings, tmp_path, decided,
                                                                        choice):
    from workbench.export import UNDECIDED_REASON, undecided_flags
    from workbench.people.queue import flag_image

    names, ids, _ = decided
    pending = names[4:6]
    for name in pending:
        with session_scope(demo_engine) as session:
            flag_image(session, ids[name], "ana")
    with session_scope(demo_engine) as session:
        assert undecided_flags(session, "demo") == 2
    out = tmp_path / choice
    if choice == "wait":
        with pytest.raises(ExportError, match=r"2 flagged image\(s\) are not decided yet .*People page"):
            export_dataset(demo_engine, settings, recipe(undecided="wait"), out, workers=1)
        assert not out.exists()
        return
    result = export_dataset(demo_engine, settings, recipe(undecided=choice), out, workers=1)
    manifest = read_manifest(out)
    exported = {i["file_name"] for i in manifest["items"]}
    assert manifest["recipe"]["undecided"] == choice
    people = manifest["sources"]["people"]
    assert (people["undecided"], people["flagged"], people["decided"], people["undecided_images"]) == \
        (choice, 6, 4, 2)
    assert "2 flagged image(s) of 'demo' are not decided yet" in result.warnings[0]
    if choice == "exclude":
        assert manifest["excluded"][UNDECIDED_REASON] == pending and not exported & set(pending)
        assert people["undecided_left_out"] == 2
    else:
        assert UNDECIDED_REASON not in manifest["excluded"] and set(pending) <= exported
        assert people["undecided_left_out"] == 0
    assert names[0] not in exported  # the decided ones follow their decisions either way


def test_wait_exports_once_every_flag_is_decided(demo_engine, settings, tmp_path, decided):
    result = export_dataset(demo_engine, settings, recipe(undecided="wait"), tmp_path / "out", workers=1)
    assert result.warnings == []
    assert read_manifest(tmp_path / "out")["sources"]["people"]["undecided_images"] == 0


def test_category_filters_and_minimum_size(demo_engine, settings, tmp_path):
    result = export_dataset(demo_engine, settings, recipe(require_categories=["dress"]), tmp_path / "d", workers=1)
    with session_scope(demo_engine) as session:
        with_dress = set(session.scalars(select(Annotation.image_id).join(Category)
                                         .where(Category.name == "dress")))
        assert {i["image_id"] for i in read_manifest(tmp_path / "d")["items"]} == with_dress
        assert result.images == len(with_dress)
        sizes = dict(session.execute(select(Image.id, func.min(Image.width, Image.height))).all())
    export_dataset(demo_engine, settings, recipe(exclude_categories=["dress"]), tmp_path / "nd", workers=1)
    assert not {i["image_id"] for i in read_manifest(tmp_path / "nd")["items"]} & with_dress
    threshold = sorted(sizes.values())[len(sizes) // 2]
    export_dataset(demo_engine, settings, recipe(min_size=threshold), tmp_path / "big", workers=1)
    kept = {i["image_id"] for i in read_manifest(tmp_path / "big")["items"]}
    assert kept == {i for i, s in sizes.items() if s >= threshold}
    with pytest.raises(ExportError, match="no category 'gown'"):
        export_dataset(demo_engine, settings, recipe(require_categories=["gown"]), tmp_path / "x", workers=1)


def test_a_finished_export_is_recorded(demo_engine, settings, tmp_path):
    result = export_dataset(demo_engine, settings, recipe(), tmp_path / "out", workers=1)
    with session_scope(demo_engine) as session:
        row = session.get(Export, result.export_id)
        assert (row.status, row.format, row.manifest_sha256) == ("finished", "imagefolder", result.manifest_sha256)
        assert row.recipe["scheme_version"] == 1 and row.counts["images"] == result.images
        assert row.out_dir == str((tmp_path / "out").resolve())


def test_fine_export_of_a_dataset_with_its_own_category_names_keeps_every_garment(garment_store, settings, tmp_path):
    """The same photos under a label file whose names iMaterialist does not have: fine gives
    each of them its own value, and the manifest's legend says which."""
    from workbench.formats.imat2019 import import_imat2019

    labels = tmp_path / "own_labels.json"
    labels.write_text(json.dumps({"info": {}, "attributes": [], "categories": [
        {"id": 10, "name": "tee", "supercategory": "upperbody", "level": 2},
        {"id": 23, "name": "sneaker", "supercategory": "legs and feet", "level": 2}]}))
    import_imat2019(garment_store, csv_path=tmp_path / "garments" / "train.csv", labels_path=labels,
                    images_dir=tmp_path / "garments" / "images", name="own")
    out = tmp_path / "own-export"
    export_dataset(garment_store, settings, ExportRecipe(dataset="own", resolution=64, crop="person",
                                                         target_format="png", scheme="fine"), out)
    legend = read_manifest(out)["scheme"]["legend"]
    assert legend == {"0": "background", "1": "tee", "2": "sneaker"}
    masks = [np.asarray(PILImage.open(path)) for path in sorted((out / "conditioning_images").glob("*.png"))]
    assert all({1, 2} <= set(np.unique(mask).tolist()) for mask in masks)
