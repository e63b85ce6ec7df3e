"""EDA aggregates from compact frames: they agree with SQL counts, filters, drill-downs, cache."""

from __future__ import annotations


import pandas as pd
import pytest
from sqlalchemy import func, select, text

from db.engine import session_scope
from db.models import Annotation, AnnotationAttribute, Attribute, Category, Image
from workbench.eda import (
    Drill,
    EdaFilter,
    FilterError,
    ImageFacet,
    attach_facets,
    compute_eda,
    drill_images,
    image_facets,
    load_frames,
    register_facet,
    _registered,
)
from workbench.rle import runs_to_counts


@pytest.fixture
def frames(demo_engine, tmp_path):
    with session_scope(demo_engine) as session:
        return load_frames(session, "demo", cache_dir=tmp_path / "cache")


def sql_images_with(session, category: str) -> set[str]:
    """File names of demo images with a mask of ``category``, straight from SQL."""
    return set(session.scalars(
        select(Image.file_name).join(Annotation, Annotation.image_id == Image.id)
        .join(Category, Category.id == Annotation.category_id).where(Category.name == category)
    ))


def test_category_and_attribute_counts_match_sql(demo_engine, frames) -> None:
    result = compute_eda(frames)
    with session_scope(demo_engine) as session:
        masks = dict(session.execute(
            select(Category.name, func.count(Annotation.id))
            .join(Annotation, Annotation.category_id == Category.id).group_by(Category.name)).all())
        images = dict(session.execute(
            select(Category.name, func.count(func.distinct(Annotation.image_id)))
            .join(Annotation, Annotation.category_id == Category.id).group_by(Category.name)).all())
        att_masks = dict(session.execute(
            select(Attribute.name, func.count())
            .join(AnnotationAttribute, AnnotationAttribute.attribute_id == Attribute.id)
            .group_by(Attribute.name)).all())
        pairs = session.execute(text(
            "SELECT c.name, t.name, count(*) FROM annotation_attribute aa "
            "JOIN annotation a ON a.id = aa.annotation_id JOIN category c ON c.id = a.category_id "
            "JOIN attribute t ON t.id = aa.attribute_id GROUP BY c.name, t.name")).all()
        n_images = session.scalar(select(func.count(Image.id)))
        n_masks = session.scalar(select(func.count(Annotation.id)))
    used = result.categories[result.categories.masks > 0]
    assert dict(zip(used.category, used.masks)) == masks
    assert dict(zip(used.category, used.images)) == images
    used_att = result.attributes[result.attributes.masks > 0]
    assert dict(zip(used_att.attribute, used_att.masks)) == att_masks
    assert {(c, a, int(m)) for c, a, m in result.cooccurrence.itertuples(index=False)} == set(pairs)
    assert (result.images, result.masks) == (n_images, n_masks)
    assert result.masks_per_image.images.sum() == n_images
    assert (result.masks_per_image.masks * result.masks_per_image.images).sum() == n_masks
    assert result.supercategories.masks.sum() == n_masks
    assert result.splits.images.sum() == n_images
    assert result.image_sizes.images.sum() == n_images
    assert result.aspect_ratios.images.sum() == n_images


def test_area_fraction_matches_stored_areas(demo_engine, frames) -> None:
    result = compute_eda(frames)
    with session_scope(demo_engine) as session:
        rows = session.execute(
            select(Category.name, Annotation.area, Image.width, Image.height)
            .join(Annotation, Annotation.category_id == Category.id)
            .join(Image, Image.id == Annotation.image_id)).all()
    truth = pd.DataFrame(rows, columns=["category", "area", "w", "h"])
    truth["frac"] = truth.area / (truth.w * truth.h)
    expected = truth.groupby("category")["frac"].agg(["median", "mean", "count"])
    got = result.area_fraction.set_index("category")
    assert set(got.index) == set(expected.index)
    assert got["masks"].to_dict() == expected["count"].to_dict()
    assert got["median"].to_numpy() == pytest.approx(expected.loc[got.index, "median"].to_numpy())
    assert got["mean"].to_numpy() == pytest.approx(expected.loc[got.index, "mean"].to_numpy())
    assert (got["q1"] <= got["median"]).all() and (got["median"] <= got["q3"]).all()


def test_a_category_filter_keeps_exactly_the_images_with_that_category(demo_engine, frames) -> None:
    with session_scope(demo_engine) as session:
        expected = sql_images_with(session, "dress")
    result = compute_eda(frames, EdaFilter(categories=("dress",)))
    assert result.images == len(expected) > 0
    # Charts describe the kept images, all of their masks included.
    dress = result.categories.set_index("category").loc["dress"]
    assert dress.images == len(expected)
    assert dress.share_of_images == 1.0
    assert result.masks_per_image.images.sum() == len(expected)


def test_filters_combine_and_sizes_bound_the_images(frames) -> None:
    widths = frames.images.width
    middle = int(widths.median())
    narrow = compute_eda(frames, EdaFilter(max_width=middle))
    assert narrow.images == int((widths <= middle).sum())
    both = compute_eda(frames, EdaFilter(max_width=middle, categories=("shoe",)))
    assert both.images <= narrow.images
    assert compute_eda(frames, EdaFilter(min_width=int(widths.max()) + 1)).images == 0


def test_a_filter_naming_an_unknown_category_says_so(frames) -> None:
    with pytest.raises(FilterError, match="no category 'dresss'"):
        compute_eda(frames, EdaFilter(categories=("dresss",)))


def test_drill_gives_the_images_behind_a_bar_or_a_cell(demo_engine, frames) -> None:
    with session_scope(demo_engine) as session:
        dress = sql_images_with(session, "dress")
        cell = set(session.scalars(text(
            "SELECT DISTINCT i.file_name FROM annotation_attribute aa "
            "JOIN annotation a ON a.id = aa.annotation_id JOIN image i ON i.id = a.image_id "
            "JOIN category c ON c.id = a.category_id JOIN attribute t ON t.id = aa.attribute_id "
            "WHERE c.name = 'skirt' AND t.name = :att"), {"att": "mini (length)"}))
    shown = drill_images(frames, EdaFilter(), Drill(category="dress"))
    assert set(shown.file_name) == dress
    assert list(shown.file_name) == sorted(dress)
    if cell:
        assert set(drill_images(frames, EdaFilter(), Drill(category="skirt", attribute="mini (length)")).file_name) == cell
    counts = compute_eda(frames).masks_per_image
    n = int(counts.masks.iloc[0])
    assert len(drill_images(frames, EdaFilter(), Drill(masks=n))) == int(counts.images.iloc[0])
    # The drill respects the filter: dress images that also pass a size bound.
    bound = int(frames.images.width.median())
    narrow = drill_images(frames, EdaFilter(max_width=bound), Drill(category="dress"))
    assert set(narrow.file_name) == set(shown[shown.width <= bound].file_name)


def test_frames_come_from_the_disk_cache_until_the_data_changes(demo_engine, tmp_path, monkeypatch) -> None:
    import workbench.eda as eda

    cache = tmp_path / "cache"
    with session_scope(demo_engine) as session:
        first = load_frames(session, "demo", cache_dir=cache)
    cached = list((cache / "eda").iterdir())
    assert len(cached) == 1
    read = eda._read_frames

    def no_store_read(*args):
        raise AssertionError("frames were read from the store although the cache is current")

    monkeypatch.setattr(eda, "_read_frames", no_store_read)
    with session_scope(demo_engine) as session:
        again = load_frames(session, "demo", cache_dir=cache)
    pd.testing.assert_frame_equal(first.annotations, again.annotations)
    pd.testing.assert_frame_equal(first.images, again.images)
    monkeypatch.setattr(eda, "_read_frames", read)
    with session_scope(demo_engine) as session:
        image = session.scalars(select(Image)).first()
        cat = session.scalars(select(Category).where(Category.name == "hat")).one()
        session.add(Annotation(dataset_id=image.dataset_id, image_id=image.id, category_id=cat.id,
                               source_key="extra", counts=runs_to_counts([[0, 4]], image.width * image.height),
                               area=4, bbox_x=0, bbox_y=0,
                               bbox_w=1, bbox_h=4))
    with session_scope(demo_engine) as session:
        changed = load_frames(session, "demo", cache_dir=cache)
    assert len(changed.annotations) == len(first.annotations) + 1
    assert len(list((cache / "eda").iterdir())) == 2


def test_a_dataset_without_annotations_gives_empty_mask_statistics(engine, tmp_path) -> None:
    from PIL import Image as PILImage

    from workbench.formats import import_folder

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, size in enumerate([(40, 60), (64, 32)]):
        PILImage.new("RGB", size, (i * 80, 20, 20)).save(folder / f"p{i}.jpg")
    import_folder(engine, images_dir=folder, name="photos")
    with session_scope(engine) as session:
        frames = load_frames(session, "photos")
    result = compute_eda(frames)
    assert (result.images, result.masks, result.images_with_masks) == (2, 0, 0)
    assert result.cooccurrence.empty and result.area_fraction.empty
    assert result.masks_per_image.to_dict("records") == [{"masks": 0, "images": 2}]
    assert result.image_sizes.images.sum() == 2


def test_an_image_facet_plugs_in_as_a_filter_and_a_chart(demo_engine, frames) -> None:
    def review_status(session, dataset_id):
        ids = session.scalars(select(Image.id).where(Image.dataset_id == dataset_id)
                              .order_by(Image.file_name)).all()
        return pd.Series({i: "flagged" for i in ids[:3]})

    facet = ImageFacet(name="test-review", label="review", load=review_status,
                       missing="not reviewed")
    register_facet(facet)
    try:
        assert "test-review" in {f.name for f in image_facets()}
        with session_scope(demo_engine) as session:
            attach_facets(session, frames, [facet])
        result = compute_eda(frames, EdaFilter().with_facet("test-review", ["flagged"]))
        assert result.images == 3
        everything = compute_eda(frames)
        assert dict(zip(everything.facets["test-review"].value,
                        everything.facets["test-review"].images)) == {
            "flagged": 3, "not reviewed": len(frames.images) - 3}
        shown = drill_images(frames, EdaFilter(), Drill(facet="test-review", facet_value="flagged"))
        assert len(shown) == 3
    finally:
        _registered.pop("test-review", None)
    with pytest.raises(FilterError, match="no image facet 'nope'"):
        compute_eda(frames, EdaFilter().with_facet("nope", ["x"]))


def test_result_serialises_to_json(frames) -> None:
    import json

    data = compute_eda(frames, EdaFilter(categories=("shoe",))).to_dict()
    assert json.loads(json.dumps(data))["filter"]["categories"] == ["shoe"]
    assert {"categories", "attributes", "cooccurrence", "masks_per_image", "image_sizes",
            "aspect_ratios", "area_fraction", "splits", "supercategories"} <= set(data)



def test_people_and_caption_tables_become_facets(demo_engine) -> None:
    from db.captions import Caption
    from db.people import PeopleFlag, PeopleScan, PersonProposal

    with session_scope(demo_engine) as session:
        images = session.scalars(select(Image).order_by(Image.file_name)).all()
        a, b, c = images[0], images[1], images[2]
        ds = a.dataset_id
        session.add_all([
            PeopleFlag(dataset_id=ds, image_id=a.id, status="pending"),
            PeopleFlag(dataset_id=ds, image_id=b.id, status="decided", decision="exclude"),
            Caption(dataset_id=ds, image_id=a.id, source="blip", settings_key="k", status="accepted"),
            Caption(dataset_id=ds, image_id=a.id, source="clip", settings_key="k", status="rejected"),
            Caption(dataset_id=ds, image_id=c.id, source="blip", settings_key="k", status="pending"),
        ])
        labelled = PeopleScan(dataset_id=ds, image_id=a.id, detector="annotations",
                              settings_key="k", score=0.0, labelled_people=2)
        seen = PeopleScan(dataset_id=ds, image_id=a.id, detector="opencv", settings_key="k",
                          score=0.9, proposals=3)
        session.add_all([labelled, seen])
        session.flush()
        for score in (0.9, 0.8, 0.1):  # two people the masks miss, one they cover
            session.add(PersonProposal(scan_id=seen.id, image_id=a.id, detector="opencv",
                                       settings_key="k", kind="person", box_x=0, box_y=0,
                                       box_w=5, box_h=5, score=0.9, unlabelled_score=score))
    with session_scope(demo_engine) as session:
        frames = load_frames(session, "demo")
    result = compute_eda(frames)
    review = dict(zip(result.facets["people_review"].value, result.facets["people_review"].images))
    assert review == {"pending": 1, "decided: exclude": 1, "not flagged": len(images) - 2}
    captions = dict(zip(result.facets["caption"].value, result.facets["caption"].images))
    assert captions == {"accepted": 1, "pending": 1, "no caption": len(images) - 2}
    assert result.facets["people"].to_dict("records") == [{"value": 4, "images": 1}]
    kept = compute_eda(frames, EdaFilter().with_facet("people_review", ["decided: exclude"]))
    assert kept.images == 1
    shown = drill_images(frames, EdaFilter(), Drill(facet="people", facet_value=4))
    assert list(shown.file_name) == [a.file_name]
