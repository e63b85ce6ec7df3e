"""The demo dataset generator: a valid iMaterialist 2019 dataset with known people in it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from workbench.demo import DemoFiles, generate_demo
from workbench.rle import decode_runs, parse_runs
from workbench.taxonomy import BUNDLED_IMAT2019_LABELS, imat2019_taxonomy

GARMENT_SUPERCATEGORIES = {"upperbody", "lowerbody", "wholebody"}


def _rows(files: DemoFiles) -> list[dict[str, str]]:
    with files.csv.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _truth(files: DemoFiles) -> dict[str, dict]:
    return json.loads(files.truth.read_text(encoding="utf-8"))["images"]


def _masks_by_image(files: DemoFiles) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Every row decoded: ``{image: [(ClassId, mask), ...]}``."""
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for row in _rows(files):
        height, width = int(row["Height"]), int(row["Width"])
        mask = decode_runs(parse_runs(row["EncodedPixels"], height, width), height, width)
        out.setdefault(row["ImageId"], []).append((row["ClassId"], mask))
    return out


@pytest.fixture(scope="module")
def demo12(tmp_path_factory: pytest.TempPathFactory) -> DemoFiles:
    return generate_demo(tmp_path_factory.mktemp("demo12"), n_images=12, seed=0)


@pytest.fixture(scope="module")
def demo60(tmp_path_factory: pytest.TempPathFactory) -> DemoFiles:
    return generate_demo(tmp_path_factory.mktemp("demo60"), n_images=60, seed=3)


def test_files_are_in_the_imaterialist_2019_layout(demo12: DemoFiles) -> None:
    header = demo12.csv.read_text(encoding="utf-8").splitlines()[0]
    assert header == "ImageId,EncodedPixels,Height,Width,ClassId"
    assert demo12.labels.read_bytes() == BUNDLED_IMAT2019_LABELS.read_bytes()
    assert sorted(p.name for p in demo12.images_dir.iterdir()) == [f"demo_{i:04d}.jpg" for i in range(12)]
    # Every image has rows, or an importer driven by train.csv would never see it.
    assert {row["ImageId"] for row in _rows(demo12)} == set(_truth(demo12))


def test_every_row_parses_and_its_size_matches_the_jpeg(demo12: DemoFiles) -> None:
    sizes = {}
    for path in demo12.images_dir.iterdir():
        with Image.open(path) as im:
            assert im.format == "JPEG"
            sizes[path.name] = (im.height, im.width)
    rows = _rows(demo12)
    assert len(rows) > 12 * 5
    for row in rows:
        height, width = int(row["Height"]), int(row["Width"])
        assert sizes[row["ImageId"]] == (height, width), row["ImageId"]
        runs = parse_runs(row["EncodedPixels"], height, width)
        assert runs[:, 1].sum() > 0


def test_image_sizes_and_aspect_ratios_vary(demo60: DemoFiles) -> None:
    shapes = {(t["width"], t["height"]) for t in _truth(demo60).values()}
    assert len(shapes) > 20
    assert any(w > h for w, h in shapes) and any(w < h for w, h in shapes)


def test_class_ids_come_from_the_real_taxonomy(demo12: DemoFiles) -> None:
    taxonomy = imat2019_taxonomy()
    categories = taxonomy.category_by_id()
    attributes = taxonomy.attribute_by_id()
    seen = set()
    for row in _rows(demo12):
        category, *attribute_ids = (int(v) for v in row["ClassId"].split("_"))
        assert category in categories, row["ClassId"]
        assert all(a in attributes for a in attribute_ids), row["ClassId"]
        assert attribute_ids == sorted(set(attribute_ids))
        cat = categories[category]
        seen.add(cat.name)
        if cat.supercategory in GARMENT_SUPERCATEGORIES:
            # Prompts are built from these, so every garment says at least its pattern.
            patterns = [a for a in attribute_ids if attributes[a].supercategory == "textile pattern"]
            assert len(patterns) == 1, row["ClassId"]
    assert {"shoe", "sleeve", "neckline"} <= seen
    assert len(seen) >= 15


def test_garment_parts_lie_inside_their_garment(demo12: DemoFiles) -> None:
    categories = imat2019_taxonomy().category_by_id()

    def supercategory(class_id: str) -> str:
        return categories[int(class_id.split("_")[0])].supercategory

    parts_checked = 0
    for image, masks in _masks_by_image(demo12).items():
        garments = [m for cid, m in masks if supercategory(cid) in GARMENT_SUPERCATEGORIES]
        for cid, part in masks:
            if supercategory(cid) != "garment parts":
                continue
            inside = max((part & g).sum() for g in garments) / part.sum()
            assert inside == 1.0, f"{image}: part {cid} is not inside any garment"
            parts_checked += 1
    assert parts_checked > 12


def test_people_per_image_and_share_of_unlabelled(demo60: DemoFiles) -> None:
    truth = _truth(demo60)
    assert len(truth) == 60
    with_unlabelled = 0
    for image, t in truth.items():
        people = t["people"]
        assert len(people) in (1, 2, 3), image
        unlabelled = [p for p in people if not p["labelled"]]
        assert t["unlabelled_person"] == bool(unlabelled)
        assert len(unlabelled) <= 1
        assert any(p["labelled"] for p in people), image
        with_unlabelled += bool(unlabelled)
    assert 7 <= with_unlabelled <= 13  # about one image in six
    counts = [len(t["people"]) for t in truth.values()]
    assert {1, 2, 3} <= set(counts)


def test_unlabelled_people_have_no_masks_and_labelled_people_do(demo60: DemoFiles) -> None:
    union = {image: np.logical_or.reduce([m for _, m in masks])
             for image, masks in _masks_by_image(demo60).items()}
    labelled, unlabelled = [], []
    for image, t in _truth(demo60).items():
        for person in t["people"]:
            x, y, w, h = person["box"]
            assert w > 0 and h > 0
            covered = float(union[image][y : y + h, x : x + w].mean())
            (labelled if person["labelled"] else unlabelled).append(covered)
    assert unlabelled and labelled
    # Other people's masks may reach into an unlabelled person's box, but never most of it.
    assert max(unlabelled) < 0.2
    assert np.median(unlabelled) < 0.05
    assert min(labelled) > 0.12
    assert np.median(labelled) > 0.25


def test_faces_of_large_figures_are_found_by_opencv(demo60: DemoFiles) -> None:
    detector = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found = total = 0
    for image, t in _truth(demo60).items():
        faces = [p["face"] for p in t["people"] if p["face"][2] >= 40]
        if not faces:
            continue
        gray = cv2.imread(str(demo60.images_dir / image), cv2.IMREAD_GRAYSCALE)
        detections = detector.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4)
        centres = [(x + w / 2, y + h / 2) for x, y, w, h in detections]
        for fx, fy, fw, fh in faces:
            total += 1
            found += any(fx <= cx <= fx + fw and fy <= cy <= fy + fh for cx, cy in centres)
    assert total >= 30
    assert found / total >= 0.6


def test_same_seed_same_files_different_seed_different(tmp_path: Path) -> None:
    a = generate_demo(tmp_path / "a", n_images=6, seed=7)
    b = generate_demo(tmp_path / "b", n_images=6, seed=7)
    c = generate_demo(tmp_path / "c", n_images=6, seed=8)
    assert a.csv.read_bytes() == b.csv.read_bytes()
    assert a.truth.read_bytes() == b.truth.read_bytes()
    for path in a.images_dir.iterdir():
        assert path.read_bytes() == (b.images_dir / path.name).read_bytes()
    assert a.csv.read_bytes() != c.csv.read_bytes()
    assert (a.images_dir / "demo_0000.jpg").read_bytes() != (c.images_dir / "demo_0000.jpg").read_bytes()


def test_regenerating_into_the_same_folder_leaves_no_stale_images(tmp_path: Path) -> None:
    generate_demo(tmp_path, n_images=8, seed=1)
    files = generate_demo(tmp_path, n_images=4, seed=1)
    assert sorted(p.name for p in files.images_dir.iterdir()) == [f"demo_{i:04d}.jpg" for i in range(4)]
    assert {row["ImageId"] for row in _rows(files)} == {f"demo_{i:04d}.jpg" for i in range(4)}


def test_progress_is_reported_up_to_the_total(tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    generate_demo(tmp_path, n_images=5, seed=0, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert all(total == 5 for _, total in calls)


@pytest.mark.parametrize("kwargs", [{"n_images": 0}, {"seed": -1}])
def test_bad_arguments_are_refused_with_a_message(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError, match="n_images|seed"):
        generate_demo(tmp_path, **kwargs)
