"""Mask rendering: composition order where masks overlap, scheme values, palette PNG, resize."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image as PILImage

from db.engine import session_scope
from db.models import Annotation, Category, Dataset, Image
from workbench.masks import (
    MaskAnnotation,
    MaskError,
    compose_mask,
    render_image_mask,
    save_legend,
    save_palette_png,
)
from workbench.palette import FINE_PALETTE
from workbench.rle import decode_runs, encode_mask, mask_to_text, parse_runs, runs_area, runs_bbox, runs_to_counts
from workbench.schemes import builtin_scheme, get_scheme, save_scheme
from workbench.taxonomy import imat2019_taxonomy

H, W = 60, 40
FINE = {c.name: c.id + 1 for c in imat2019_taxonomy().categories}


def box(top: int, left: int, bottom: int, right: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[top:bottom, left:right] = True
    return m


class Store:
    """A dataset with the real 2019 categories and one image, annotations added per test."""

    def __init__(self, engine, height: int = H, width: int = W):
        self.engine = engine
        with session_scope(engine) as s:
            ds = Dataset(name="t", format="imat2019", images_root="/nowhere")
            s.add(ds)
            s.flush()
            self.dataset_id = ds.id
            self.cat = {}
            for c in imat2019_taxonomy().categories:
                row = Category(dataset_id=ds.id, source_id=c.id, name=c.name,
                               supercategory=c.supercategory)
                s.add(row)
                s.flush()
                self.cat[c.name] = row.id
            img = Image(dataset_id=ds.id, file_name="a.jpg", width=width, height=height)
            s.add(img)
            s.flush()
            self.image_id = img.id
        self.height, self.width = height, width
        self._n = 0

    def add_category(self, name: str, supercategory: str) -> None:
        with session_scope(self.engine) as s:
            row = Category(dataset_id=self.dataset_id, source_id=1000 + len(self.cat), name=name,
                           supercategory=supercategory)
            s.add(row)
            s.flush()
            self.cat[name] = row.id

    def add(self, name: str, mask: np.ndarray, counts: str | None = None) -> int:
        """Store one annotation; returns its id (ids grow in the order annotations are added)."""
        runs = encode_mask(mask)
        x, y, w, h = runs_bbox(runs, self.height)
        self._n += 1
        with session_scope(self.engine) as s:
            ann = Annotation(dataset_id=self.dataset_id, image_id=self.image_id,
                             category_id=self.cat[name], source_key=str(self._n),
                             counts=counts if counts is not None else runs_to_counts(runs, self.height * self.width),
                             area=runs_area(runs), bbox_x=x, bbox_y=y, bbox_w=w, bbox_h=h)
            s.add(ann)
            s.flush()
            return ann.id

    def render(self, scheme: str, **kwargs):
        with session_scope(self.engine) as s:
            return render_image_mask(s, self.image_id, scheme, **kwargs)


@pytest.fixture
def store(engine) -> Store:
    return Store(engine)


# --- fine: wearing order -------------------------------------------------------------------


def test_fine_sleeve_drawn_over_top_even_when_added_first(store):
    sleeve = box(10, 0, 30, 12)
    top = box(5, 5, 35, 35)
    store.add("sleeve", sleeve)  # lower id and smaller: neither may be why it wins
    store.add("top, t-shirt, sweatshirt", top)
    m = store.render("fine").array
    assert (m[sleeve] == FINE["sleeve"]).all()
    assert (m[top & ~sleeve] == FINE["top, t-shirt, sweatshirt"]).all()
    assert (m[~(top | sleeve)] == 0).all()


def test_fine_jacket_over_smaller_shirt(store):
    # By size alone the smaller shirt would sit on top; a jacket is worn over a shirt.
    jacket = box(5, 0, 40, 40)
    shirt = box(10, 10, 30, 30)
    store.add("shirt, blouse", shirt)
    store.add("jacket", jacket)
    m = store.render("fine").array
    assert (m[jacket] == FINE["jacket"]).all()
    assert not (m == FINE["shirt, blouse"]).any()


def test_fine_belt_over_dress_and_full_wearing_stack(store):
    masks = {
        "tights, stockings": box(30, 10, 60, 30),
        "pants": box(28, 8, 55, 32),
        "dress": box(10, 5, 45, 35),
        "shirt, blouse": box(8, 6, 30, 34),
        "sweater": box(8, 7, 29, 33),
        "cardigan": box(8, 8, 28, 32),
        "vest": box(8, 9, 27, 31),
        "jacket": box(8, 10, 26, 30),
        "coat": box(8, 11, 25, 29),
        "shoe": box(50, 10, 60, 30),
        "belt": box(24, 5, 27, 35),
        "hat": box(0, 10, 9, 30),
        "pocket": box(12, 12, 15, 15),
        "zipper": box(12, 14, 24, 15),
    }
    # Added top-most first, so that id order is the opposite of the expected order.
    for name in reversed(list(masks)):
        store.add(name, masks[name])
    m = store.render("fine").array
    painted = np.zeros((H, W), np.uint8)
    for name, mask in masks.items():
        painted[mask] = FINE[name]
    np.testing.assert_array_equal(m, painted)
    assert m[25, 20] == FINE["belt"]  # belt over dress (and coat)


def test_fine_same_rank_small_mask_stays_visible(store):
    big = box(0, 0, 40, 40)
    small = box(10, 10, 14, 14)
    store.add("sleeve", big)
    store.add("pocket", small)  # same rank (garment parts), added later; size decides anyway
    m = store.render("fine").array
    assert (m[small] == FINE["pocket"]).all()


def test_fine_same_rank_size_beats_id_order(engine):
    s = Store(engine)
    small = box(10, 10, 14, 14)
    s.add("pocket", small)  # small one first: lower id
    s.add("sleeve", box(0, 0, 40, 40))
    m = s.render("fine").array
    assert (m[small] == FINE["pocket"]).all()
    assert (m == FINE["sleeve"]).sum() == 40 * 40 - 16


def test_equal_area_same_rank_later_id_on_top():
    scheme = builtin_scheme("fine")
    a = encode_mask(box(0, 0, 10, 10))
    b = encode_mask(box(5, 5, 15, 15))
    anns = [MaskAnnotation("collar", "garment parts", b, 100, 8),
            MaskAnnotation("lapel", "garment parts", a, 100, 7)]
    m = compose_mask(anns, H, W, scheme)
    assert m[7, 7] == FINE["collar"]  # id 8 over id 7


# --- body-parts and cloth-seg ----------------------------------------------------------------


def test_body_parts_order(store):
    dress = box(10, 5, 50, 35)
    jacket = box(8, 8, 30, 32)
    sleeve = box(10, 8, 28, 14)
    belt = box(32, 5, 35, 35)
    scarf = box(6, 10, 12, 30)
    hat = box(0, 12, 8, 28)
    for name, mask in [("hat", hat), ("sleeve", sleeve), ("scarf", scarf), ("belt", belt),
                       ("jacket", jacket), ("dress", dress)]:
        store.add(name, mask)
    r = store.render("body-parts")
    value = {name: int(v) for v, name in r.legend.items()}
    m = r.array
    assert (m[sleeve] == value["garment parts"]).all()  # sleeve over jacket
    assert (m[belt] == value["accessories"]).all()  # belt over dress
    assert (m[jacket & ~sleeve & ~scarf] == value["upper body"]).all()  # jacket over dress
    assert (m[hat] == value["head"]).all()  # head over the scarf it overlaps
    assert (m[dress & ~jacket & ~belt] == value["full body"]).all()


def test_cloth_seg_vs_compat_values(store):
    parts = {"vest": box(0, 0, 10, 10), "skirt": box(0, 20, 10, 30), "coat": box(20, 0, 30, 10),
             "cape": box(20, 20, 30, 30), "sleeve": box(40, 0, 50, 10),
             "shoe": box(40, 20, 50, 30)}
    for name, mask in parts.items():
        store.add(name, mask)
    seg = store.render("cloth-seg")
    compat = store.render("cloth-seg-compat")
    expected_seg = {"vest": 1, "skirt": 2, "coat": 3, "cape": 3, "sleeve": 0, "shoe": 0}
    expected_compat = {"vest": 2, "skirt": 3, "coat": 3, "cape": 0, "sleeve": 0, "shoe": 0}
    for name, mask in parts.items():
        assert (seg.array[mask] == expected_seg[name]).all(), name
        assert (compat.array[mask] == expected_compat[name]).all(), name
    assert seg.legend == compat.legend == {"0": "background", "1": "upper body",
                                           "2": "lower body", "3": "full body"}
    # Leaving garment parts out is the scheme's decision, not a gap to report.
    assert seg.unmapped == compat.unmapped == []


def test_cloth_seg_wearing_order_beats_size(store):
    # A short dress under a long open jacket, and a small top under a big coat: the outer
    # garment is the bigger mask, so only wearing order puts it on top.
    dress = box(5, 5, 25, 20)
    jacket = box(0, 0, 30, 20)
    top = box(35, 25, 45, 35)
    coat = box(32, 22, 58, 40)
    for name, mask in [("jacket", jacket), ("dress", dress), ("coat", coat),
                       ("top, t-shirt, sweatshirt", top)]:
        store.add(name, mask)
    for scheme in ("cloth-seg", "cloth-seg-compat"):
        m = store.render(scheme).array
        assert (m[jacket] == 1).all(), scheme
        assert (m[coat] == 3).all(), scheme


def test_body_parts_coat_over_smaller_shirt(store):
    shirt = box(10, 10, 30, 30)
    coat = box(5, 5, 55, 35)
    store.add("coat", coat)
    store.add("shirt, blouse", shirt)
    r = store.render("body-parts")
    assert (r.array[coat] == 4).all() and r.legend["4"] == "full body"


# --- output files ----------------------------------------------------------------------------


def test_palette_png_reads_back_with_exact_values_and_palette(store, tmp_path):
    store.add("dress", box(10, 5, 50, 35))
    store.add("belt", box(30, 5, 33, 35))
    store.add("shoe", box(52, 10, 60, 20))
    r = store.render("fine")
    png = save_palette_png(r, tmp_path / "out" / "mask.png")
    legend = save_legend(r, tmp_path / "out" / "mask.json")

    with PILImage.open(png) as im:
        assert im.mode == "P"
        back = np.array(im)
        pal = im.getpalette()
    np.testing.assert_array_equal(back, r.array)
    assert set(np.unique(back).tolist()) == {0, FINE["dress"], FINE["belt"], FINE["shoe"]}
    for value in (0, FINE["dress"], FINE["belt"], FINE["shoe"]):
        assert tuple(pal[3 * value : 3 * value + 3]) == FINE_PALETTE[value]
    data = json.loads(legend.read_text())
    assert data["0"] == "background" and data[str(FINE["belt"])] == "belt"
    assert len(data) == 47
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_body_parts_png_palette(store, tmp_path):
    store.add("hat", box(0, 0, 10, 10))
    r = store.render("body-parts")
    with PILImage.open(save_palette_png(r, tmp_path / "m.png")) as im:
        pal = im.getpalette()
        assert set(np.unique(np.array(im)).tolist()) == {0, 1}
    colours = builtin_scheme("body-parts").colours()
    for value, colour in colours.items():
        assert tuple(pal[3 * value : 3 * value + 3]) == colour


def test_nearest_resize_introduces_no_new_values(store):
    store.add("dress", box(10, 5, 50, 35))
    store.add("sleeve", box(12, 5, 30, 11))
    store.add("pocket", box(20, 20, 23, 23))
    store.add("belt", box(30, 5, 33, 35))
    full = store.render("fine")
    values = set(np.unique(full.array).tolist())
    for size in [(97, 131), (13, 17), (40, 60), (300, 17)]:
        small = store.render("fine", size=size)
        assert small.array.shape == (size[1], size[0])
        assert small.array.dtype == np.uint8
        assert set(np.unique(small.array).tolist()) <= values
    double = store.render("fine", size=(2 * W, 2 * H)).array
    np.testing.assert_array_equal(double, full.array.repeat(2, 0).repeat(2, 1))


def test_bad_size_is_refused(store):
    with pytest.raises(MaskError, match="at least 1"):
        store.render("fine", size=(0, 10))


# --- unmapped, bad data, scheme versions ----------------------------------------------------


def test_unmapped_categories_are_reported_not_drawn(store):
    store.add_category("cyber armour", "future")
    store.add("cyber armour", box(0, 0, 20, 20))
    store.add("pants", box(30, 0, 60, 20))
    # body-parts falls back by supercategory, so a new upper-body garment is still drawn.
    store.add_category("tabard", "upperbody")
    store.add("tabard", box(0, 25, 10, 40))
    bp = store.render("body-parts")
    assert bp.unmapped == ["cyber armour"]
    assert (bp.array[:20, :20] == 0).all()
    assert (bp.array[:10, 25:] == 2).all()


def test_fine_gives_a_datasets_own_categories_their_own_values(store):
    """A dataset with categories iMaterialist does not name: fine is built from its own
    categories (value = rank of the source id + 1), so none is left as background, and the
    iMaterialist ones keep their values."""
    store.add_category("cyber armour", "future")  # source id 1046: after the 46
    store.add("cyber armour", box(0, 0, 20, 20))
    store.add("pants", box(30, 0, 60, 20))
    r = store.render("fine")
    assert r.unmapped == []
    assert (r.array[:20, :20] == 47).all() and r.legend["47"] == "cyber armour"
    assert (r.array[30:, :20] == FINE["pants"]).all() and r.legend[str(FINE["pants"])] == "pants"
    assert (r.scheme_name, r.scheme_version) == ("fine", get_scheme_version(store, "fine"))


def get_scheme_version(store, name: str) -> int:
    with session_scope(store.engine) as s:
        return get_scheme(s, name).version


@pytest.mark.parametrize("counts, problem", [
    (runs_to_counts([[0, H * W + 5]], H * W + 5), "past the image"),  # a mask of a bigger image
    ("0 3", "invalid character"),  # not a COCO string
])
def test_corrupt_stored_mask_names_the_annotation(store, counts, problem):
    ann = store.add("pants", box(0, 0, 5, 5), counts=counts)
    with pytest.raises(MaskError, match=rf"annotation {ann} \(pants\).*{problem}"):
        store.render("fine")


def test_compose_refuses_runs_past_the_image():
    runs = np.array([[H * W - 2, 5]])
    with pytest.raises(MaskError, match="goes past the image"):
        compose_mask([("pants", "lowerbody", runs, 5, 1)], H, W, builtin_scheme("fine"))


def test_compose_of_one_mask_matches_decode():
    rng = np.random.default_rng(0)
    mask = rng.random((H, W)) > 0.6
    runs = parse_runs(mask_to_text(mask), H, W)
    m = compose_mask([("skirt", "lowerbody", runs, int(mask.sum()), 1)], H, W,
                     builtin_scheme("fine"))
    assert m.flags.c_contiguous and m.dtype == np.uint8
    np.testing.assert_array_equal(m, decode_runs(runs, H, W).astype(np.uint8) * FINE["skirt"])


def test_compose_without_opencv_gives_the_same_mask(monkeypatch):
    rng = np.random.default_rng(1)
    scheme = builtin_scheme("body-parts")
    anns = [MaskAnnotation(name, "", encode_mask(rng.random((H, W)) > 0.5), 0, i)
            for i, name in enumerate(["dress", "sleeve", "hat"])]
    with_cv2 = compose_mask(anns, H, W, scheme)
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes ``import cv2`` fail
    np.testing.assert_array_equal(compose_mask(anns, H, W, scheme), with_cv2)
    assert set(np.unique(with_cv2).tolist()) == {0, 1, 4, 7}


def test_render_uses_latest_scheme_version_and_can_pin_one(store):
    belt = box(30, 5, 33, 35)
    store.add("belt", belt)
    with session_scope(store.engine) as s:
        scheme = get_scheme(s, "body-parts").definition
        mapping = dict(scheme.mapping, belt="garment parts")
        save_scheme(s, scheme.edited(mapping=mapping), curator="ann")
    latest = store.render("body-parts")
    pinned = store.render("body-parts", scheme_version=1)
    assert latest.scheme_version == 2 and pinned.scheme_version == 1
    assert (latest.array[belt] == 7).all()
    assert (pinned.array[belt] == 6).all()


def test_missing_image_is_a_clear_error(engine):
    with session_scope(engine) as s, pytest.raises(MaskError, match="image id 999"):
        render_image_mask(s, 999, "fine")
