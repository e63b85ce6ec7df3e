"""The store: migrations match the models, SQLite runs with the promised settings."""

from __future__ import annotations

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from db.engine import dispose_engines, make_engine
import db  # noqa: F401  (every area's models)
from db.models import Base


@pytest.mark.both_databases
def test_migrations_create_exactly_the_models_schema(engine):
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_sqlite_runs_in_wal_with_foreign_keys_and_a_busy_timeout(engine):
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 10_000


def test_opening_an_existing_store_upgrades_it_in_place(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO curator (name, created_at) VALUES ('ana', '2026-01-01')"))
    dispose_engines()
    again = make_engine(url)
    with again.connect() as connection:
        assert connection.execute(text("SELECT name FROM curator")).scalar() == "ana"
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert "annotation" in inspect(again).get_table_names()
    dispose_engines()


def test_stores_from_before_coco_counts_are_converted_and_reimports_still_recognise_their_rows(tmp_path):
    """An iMaterialist store as revision 0007 kept it (masks as run-length text, rows keyed
    by ImageId, ClassId and text) upgrades in place: the same masks, and re-importing the same
    file adds nothing."""
    from alembic import command
    from alembic.config import Config
    from PIL import Image as PILImage
    from sqlalchemy import select

    from db.engine import MIGRATIONS_DIR, session_scope
    from db.models import Annotation, Image
    from workbench.formats import import_imat2019
    from workbench.formats.records import source_key
    from workbench.rle import counts_to_runs, decode_runs, mask_to_text, parse_runs
    from workbench.taxonomy import BUNDLED_IMAT2019_LABELS

    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i, (cats, h, w) in enumerate([((10, 23), 30, 40), ((1, 6), 20, 24)]):
        PILImage.new("RGB", (w, h)).save(images / f"{i}.jpg")
        for j, cat in enumerate(cats):
            mask = np.zeros((h, w), bool)
            mask[2 + j : 12 + 3 * j, 1 + 2 * j : 9 + j] = True
            rows.append((f"{i}.jpg", mask_to_text(mask), h, w, f"{cat}_77_3" if cat < 13 else str(cat)))
    csv = tmp_path / "train.csv"
    csv.write_text("ImageId,EncodedPixels,Height,Width,ClassId\n" + "".join(
        f"{r[0]},{r[1]},{r[2]},{r[3]},{r[4]}\n" for r in rows))

    def run_import(engine):
        return import_imat2019(engine, csv_path=csv, labels_path=BUNDLED_IMAT2019_LABELS,
                               images_dir=images, name="shop")

    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = make_engine(url)
    run_import(engine)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0007")
    with engine.begin() as connection:  # the keys 0007's importer gave
        stored = connection.execute(text(
            "SELECT annotation.id, image.file_name, category.source_id, annotation.rle FROM annotation "
            "JOIN image ON image.id = annotation.image_id JOIN category ON category.id = annotation.category_id"
        )).all()
        assert {(r[1], r[3]) for r in stored} == {(r[0], r[1]) for r in rows}
        for annotation_id, file_name, category, rle in stored:
            class_id = next(r[4] for r in rows if r[0] == file_name and r[1] == rle)
            key = source_key(file_name, class_id.replace("_", ":", 1).replace("_", ","), rle)
            connection.execute(text("UPDATE annotation SET source_key = :k WHERE id = :i"), {"k": key, "i": annotation_id})
    dispose_engines()

    engine = make_engine(url)  # upgrades to the newest schema
    with session_scope(engine) as s:
        for counts, file_name, h, w in s.execute(
            select(Annotation.counts, Image.file_name, Image.height, Image.width).join(Image)
        ):
            text_ = next(r[1] for r in rows if r[0] == file_name and np.array_equal(
                decode_runs(parse_runs(r[1], h, w), h, w), decode_runs(counts_to_runs(counts, h, w), h, w)))
            assert text_
        assert s.scalar(text("SELECT count(*) FROM annotation_attribute")) == 2 * 3  # no link lost
    report = run_import(engine)
    assert (report.annotations, report.new_annotations, report.new_images) == (len(rows), 0, 0)
    dispose_engines()


@pytest.mark.both_databases
def test_file_sizes_past_4_gib_and_long_texts_are_stored_on_both_databases(engine):
    from db.engine import session_scope
    from db.models import Dataset, Image

    with session_scope(engine) as session:
        dataset = Dataset(name="big", format="folder", images_root="/data", info={"note": "é" * 10_000})
        session.add(dataset)
        session.flush()
        session.add(Image(dataset_id=dataset.id, file_name="x" * 5_000 + ".tif", width=1, height=1,
                          file_size=5 * 2**30))
    with session_scope(engine) as session:
        image = session.query(Image).one()
        assert (image.file_size, len(image.file_name)) == (5 * 2**30, 5_004)
        assert session.query(Dataset).one().info["note"] == "é" * 10_000


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
def test_postgresql_sessions_work_in_utc_with_a_checked_pool(engine):
    """Naive UTC columns compared with aware times need a UTC session, whatever the server's zone."""
    from db.engine import POSTGRES_POOL

    with engine.connect() as connection:
        assert connection.execute(text("SHOW timezone")).scalar() == "UTC"
    assert engine.pool._pre_ping is True and engine.pool.size() == POSTGRES_POOL["pool_size"]
