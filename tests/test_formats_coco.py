"""COCO / Fashionpedia import: masks equal pycocotools' own, labels from the file, bad input refused
by annotation id, re-imports idempotent, strict mode all-or-nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import Annotation, AnnotationAttribute, Attribute, Category, Dataset, Image as ImageRow
from workbench.formats import ImportSourceError, StrictImportError, import_coco
from workbench.formats.coco import segmentation_runs
from workbench.rle import RLEError, counts_to_runs, decode_runs, parse_runs

# pycocotools' decode (the reference here, not used by the importer) trips numpy 2's copy warning.
# The store tests run on SQLite and on PostgreSQL (tests/conftest.py).
pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
              pytest.mark.both_databases]

# The real Fashionpedia taxonomy, shipped with the tests (tests/data/PROVENANCE-fashionpedia.txt).
FASHIONPEDIA_LABELS = Path(__file__).resolve().parent / "data" / "fashionpedia_category_attributes_descriptions.json"

# Deliberately sparse ids and names no built-in list has: categories must come from the file.
CATEGORIES = [
    {"id": 1, "name": "gizmo", "supercategory": "upperbody", "level": 2},
    {"id": 5, "name": "wrap thing", "supercategory": "wholebody", "level": 2},
    {"id": 17, "name": "toe cover", "supercategory": "legs and feet", "level": 2},
]
ATTRIBUTES = [
    {"id": 3, "name": "floral", "supercategory": "textile pattern", "level": 1},
    {"id": 40, "name": "a-line", "supercategory": "silhouette", "level": 1},
]
H, W = 30, 40


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed counts: alternating 0s and 1s, column-major, starting with 0s."""
    counts, current, run = [], 0, 0
    for value in mask.ravel(order="F").astype(int):
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return counts


def _compressed(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _blob(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((H, W), bool)
    mask[5:22, 8:30] = True
    mask &= rng.random((H, W)) > 0.2
    mask[0, :3] = True  # touches the first pixel, so counts start with 0
    return mask


class Coco:
    """A tiny COCO dataset on disk: images plus an instances file written per test."""

    def __init__(self, root: Path):
        self.images = root / "images"
        self.images.mkdir(parents=True)
        self.path = root / "instances.json"

    def image(self, name: str, width: int = W, height: int = H) -> str:
        path = self.images / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (width, height), (120, 80, 60)).save(path)
        return name

    def write(
        self,
        images: list[dict[str, Any]],
        annotations: list[dict[str, Any]],
        categories: list[dict[str, Any]] = CATEGORIES,
        attributes: list[dict[str, Any]] | None = ATTRIBUTES,
    ) -> Path:
        data: dict[str, Any] = {"info": {"description": "test set"}, "images": images}
        data["annotations"] = annotations
        data["categories"] = categories  # after the annotations, as COCO files often have it
        if attributes is not None:
            data["attributes"] = attributes
        self.path.write_text(json.dumps(data), encoding="utf-8")
        return self.path

    def run(self, engine, **kwargs):
        return import_coco(engine, annotations_path=self.path, images_dir=self.images, name="shop", **kwargs)


def _entry(image_id: int, file_name: str, width: int = W, height: int = H) -> dict[str, Any]:
    return {"id": image_id, "file_name": file_name, "width": width, "height": height}


def _ann(ann_id: int, image_id: int, category_id: int, segmentation: Any, **extra: Any) -> dict[str, Any]:
    # area and bbox are deliberately wrong: the importer must compute its own.
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": segmentation,
        "area": 1.5,
        "bbox": [0, 0, 1, 1],
        "iscrowd": 0,
        **extra,
    }


POLYGONS = [[5.0, 3.0, 30.5, 4.0, 28.0, 20.0, 16.0, 10.0, 6.0, 22.5], [32, 22, 38, 22, 38, 28, 32, 28]]


@pytest.fixture
def coco(tmp_path) -> Coco:
    return Coco(tmp_path / "src")


def _counts(engine) -> tuple[int, int, int]:
    with session_scope(engine) as s:
        return (
            s.scalar(select(func.count()).select_from(ImageRow)),
            s.scalar(select(func.count()).select_from(Annotation)),
            s.scalar(select(func.count()).select_from(AnnotationAttribute)),
        )


def _stored_masks(engine) -> dict[int, tuple[np.ndarray, Annotation]]:
    """Decoded masks keyed by the category's id in the file."""
    with session_scope(engine) as s:
        rows = s.execute(select(Annotation, Category.source_id, ImageRow).join(Category).join(ImageRow)).all()
        return {
            src: (decode_runs(counts_to_runs(ann.counts, img.height, img.width), img.height, img.width), ann)
            for ann, src, img in rows
        }


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))


def test_polygons_and_both_rle_forms_decode_as_pycocotools_does(engine, coco):
    coco.image("a.jpg")
    rle_mask, compressed_mask = _blob(1), _blob(2)
    anns = [
        _ann(10, 1, 1, POLYGONS),
        _ann(11, 1, 5, {"size": [H, W], "counts": _uncompressed_counts(rle_mask)}, iscrowd=1),
        _ann(12, 1, 17, _compressed(compressed_mask)),
    ]
    coco.write([_entry(1, "a.jpg")], anns)
    report = coco.run(engine)
    assert (report.images, report.annotations, report.new_annotations, report.rejected) == (1, 3, 3, [])

    reference = COCO(str(coco.path))
    stored = _stored_masks(engine)
    for ann in anns:
        expected = reference.annToMask(reference.anns[ann["id"]]).astype(bool)
        mask, row = stored[ann["category_id"]]
        np.testing.assert_array_equal(mask, expected)
        assert row.area == int(expected.sum())
        assert (row.bbox_x, row.bbox_y, row.bbox_w, row.bbox_h) == _box(expected)
    np.testing.assert_array_equal(stored[5][0], rle_mask)
    np.testing.assert_array_equal(stored[17][0], compressed_mask)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 12).flatmap(
        lambda h: st.integers(1, 12).flatmap(
            lambda w: st.lists(st.booleans(), min_size=h * w, max_size=h * w).map(
                lambda bits: np.array(bits, bool).reshape(h, w)
            )
        )
    )
)
def test_segmentation_runs_match_pycocotools_for_any_mask(mask):
    h, w = mask.shape
    for segmentation in ({"size": [h, w], "counts": _uncompressed_counts(mask)}, _compressed(mask)):
        runs = segmentation_runs(segmentation, h, w)
        np.testing.assert_array_equal(decode_runs(runs, h, w), mask)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 25, allow_nan=False), min_size=6, max_size=16).filter(lambda v: len(v) % 2 == 0))
def test_polygon_runs_match_pycocotools(coords):
    h, w = 20, 24
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([coords], h, w))).astype(bool)
    np.testing.assert_array_equal(decode_runs(segmentation_runs([coords], h, w), h, w), expected)


def test_categories_and_attributes_come_from_the_file(engine, coco):
    coco.image("a.jpg")
    coco.write([_entry(1, "a.jpg")], [_ann(1, 1, 17, POLYGONS, attribute_ids=[40, 3, 40])])
    report = coco.run(engine)
    assert report.rejected == []
    with session_scope(engine) as s:
        cats = s.execute(select(Category.source_id, Category.name, Category.supercategory, Category.level)).all()
        assert sorted(cats) == [(c["id"], c["name"], c["supercategory"], c["level"]) for c in CATEGORIES]
        attrs = s.scalars(
            select(Attribute.source_id)
            .join(AnnotationAttribute, AnnotationAttribute.attribute_id == Attribute.id)
            .order_by(Attribute.source_id)
        ).all()
        assert attrs == [3, 40]
        assert s.scalar(select(Dataset.info)) == {"description": "test set"}
        assert s.scalar(select(Dataset.format)) == "coco"


def test_fashionpedia_taxonomy_file(engine, coco):
    labels = json.loads(FASHIONPEDIA_LABELS.read_text(encoding="utf-8"))
    attribute_ids = sorted(a["id"] for a in labels["attributes"])
    gap = next(i for i in range(attribute_ids[-1]) if i not in set(attribute_ids))
    coco.image("a.jpg")
    coco.write(
        [_entry(1, "a.jpg")],
        [
            _ann(1, 1, 0, POLYGONS, attribute_ids=[attribute_ids[0], attribute_ids[-1]]),
            _ann(2, 1, 45, _compressed(_blob(3)), attribute_ids=[]),
            _ann(3, 1, 23, POLYGONS, attribute_ids=[gap]),
        ],
        categories=labels["categories"],
        attributes=labels["attributes"],
    )
    report = coco.run(engine)
    assert report.annotations == 2
    assert [r.reason for r in report.rejected] == [
        f"annotation 3: unknown attribute id(s) [{gap}] (not in the file's 'attributes')"
    ]
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Category)) == 46
        assert s.scalar(select(func.count()).select_from(Attribute)) == 294
        names = dict(s.execute(select(Category.source_id, Category.name)).all())
        assert names[0] == labels["categories"][0]["name"]
        linked = s.scalars(
            select(Attribute.source_id).join(AnnotationAttribute).order_by(Attribute.source_id)
        ).all()
        assert linked == [attribute_ids[0], attribute_ids[-1]]


def test_bad_annotations_are_refused_by_id_and_the_rest_imported(engine, coco):
    coco.image("a.jpg")
    coco.image("b.jpg")
    good = _compressed(_blob(4))
    bad_chars = dict(good, counts="0!0")
    anns = [
        _ann(1, 1, 1, POLYGONS),
        _ann(2, 1, 99, POLYGONS),
        _ann(3, 77, 1, POLYGONS),
        _ann(4, 1, 1, [[1, 2, 3, 4, 5]]),
        _ann(5, 1, 1, [[1, 2, 3, 4]]),
        _ann(6, 1, 1, {"size": [H + 1, W], "counts": [H * W]}),
        _ann(7, 1, 1, {"size": [H, W], "counts": [5, 6]}),
        _ann(8, 1, 1, bad_chars),
        _ann(9, 1, 1, POLYGONS, attribute_ids=[3, 8]),
        _ann(1, 2, 5, POLYGONS),
        _ann(10, 1, 1, "not a mask"),
        _ann(11, 1, 1, {"size": [H, W], "counts": [H * W]}),
        _ann(12, 2, 5, good, attribute_ids=[3]),
        _ann(13, 1, 1, [[1, 2, 3, "x", 5, 6]]),
        _ann(14, [1], 1, POLYGONS),
        _ann(15, 1, 1, POLYGONS, attribute_ids="3"),
    ]
    coco.write([_entry(1, "a.jpg"), _entry(2, "b.jpg")], anns)
    report = coco.run(engine)
    assert (report.images, report.annotations) == (2, 2)
    reasons = [r.reason for r in report.rejected]
    expected = {
        2: "unknown category_id 99",
        3: "image_id 77 is not in 'images'",
        4: "odd number of coordinates",
        5: "at least 3",
        6: "RLE size [31, 40] disagrees",
        7: "RLE counts sum to 11, not height x width = 30x40 = 1200",
        8: "invalid character '!'",
        9: "unknown attribute id(s) [8]",
        1: "duplicate id",
        10: "segmentation must be a list of polygons or an RLE object",
        11: "empty mask",
        13: "polygon 0 must be a list of numbers",
        14: "image_id [1] is not in 'images'",
        15: "attribute_ids '3' must be a list of integers",
    }
    assert len(reasons) == len(expected)
    for ann_id, phrase in expected.items():
        assert any(r.startswith(f"annotation {ann_id}: ") and phrase in r for r in reasons), (ann_id, reasons)
    assert all(r.line is None for r in report.rejected)
    assert next(r for r in report.rejected if "annotation 3:" in r.reason).image_id == ""
    assert next(r for r in report.rejected if "annotation 2:" in r.reason).image_id == "a.jpg"
    assert _counts(engine) == (2, 2, 1)


def test_image_file_problems_refuse_the_image_and_its_annotations(engine, coco, monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_MAX_IMAGE_PIXELS", "10000")
    coco.image("good.jpg")
    coco.image("small.jpg", 20, 10)
    coco.image("bomb.png", 200, 100)
    (coco.images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    Image.new("RGB", (W, H)).save(tmp_path / "outside.jpg")
    entries = [
        _entry(1, "good.jpg"),
        _entry(2, "missing.jpg"),
        _entry(3, "corrupt.jpg"),
        _entry(4, "small.jpg"),  # the file is 20x10
        _entry(5, "../outside.jpg"),
        _entry(6, "bomb.png", 200, 100),
    ]
    coco.write(entries, [_ann(100 + i, i, 1, POLYGONS) for i in range(1, 7)])
    report = coco.run(engine)
    assert (report.images, report.annotations) == (1, 1)
    by_file: dict[str, list[str]] = {}
    for r in report.rejected:
        by_file.setdefault(r.image_id, []).append(r.reason)
    phrases = {
        "missing.jpg": "not found",
        "corrupt.jpg": "corrupt",
        "small.jpg": "size 40x30 (width x height) disagrees with the image file, which is 20x10",
        "../outside.jpg": "leaves the images folder",
        "bomb.png": "decompression-bomb",
    }
    assert set(by_file) == set(phrases)
    for (file_name, phrase), image_id in zip(phrases.items(), range(2, 7)):
        image_reason, ann_reason = by_file[file_name]
        assert phrase in image_reason
        assert ann_reason.startswith(f"annotation {100 + image_id}: image {image_id}: ") and phrase in ann_reason
    assert _counts(engine)[:2] == (1, 1)


def test_bad_image_entries_are_refused(engine, coco):
    coco.image("a.jpg")
    entries = [_entry(1, "a.jpg"), {"id": 2, "file_name": "a.jpg", "width": "wide", "height": H}, _entry(1, "b.jpg")]
    coco.write(entries, [_ann(1, 2, 1, POLYGONS), _ann(2, 1, 1, POLYGONS)])
    report = coco.run(engine)
    assert (report.images, report.annotations) == (1, 1)
    reasons = [r.reason for r in report.rejected]
    assert any(r.startswith("image 2: width 'wide'") for r in reasons)
    assert any(r.startswith("image 1: duplicate id") for r in reasons)
    assert any(r.startswith("annotation 1: image 2: width 'wide'") for r in reasons)


def test_images_without_annotations_are_stored(engine, coco):
    coco.image("a.jpg")
    coco.image("sub/empty.png", 16, 12)
    coco.write([_entry(1, "a.jpg"), _entry(2, "sub/empty.png", 16, 12)], [_ann(1, 1, 1, POLYGONS)])
    report = coco.run(engine)
    assert (report.images, report.annotations, report.new_images) == (2, 1, 2)
    with session_scope(engine) as s:
        row = s.scalar(select(ImageRow).where(ImageRow.file_name == "sub/empty.png"))
        data = (coco.images / "sub/empty.png").read_bytes()
        assert (row.width, row.height, row.file_size) == (16, 12, len(data))
        assert row.checksum == hashlib.sha256(data).hexdigest()


def test_reimport_changes_nothing(engine, coco):
    coco.image("a.jpg")
    coco.image("b.jpg")
    coco.write(
        [_entry(1, "a.jpg"), _entry(2, "b.jpg"), _entry(3, "missing.jpg")],
        [
            _ann(1, 1, 1, POLYGONS, attribute_ids=[3, 40]),
            _ann(2, 1, 5, _compressed(_blob(5))),
            _ann(3, 3, 1, POLYGONS),
            _ann(4, 1, 99, POLYGONS),
        ],
    )
    first = coco.run(engine)
    before = _counts(engine)
    assert before == (2, 2, 2) and first.new_annotations == 2
    second = coco.run(engine)
    assert _counts(engine) == before
    assert (second.new_images, second.new_annotations) == (0, 0)
    assert (second.images, second.annotations) == (first.images, first.annotations)
    assert [r.reason for r in second.rejected] == [r.reason for r in first.rejected]
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Category)) == len(CATEGORIES)


def test_strict_mode_writes_nothing(engine, coco):
    coco.image("a.jpg")
    coco.write([_entry(1, "a.jpg")], [_ann(1, 1, 1, POLYGONS), _ann(2, 1, 1, [[1, 2, 3]])])
    with pytest.raises(StrictImportError, match="annotation 2: polygon 0 has an odd number"):
        coco.run(engine, strict=True)
    assert _counts(engine) == (0, 0, 0)
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Dataset)) == 0


def test_progress_counts_bytes_of_both_passes(engine, coco):
    coco.image("a.jpg")
    coco.write([_entry(1, "a.jpg")], [_ann(i, 1, 1, POLYGONS) for i in range(1, 50)])
    calls: list[tuple[int, int | None]] = []
    coco.run(engine, progress=lambda done, total: calls.append((done, total)))
    total = 2 * coco.path.stat().st_size
    assert calls[-1] == (total, total)
    assert all(t == total for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_unusable_files_are_source_errors(engine, coco):
    coco.path.write_text('{"images": [{"id": 1,', encoding="utf-8")
    with pytest.raises(ImportSourceError, match="not valid JSON"):
        coco.run(engine)
    coco.write([_entry(1, "a.jpg")], [], categories=[])
    with pytest.raises(ImportSourceError, match="no categories"):
        coco.run(engine)
    coco.write([], [])
    with pytest.raises(ImportSourceError, match="no images"):
        coco.run(engine)
    with pytest.raises(ImportSourceError, match="annotations file not found"):
        import_coco(engine, annotations_path=coco.path.with_name("nope.json"), images_dir=coco.images, name="x")
    assert _counts(engine) == (0, 0, 0)


def test_segmentation_errors_name_the_problem():
    with pytest.raises(RLEError, match="non-ASCII"):
        segmentation_runs({"size": [2, 2], "counts": "é"}, 2, 2)
    with pytest.raises(RLEError, match="negative count"):
        segmentation_runs({"size": [2, 2], "counts": [5, -1]}, 2, 2)
    with pytest.raises(RLEError, match="list of integers"):
        segmentation_runs({"size": [2, 2], "counts": [1.5, 2.5]}, 2, 2)
    with pytest.raises(RLEError, match="no polygons"):
        segmentation_runs([], 2, 2)
