"""People repairs: erase or label an unlabelled person, kept apart from the dataset's own masks,
used by the export only when asked (tiny random SAM, inpainting pipeline and cloth segmenter)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import Annotation, AuditLog, Image
from db.people import PeopleFlag
from db.repair import PeopleRepair, RepairAnnotation
from workbench.datasets import dataset_stats
from workbench.export import ExportRecipe, export_dataset, read_manifest
from workbench.repair import (
    InpaintSettings,
    RepairError,
    list_repairs,
    preview_label,
    propose_box,
    remove_repair,
    repair_image,
    undo_last_repair,
)
from workbench.rle import counts_to_runs, decode_runs
from workbench.settings import get_settings


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    return get_settings()


def unlabelled(demo_files) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Demo images with an unlabelled person, and that person's box as x0,y0,x1,y1."""
    truth = json.loads(demo_files.truth.read_text())["images"]
    found = []
    for name, info in sorted(truth.items()):
        for person in info["people"]:
            if not person["labelled"]:
                x, y, w, h = person["box"]
                found.append((name, (int(x), int(y), int(x + w), int(y + h))))
                break
    assert len(found) >= 2, "the demo should hold images with an unlabelled person"
    return found


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_a_label_repair_stores_masks_with_provenance_and_leaves_the_datasets_annotations_alone(
        demo_engine, demo_files, settings, tiny_sam_dir, tmp_path):
    from workbench.eda import dataset_eda

    (name, box), *_ = unlabelled(demo_files)
    eda_before = dataset_eda(demo_engine, "demo", cache_dir=tmp_path / "eda-before")
    with session_scope(demo_engine) as session:
        before_rows = session.scalar(select(func.count()).select_from(Annotation))
        before_stats = dataset_stats(session, "demo")
    with session_scope(demo_engine) as session:
        info = repair_image(session, settings, "demo", name, box, action="label", curator="ana", source="sam",
                            category="dress", model=str(tiny_sam_dir), device="cpu")
    assert (info.action, info.source, info.curator, info.box) == ("label", "sam", "ana", list(box))
    assert info.model == str(tiny_sam_dir) and info.masks[0]["category"] == "dress"
    assert info.random_weights  # made with a tiny test model, and marked so
    with session_scope(demo_engine) as session:
        assert session.scalar(select(func.count()).select_from(Annotation)) == before_rows
        assert dataset_stats(session, "demo") == before_stats
        image = session.scalar(select(Image).where(Image.file_name == name))
        [mask_row] = session.scalars(select(RepairAnnotation).where(RepairAnnotation.repair_id == info.id))
        mask = decode_runs(counts_to_runs(mask_row.counts, image.height, image.width), image.height, image.width)
        audit = session.scalars(select(AuditLog).where(AuditLog.entity == "people_repair")).all()
        row = session.get(PeopleRepair, info.id)
    eda_after = dataset_eda(demo_engine, "demo", cache_dir=tmp_path / "eda-after")  # computed afresh
    assert (eda_after.masks, eda_after.images_with_masks) == (eda_before.masks, eda_before.images_with_masks)
    assert eda_after.categories.equals(eda_before.categories)
    assert mask.any() and mask_row.area == int(mask.sum())
    ys, xs = np.nonzero(mask)  # SAM's mask is kept inside the curator's box
    assert xs.min() >= box[0] and xs.max() < box[2] and ys.min() >= box[1] and ys.max() < box[3]
    assert row.created_at is not None and row.removed_at is None
    assert [(a.curator, a.action, a.entity_id) for a in audit] == [("ana", "people.repair", str(info.id))]


def test_a_manual_label_is_the_box_and_the_category_must_exist(demo_engine, demo_files, settings):
    (name, box), *_ = unlabelled(demo_files)
    with session_scope(demo_engine) as session:
        [segment] = preview_label(session, "demo", name, box, "manual", category="pants")
        assert segment.category == "pants" and int(segment.mask.sum()) == (box[2] - box[0]) * (box[3] - box[1])
        with pytest.raises(RepairError, match="no category 'tutu'.*pants"):
            preview_label(session, "demo", name, box, "manual", category="tutu")
        with pytest.raises(RepairError, match="needs the garment category"):
            preview_label(session, "demo", name, box, "sam")
        with pytest.raises(RepairError, match="lies outside"):
            preview_label(session, "demo", name, (5000, 5000, 5100, 5100), "manual", category="pants")


def test_the_cloth_segmenter_names_each_garment_it_finds(demo_engine, demo_files, settings, tmp_path):
    from workbench.segment.tiny import build_tiny_cloth_segformer

    model = build_tiny_cloth_segformer(tmp_path / "tiny-segformer")
    (name, box), *_ = unlabelled(demo_files)
    with session_scope(demo_engine) as session:
        segments = preview_label(session, "demo", name, box, "cloth-segmenter", model=str(model))
        merged = preview_label(session, "demo", name, box, "cloth-segmenter", model=str(model), category="coat")
    assert {s.category for s in segments} <= {"top, t-shirt, sweatshirt", "pants", "dress"}
    assert [s.category for s in merged] == ["coat"]
    assert int(merged[0].mask.sum()) == sum(int(s.mask.sum()) for s in segments)
    outside = ~np.zeros_like(merged[0].mask)
    outside[box[1]:box[3], box[0]:box[2]] = False
    assert not (merged[0].mask & outside).any()


def test_erase_writes_a_new_photo_and_keeps_the_original(demo_engine, demo_files, settings, tiny_inpaint_dir):
    (name, box), *_ = unlabelled(demo_files)
    original = demo_files.images_dir / name
    before = sha(original)
    with session_scope(demo_engine) as session:
        filled = repair_image(session, settings, "demo", name, box, action="erase", method="fill", curator="ana")
    with session_scope(demo_engine) as session:
        painted = repair_image(session, settings, "demo", name, box, action="erase", method="inpaint", curator="ben",
                               model=str(tiny_inpaint_dir), inpaint=InpaintSettings(steps=2, resolution=64),
                               device="cpu")
    assert sha(original) == before
    first, second = (np.asarray(PILImage.open(p).convert("RGB")).astype(int)
                     for p in (filled.photo_path, painted.photo_path))
    photo = np.asarray(PILImage.open(original).convert("RGB")).astype(int)
    assert Path(filled.photo_path).is_relative_to(settings.data_dir.resolve() / "repairs")
    inside = np.zeros(photo.shape[:2], bool)
    inside[box[1]:box[3], box[0]:box[2]] = True
    assert (first[~inside] == photo[~inside]).all() and (first[inside] != photo[inside]).any()
    # the second erase starts from the first one's photo, and changes only the box
    assert (second[~inside] == first[~inside]).all() and (second[inside] != first[inside]).any()
    assert (painted.source, painted.model, painted.curator) == ("inpaint", str(tiny_inpaint_dir), "ben")
    assert painted.random_weights and not filled.random_weights


def test_remove_and_undo_keep_the_repair_on_record(demo_engine, demo_files, settings):
    (name, box), (other, other_box), *_ = unlabelled(demo_files)
    with session_scope(demo_engine) as session:
        first = repair_image(session, settings, "demo", name, box, action="erase", curator="ana")
        second = repair_image(session, settings, "demo", other, other_box, action="label", source="manual",
                              category="dress", curator="ana")
    with session_scope(demo_engine) as session:
        undone = undo_last_repair(session, "demo", "ana")
        removed = remove_repair(session, first.id, "ben")
        with pytest.raises(RepairError, match="already removed by ben"):
            remove_repair(session, first.id, "ana")
    assert (undone.id, removed.id, removed.removed_by) == (second.id, first.id, "ben")
    with session_scope(demo_engine) as session:
        assert list_repairs(session, "demo") == []
        assert [r.id for r in list_repairs(session, "demo", include_removed=True)] == [first.id, second.id]
        assert Path(first.photo_path).is_file()  # the file stays; the repair is only marked removed


def test_a_detector_proposal_gives_the_box(demo_engine, demo_files):
    (name, box), *_ = unlabelled(demo_files)
    with session_scope(demo_engine) as session:
        proposed = propose_box(session, "demo", name)
    assert proposed is not None
    (x0, y0, x1, y1), where = proposed
    assert where.startswith("annotations") and x1 > x0 and y1 > y0
    # the annotations detector's free-space proposal overlaps the unlabelled person
    assert min(x1, box[2]) > max(x0, box[0]) and min(y1, box[3]) > max(y0, box[1])


def _export(engine, settings, out: Path, **recipe) -> dict:
    export_dataset(engine, settings, ExportRecipe(dataset="demo", resolution=64, people="exclude",
                                                  undecided="include", **recipe), out, workers=1)
    return read_manifest(out)


def test_the_export_uses_repairs_only_when_asked_and_counts_them(demo_engine, demo_files, settings, tmp_path):
    (erased, erase_box), (labelled, label_box), *_ = unlabelled(demo_files)
    plain = _export(demo_engine, settings, tmp_path / "plain")
    with session_scope(demo_engine) as session:
        for file_name, box in ((erased, erase_box), (labelled, label_box)):  # both marked "mask the region"
            image = session.scalar(select(Image).where(Image.file_name == file_name))
            session.add(PeopleFlag(dataset_id=image.dataset_id, image_id=image.id, status="decided",
                                   decision="mask-region",
                                   regions=[[box[0], box[1], box[2] - box[0], box[3] - box[1]]], curator="ana"))
    decided = _export(demo_engine, settings, tmp_path / "decided")
    with session_scope(demo_engine) as session:
        repair_image(session, settings, "demo", erased, erase_box, action="erase", curator="ana")
        repair_image(session, settings, "demo", labelled, label_box, action="label", source="manual",
                     category="dress", curator="ana")
    unused = _export(demo_engine, settings, tmp_path / "unused")
    used = _export(demo_engine, settings, tmp_path / "used", repaired="include")

    names = lambda m: {i["file_name"] for i in m["items"]}  # noqa: E731
    assert {erased, labelled} <= names(plain) and not {erased, labelled} & names(decided)
    # repairs stored but not asked for: the export is the one before them, byte for byte
    assert unused["files"] == decided["files"] and unused["recipe"] == decided["recipe"]
    assert "repaired" not in unused["recipe"] and "repaired" not in unused["counts"]
    assert names(used) == names(plain)
    assert used["recipe"]["repaired"] == "include"
    counts = used["counts"]
    assert (counts["repaired"], counts["repaired_erased"], counts["repaired_labelled"]) == (2, 1, 1)
    by_name = {i["file_name"]: i for i in used["items"]}
    assert by_name[erased]["repaired"] == ["erase"] and by_name[labelled]["repaired"] == ["label"]

    def files(manifest, file_name, folder):
        index = {i["file_name"]: i["index"] for i in manifest["items"]}[file_name]
        return next(f for f in manifest["files"] if f.startswith(f"{folder}/{index:06d}."))

    # the erased image: another photo, the same mask; the labelled one: the same photo, more mask
    assert used["files"][files(used, erased, "images")] != plain["files"][files(plain, erased, "images")]
    assert used["files"][files(used, erased, "conditioning_images")] == \
        plain["files"][files(plain, erased, "conditioning_images")]
    assert used["files"][files(used, labelled, "images")] == plain["files"][files(plain, labelled, "images")]
    masks = [np.asarray(PILImage.open(root / files(m, labelled, "conditioning_images")))
             for root, m in ((tmp_path / "plain", plain), (tmp_path / "used", used))]
    assert (masks[1] > 0).sum() > (masks[0] > 0).sum()
    # every other image is exported as before
    for file_name in names(plain) - {erased, labelled}:
        assert used["files"][files(used, file_name, "images")] == plain["files"][files(plain, file_name, "images")]
