"""pages/03_Inspect.py through AppTest: overlay and toggles, paging, schemes, the scheme editor."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import Annotation, Category, Dataset, Image
from tests.apptest_events import ROOT, edit_table, images_captions, page_store  # noqa: F401
from workbench.schemes import get_scheme, save_scheme

INSPECT = ROOT / "pages" / "03_Inspect.py"


def run(app: AppTest) -> AppTest:
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def open_image(file_name: str | None = None, inspect_set: dict | None = None) -> AppTest:
    app = AppTest.from_file(str(INSPECT), default_timeout=60)
    app.query_params["dataset"] = "demo"
    if file_name:
        app.query_params["image"] = file_name
    if inspect_set is not None:
        app.session_state["inspect_set"] = inspect_set
    return run(app)


def image_with_most_categories(engine) -> tuple[str, int, list[str]]:
    with session_scope(engine) as session:
        image_id, _ = session.execute(
            select(Annotation.image_id, func.count(func.distinct(Annotation.category_id)))
            .group_by(Annotation.image_id).order_by(func.count(func.distinct(Annotation.category_id)).desc())
        ).first()
        image = session.get(Image, image_id)
        cats = sorted(set(session.scalars(select(Category.name).join(Annotation)
                                          .where(Annotation.image_id == image_id))))
        n = session.scalar(select(func.count()).where(Annotation.image_id == image_id))
        return image.file_name, n, cats


def test_overlay_lists_annotations_and_toggles_categories(page_store) -> None:
    name, n_masks, cats = image_with_most_categories(page_store)
    app = open_image(name)
    assert f"**{name}**" in app.markdown[0].value
    assert sorted(c.label for c in app.checkbox) == cats
    table = app.dataframe[0].value
    assert len(table) == n_masks and set(table["category"]) == set(cats)
    assert images_captions(app)[0] == f"{n_masks} of {n_masks} masks shown"
    hidden = app.checkbox[0].label
    app.checkbox[0].uncheck()
    run(app)
    shown = n_masks - int((table["category"] == hidden).sum())
    assert images_captions(app)[0] == f"{shown} of {n_masks} masks shown"
    app.radio(key="inspect_mode").set_value("outline")
    app.slider(key="inspect_opacity").set_value(0.9)
    run(app)
    assert not app.error


def test_every_scheme_is_shown_side_by_side_at_the_export_size(page_store) -> None:
    name, _, _ = image_with_most_categories(page_store)
    app = open_image(name)
    app.selectbox(key="inspect_export_size").set_value("512x768")
    run(app)
    assert app.subheader[1].value == "Conditioning masks at 512×768"
    captions = images_captions(app)
    assert {"photo", "fine v1", "body-parts v1", "cloth-seg v1", "cloth-seg-compat v1"} <= set(captions)


def test_previous_and_next_page_through_the_chosen_set_with_arrow_keys(page_store) -> None:
    with session_scope(page_store) as session:
        rows = session.execute(select(Image.id, Image.file_name).order_by(Image.file_name)).all()
    chosen = [rows[4], rows[1], rows[7]]
    app = open_image(chosen[0][1], {"dataset": "demo", "ids": [r[0] for r in chosen],
                                     "label": "my set"})
    assert "1 of 3 in my set" in app.markdown[0].value
    assert app.button(key="inspect_next").proto.shortcut.lower() == "right"
    assert app.button(key="inspect_prev").proto.shortcut.lower() == "left"
    app.button(key="inspect_next").click()
    run(app)
    assert f"**{chosen[1][1]}**" in app.markdown[0].value
    app.button(key="inspect_next").click()
    run(app)
    app.button(key="inspect_next").click()
    run(app)
    assert f"**{chosen[0][1]}**" in app.markdown[0].value  # wraps around
    app.button(key="inspect_prev").click()
    run(app)
    assert f"**{chosen[2][1]}**" in app.markdown[0].value


def test_a_missing_photo_is_a_message_and_the_masks_still_show(page_store, demo_files, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(demo_files.images_dir, photos)
    name, n_masks, _ = image_with_most_categories(page_store)
    (photos / name).unlink()
    with session_scope(page_store) as session:
        session.scalars(select(Dataset)).one().images_root = str(photos)
    app = open_image(name)
    assert any(name in e.value and "re-import" in e.value for e in app.error)
    assert images_captions(app)[0] == f"{n_masks} of {n_masks} masks shown"
    assert "fine v1" in images_captions(app)


def test_an_unknown_image_name_is_a_warning(page_store) -> None:
    app = open_image("no-such-image.jpg")
    assert "no image 'no-such-image.jpg'" in app.warning[0].value


def test_the_scheme_editor_saves_a_new_scheme_that_then_renders(page_store, monkeypatch) -> None:
    monkeypatch.setenv("WORKBENCH_USER", "ana")  # sign-in off: the local admin, named ana
    name, _, _ = image_with_most_categories(page_store)
    app = open_image(name)
    mapping_key = "editor_mapping_body-parts_v1"
    with session_scope(page_store) as session:
        cats = [c for c in session.scalars(select(Category.name).order_by(Category.source_id))]
    row = cats.index("dress")
    edit_table(app, mapping_key, {row: {"part": "upper body"}})
    assert not app.exception, [e.value for e in app.exception]
    app.text_input(key="editor_save_name_body-parts_v1").set_value("my-parts")
    run(app)
    app.button(key="editor_save").click()
    run(app)
    assert any("Saved my-parts version 1" in s.value for s in app.success)
    assert "my-parts v1" in images_captions(app)
    with session_scope(page_store) as session:
        stored = get_scheme(session, "my-parts")
    assert stored.curator == "ana"
    assert stored.definition.class_for("dress", "wholebody").name == "upper body"


def test_a_scheme_mapping_an_unknown_category_is_named_on_the_page(page_store) -> None:
    with session_scope(page_store) as session:
        base = get_scheme(session, "body-parts").definition
        save_scheme(session, base.edited(name="typo", mapping={**base.mapping, "dresss": "full body"}))
    name, _, _ = image_with_most_categories(page_store)
    app = open_image(name)
    app.selectbox(key="editor_base").set_value("typo")
    run(app)
    assert any("'dresss'" in w.value and "does not have" in w.value for w in app.warning)


def test_a_broken_edit_is_an_error_not_a_traceback(page_store) -> None:
    name, _, _ = image_with_most_categories(page_store)
    app = open_image(name)
    edit_table(app, "editor_classes_body-parts_v1", {1: {"colour": "red"}})
    assert not app.exception
    assert any("#rrggbb" in e.value for e in app.error)
    assert "editor_save" not in {b.key for b in app.button}  # nothing broken can be saved


def test_selecting_an_annotation_row_highlights_it(page_store) -> None:
    from tests.apptest_events import send_widget_string

    name, n_masks, _ = image_with_most_categories(page_store)
    app = open_image(name)
    table = app.dataframe[0].value
    with session_scope(page_store) as session:
        image_id = session.scalar(select(Image.id).where(Image.file_name == name))
    send_widget_string(app, f"inspect_rows_{image_id}", {"selection": {"rows": [2], "columns": [], "cells": []}})
    assert not app.exception, [e.value for e in app.exception]
    row = table.iloc[2]
    assert images_captions(app)[0] == (f"{n_masks} of {n_masks} masks shown · highlighted: "
                                       f"{row['category']} (annotation {row['id']})")


def test_someone_is_unlabelled_here_puts_the_image_in_the_people_queue(page_store) -> None:
    from workbench.people.queue import people_decisions, queue_counts

    name, _, _ = image_with_most_categories(page_store)
    app = open_image(name)
    app.text_input(key="inspect_flag_note").set_value("a man on the left has no masks")
    run(app)
    app.button(key="inspect_flag").click()
    run(app)
    assert any("People review queue" in s.value for s in app.success)
    with session_scope(page_store) as session:
        image_id = session.scalar(select(Image.id).where(Image.file_name == name))
        assert queue_counts(session, "demo")["pending"] == 1
        assert people_decisions(session, "demo")[image_id].kind is None  # flagged, not yet decided


def test_predicted_masks_show_apart_from_the_real_ones_with_a_toggle(page_store, tmp_path) -> None:
    from workbench.segment.predict import SegformerSegmenter
    from workbench.segment.store import predict_dataset
    from workbench.segment.tiny import build_tiny_segformer
    from workbench.segment.loaders import SegmenterScheme

    names = ("background", "upper body", "lower body", "full body")
    segmenter = SegformerSegmenter(build_tiny_segformer(4, names=list(names)),
                                   SegmenterScheme("cloth-seg", 1, (0, 1, 2, 3), names), source="tiny-seg",
                                   resolution=32, device="cpu")
    predict_dataset(page_store, "demo", segmenter, limit=1)  # the first image by id only
    with session_scope(page_store) as session:
        first, second = session.scalars(select(Image.file_name).order_by(Image.id).limit(2)).all()
        n_real = session.scalar(select(func.count()).select_from(Annotation).join(Image)
                                .where(Image.file_name == first))
    app = open_image(first)
    assert "Predicted masks" not in [s.value for s in app.subheader]
    app.toggle(key="inspect_predicted").set_value(True)
    run(app)
    assert "Predicted masks" in [s.value for s in app.subheader]
    assert "predicted · tiny-seg (cloth-seg v1)" in images_captions(app)
    assert len(app.dataframe[0].value) == n_real  # the real annotations' table lists the real ones only
    app = open_image(second)
    app.toggle(key="inspect_predicted").set_value(True)
    run(app)
    assert any("No segmenter has predicted this image" in i.value for i in app.info)
