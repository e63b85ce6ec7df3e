"""pages/02_Explore.py through AppTest on the demo store: filters, chart clicks, the gallery."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select, text
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import Annotation, Category, Image
from tests.apptest_events import ROOT, chart_spec, click_chart, images_captions, page_store, values  # noqa: F401

EXPLORE = ROOT / "pages" / "02_Explore.py"


def run(app: AppTest) -> AppTest:
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def metrics(app: AppTest) -> dict[str, int]:
    return {m.label: int(str(m.value).replace(",", "")) for m in app.metric}


def images_with(engine, category: str) -> list[str]:
    with session_scope(engine) as session:
        return sorted(set(session.scalars(
            select(Image.file_name).join(Annotation, Annotation.image_id == Image.id)
            .join(Category, Category.id == Annotation.category_id).where(Category.name == category))))


def bar_totals(spec: dict) -> dict[str, int]:
    """Category -> value of a horizontal bar chart, summed over its traces."""
    out: dict[str, int] = {}
    for trace in spec["data"]:
        for label, value in zip(values(trace["y"]), values(trace["x"])):
            out[label] = out.get(label, 0) + value
    return out


def test_first_run_shows_the_demo_statistics(page_store) -> None:
    app = run(AppTest.from_file(str(EXPLORE), default_timeout=60))
    with session_scope(page_store) as session:
        n_images = session.scalar(select(func.count(Image.id)))
        n_masks = session.scalar(select(func.count(Annotation.id)))
        per_category = dict(session.execute(
            select(Category.name, func.count(Annotation.id))
            .join(Annotation, Annotation.category_id == Category.id).group_by(Category.name)).all())
    assert metrics(app)["Images"] == n_images
    assert metrics(app)["Masks"] == n_masks
    assert bar_totals(chart_spec(app, "chart_categories")) == per_category
    assert not app.error


def test_every_category_and_attribute_bar_is_labelled(page_store) -> None:
    # Plotly's automatic ticks label only every other bar of a long category axis.
    app = run(AppTest.from_file(str(EXPLORE), default_timeout=60))
    for key in ("chart_categories", "chart_attributes"):
        spec = chart_spec(app, key)
        bars = set(bar_totals(spec))
        assert len(bars) > 10, key
        axis = spec["layout"]["yaxis"]
        assert axis["tickmode"] == "array"
        assert set(values(axis["ticktext"])) == bars == set(values(axis["tickvals"])), key


def test_a_filter_changes_every_chart(page_store) -> None:
    app = run(AppTest.from_file(str(EXPLORE), default_timeout=60))
    before = chart_spec(app, "chart_masks")
    app.sidebar.multiselect[0].set_value(["dress"])
    run(app)
    with_dress = images_with(page_store, "dress")
    assert metrics(app)["Images"] == len(with_dress)
    with session_scope(page_store) as session:
        masks = dict(session.execute(text(
            "SELECT c.name, count(*) FROM annotation a JOIN category c ON c.id = a.category_id "
            "JOIN image i ON i.id = a.image_id WHERE i.file_name IN ({}) GROUP BY c.name".format(
                ",".join(f"'{n}'" for n in with_dress)))).all())
    assert bar_totals(chart_spec(app, "chart_categories")) == masks
    assert sum(values(chart_spec(app, "chart_masks")["data"][0]["y"])) == len(with_dress)
    assert chart_spec(app, "chart_masks") != before
    assert sum(values(chart_spec(app, "chart_splits")["data"][0]["y"])) == len(with_dress)


def test_clicking_a_category_bar_shows_exactly_its_images(page_store) -> None:
    app = run(AppTest.from_file(str(EXPLORE), default_timeout=60))
    click_chart(app, "chart_categories", ["dress"], y="dress")
    assert not app.exception, [e.value for e in app.exception]
    expected = images_with(page_store, "dress")
    assert app.subheader[-1].value == f"Gallery: images with a dress mask ({len(expected)})"
    assert images_captions(app) == expected
    assert len([b for b in app.button if b.key and b.key.startswith("inspect_")]) == len(expected)


def test_clicking_a_heatmap_square_shows_the_images_of_that_pair(page_store) -> None:
    app = run(AppTest.from_file(str(EXPLORE), default_timeout=60))
    spec = chart_spec(app, "chart_cooccurrence")
    category, attribute = values(spec["data"][0]["customdata"])[0]
    click_chart(app, "chart_cooccurrence", [category, attribute])
    with session_scope(page_store) as session:
        expected = sorted(set(session.scalars(text(
            "SELECT i.file_name FROM annotation_attribute aa "
            "JOIN annotation a ON a.id = aa.annotation_id JOIN image i ON i.id = a.image_id "
            "JOIN category c ON c.id = a.category_id JOIN attribute t ON t.id = aa.attribute_id "
            "WHERE c.name = :c AND t.name = :t"), {"c": category, "t": attribute})))
    assert expected
    assert images_captions(app) == expected


def test_the_gallery_opens_an_image_in_the_inspector(page_store) -> None:
    app = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=60)
    run(app)
    app.switch_page("pages/02_Explore.py")
    run(app)
    click_chart(app, "chart_categories", ["dress"], y="dress")
    first = images_with(page_store, "dress")[0]
    button = next(b for b in app.button if b.key and b.key.startswith("inspect_"))
    button.click()
    run(app)
    assert app.title[0].value == "Inspect"
    assert app.query_params["image"] == [first] or app.query_params["image"] == first
    assert f"**{first}**" in app.markdown[0].value
    assert "in images with a dress mask" in app.markdown[0].value


def test_a_dataset_without_annotations_is_a_message(page_store, tmp_path: Path) -> None:
    from workbench.formats import import_folder

    folder = tmp_path / "photos"
    folder.mkdir()
    PILImage.new("RGB", (40, 60), "white").save(folder / "a.jpg")
    import_folder(page_store, images_dir=folder, name="photos")
    app = run(AppTest.from_file(str(EXPLORE), default_timeout=60))
    app.sidebar.selectbox[0].set_value("photos")
    run(app)
    assert any("has no annotations" in i.value for i in app.info)
    assert metrics(app)["Images"] == 1 and metrics(app)["Masks"] == 0
    assert not app.error


@pytest.mark.parametrize("table", ["categories", "cooccurrence"])
def test_tables_are_downloadable(page_store, table: str) -> None:
    app = run(AppTest.from_file(str(EXPLORE), default_timeout=60))
    app.selectbox(key="explore_table").set_value(table)
    run(app)
    assert list(app.dataframe[0].value.columns)[0] == "category"
    download = app.get("download_button")[0]
    assert download.proto.label == f"Download {table}.csv"


def test_people_review_status_filters_the_page(page_store) -> None:
    from db.people import PeopleFlag

    with session_scope(page_store) as session:
        image = session.scalars(select(Image).order_by(Image.file_name)).first()
        session.add(PeopleFlag(dataset_id=image.dataset_id, image_id=image.id, status="pending"))
    app = run(AppTest.from_file(str(EXPLORE), default_timeout=60))
    review = next(m for m in app.sidebar.multiselect if m.label == "People review")
    assert set(review.options) == {"pending", "not flagged"}
    review.set_value(["pending"])
    run(app)
    assert metrics(app)["Images"] == 1
