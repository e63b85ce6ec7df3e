"""iMaterialist 2019/2020 import: good rows stored, every bad row refused by line, re-imports idempotent."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import Annotation, AnnotationAttribute, Attribute, Category, Image as ImageRow, ImportRun
from workbench.formats import ImportSourceError, StrictImportError, import_imat2019
from workbench.rle import counts_to_runs, decode_runs, mask_to_text
from workbench.taxonomy import BUNDLED_IMAT2019_LABELS

# The store tests run on SQLite and on PostgreSQL (tests/conftest.py).
pytestmark = pytest.mark.both_databases

HEADER = "ImageId,EncodedPixels,Height,Width,ClassId"


def _mask(h: int, w: int, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[top:bottom, left:right] = True
    return m


class Source:
    """A tiny iMaterialist dataset on disk: images, label file, and a CSV written per test."""

    def __init__(self, root: Path):
        self.root = root
        self.images = root / "images"
        self.images.mkdir(parents=True)
        self.labels = root / "label_descriptions.json"
        shutil.copy(BUNDLED_IMAT2019_LABELS, self.labels)
        self.csv = root / "train.csv"

    def image(self, name: str, width: int, height: int) -> str:
        Image.new("RGB", (width, height), (120, 80, 60)).save(self.images / name, quality=90)
        return name

    def write(self, *rows: str, header: str = HEADER) -> Path:
        self.csv.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
        return self.csv

    def run(self, engine, **kwargs):
        return import_imat2019(
            engine, csv_path=self.csv, labels_path=self.labels, images_dir=self.images, name="shop", **kwargs
        )


@pytest.fixture
def src(tmp_path) -> Source:
    return Source(tmp_path / "src")


def _counts(engine) -> tuple[int, int, int]:
    with session_scope(engine) as s:
        return (
            s.scalar(select(func.count()).select_from(ImageRow)),
            s.scalar(select(func.count()).select_from(Annotation)),
            s.scalar(select(func.count()).select_from(AnnotationAttribute)),
        )


def test_good_rows_are_stored_with_area_box_and_attributes(engine, src):
    src.image("a.jpg", 40, 30)
    dress = _mask(30, 40, 5, 10, 25, 30)
    shoe = _mask(30, 40, 26, 12, 29, 16)
    src.write(f"a.jpg,{mask_to_text(dress)},30,40,10_3_77", f"a.jpg,{mask_to_text(shoe)},30,40,23")
    report = src.run(engine)
    assert (report.images, report.annotations, report.rejected) == (1, 2, [])
    with session_scope(engine) as s:
        rows = s.execute(
            select(Annotation, Category.name).join(Category).order_by(Annotation.id)
        ).all()
        (dress_row, dress_name), (shoe_row, shoe_name) = rows
        assert (dress_name, shoe_name) == ("dress", "shoe")
        assert dress_row.area == dress.sum()
        assert (dress_row.bbox_x, dress_row.bbox_y, dress_row.bbox_w, dress_row.bbox_h) == (10, 5, 20, 20)
        assert np.array_equal(decode_runs(counts_to_runs(dress_row.counts, 30, 40), 30, 40), dress)
        attrs = s.scalars(
            select(Attribute.source_id)
            .join(AnnotationAttribute, AnnotationAttribute.attribute_id == Attribute.id)
            .where(AnnotationAttribute.annotation_id == dress_row.id)
            .order_by(Attribute.source_id)
        ).all()
        assert attrs == [3, 77]
        image = s.scalar(select(ImageRow))
        assert (image.file_name, image.width, image.height) == ("a.jpg", 40, 30)
        assert image.checksum and len(image.checksum) == 64


BAD_ROWS = [
    ("a.jpg,1 2 3,30,40,1", "odd number of tokens"),
    ("a.jpg,1 5000,30,40,1", "goes past the image (40x30 = 1200 pixels)"),
    ("a.jpg,1 two,30,40,1", "non-numeric token 'two'"),
    ("a.jpg,0 4,30,40,1", "start 0"),
    ("a.jpg,1 4,30,40,99", "unknown category id 99"),
    ("a.jpg,1 4,30,40,1_500", "unknown attribute id(s) [500]"),
    ("a.jpg,1 4,30,40,dress", "ClassId 'dress' is not a category id"),
    ("a.jpg,1 4,thirty,40,1", "Height 'thirty' is not an integer"),
    ("gone.jpg,1 4,30,40,1", "image file not found"),
    ("small.jpg,1 4,30,40,1", "Height 30, Width 40 disagree with the image file, which is 20 wide and 10 high"),
    ("broken.jpg,1 4,30,40,1", "not a readable image"),
    ("cut.jpg,1 4,30,40,1", "corrupt image"),
    ("../escape.jpg,1 4,30,40,1", "path leaves the images folder"),
    ("/etc/passwd,1 4,30,40,1", "must be relative to the images folder"),
]


@pytest.mark.parametrize("row, reason", BAD_ROWS, ids=[r for _, r in BAD_ROWS])
def test_each_bad_row_is_refused_with_its_line_and_the_rest_goes_on(engine, src, row, reason):
    src.image("a.jpg", 40, 30)
    src.image("small.jpg", 20, 10)
    (src.images / "broken.jpg").write_bytes(b"this is not a jpeg")
    Image.new("RGB", (40, 30), "red").save(src.root / "full.jpg", quality=95)
    full = (src.root / "full.jpg").read_bytes()
    (src.images / "cut.jpg").write_bytes(full[: len(full) // 2])
    good = mask_to_text(_mask(30, 40, 0, 0, 10, 10))
    src.write(f"a.jpg,{good},30,40,1", row, f"a.jpg,{good},30,40,6")
    report = src.run(engine)
    assert report.annotations == 2
    assert len(report.rejected) == 1
    rejected = report.rejected[0]
    assert rejected.line == 3  # header is line 1
    assert reason in rejected.reason
    assert _counts(engine)[1] == 2


def test_image_over_the_decompression_bomb_limit_is_refused(engine, src, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_IMAGE_PIXELS", "1000")
    src.image("big.jpg", 40, 30)  # 1200 pixels
    src.write("big.jpg,1 4,30,40,1")
    report = src.run(engine)
    assert report.annotations == 0
    assert "decompression-bomb limit of 1000" in report.rejected[0].reason


def test_reimport_changes_nothing(engine, src):
    src.image("a.jpg", 40, 30)
    src.image("b.jpg", 40, 30)
    m = mask_to_text(_mask(30, 40, 2, 2, 9, 9))
    src.write(f"a.jpg,{m},30,40,1_3", f"b.jpg,{m},30,40,6", "b.jpg,1 2 3,30,40,6")
    first = src.run(engine)
    before = _counts(engine)
    second = src.run(engine)
    assert _counts(engine) == before == (2, 2, 1)
    assert (second.new_images, second.new_annotations) == (0, 0)
    assert (second.images, second.annotations) == (first.images, first.annotations)
    assert [r.line for r in second.rejected] == [4]
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Category)) == 46


def test_duplicate_row_in_one_file_is_reported(engine, src):
    src.image("a.jpg", 40, 30)
    m = mask_to_text(_mask(30, 40, 2, 2, 9, 9))
    src.write(f"a.jpg,{m},30,40,1", f"a.jpg,{m},30,40,1")
    report = src.run(engine)
    assert report.annotations == 1
    assert report.rejected[0].line == 3 and "duplicate of line 2" in report.rejected[0].reason


def test_strict_stops_at_the_first_bad_row_and_writes_nothing(engine, src):
    src.image("a.jpg", 40, 30)
    m = mask_to_text(_mask(30, 40, 2, 2, 9, 9))
    src.write(f"a.jpg,{m},30,40,1")
    src.run(engine)
    kept = _counts(engine)
    src.image("b.jpg", 40, 30)
    src.write(f"b.jpg,{m},30,40,1", "b.jpg,1 2 3,30,40,6", f"b.jpg,{m},30,40,7")
    with pytest.raises(StrictImportError, match="line 3: odd number of tokens"):
        src.run(engine, strict=True)
    assert _counts(engine) == kept  # the earlier import is intact, nothing new was written


def test_a_later_import_with_bad_rows_loses_nothing_imported_before(engine, src):
    src.image("a.jpg", 40, 30)
    m = mask_to_text(_mask(30, 40, 2, 2, 9, 9))
    src.write(f"a.jpg,{m},30,40,1")
    src.run(engine)
    src.write("a.jpg,1 5000,30,40,1", "missing.jpg,1 2,30,40,1")
    report = src.run(engine)
    assert len(report.rejected) == 2
    assert _counts(engine)[:2] == (1, 1)
    with session_scope(engine) as s:
        runs = s.scalars(select(ImportRun).order_by(ImportRun.id)).all()
        assert [r.status for r in runs] == ["finished", "finished"]
        assert [len(r.rejected) for r in runs] == [0, 2]


def test_2020_layout_without_extension_and_with_attribute_column(engine, src):
    src.image("abc123.jpg", 40, 30)
    m = mask_to_text(_mask(30, 40, 2, 2, 9, 9))
    src.write(
        f'abc123,{m},30,40,10,"3,77"',
        f"abc123,{mask_to_text(_mask(30, 40, 20, 2, 29, 9))},30,40,23,",
        header=HEADER + ",AttributesIds",
    )
    report = src.run(engine)
    assert (report.images, report.annotations, report.rejected) == (1, 2, [])
    with session_scope(engine) as s:
        assert s.scalar(select(ImageRow.file_name)) == "abc123.jpg"
        assert s.scalar(select(func.count()).select_from(AnnotationAttribute)) == 2


def test_a_csv_without_the_expected_columns_is_refused_before_anything_is_written(engine, src):
    src.write("a.jpg,1 2", header="ImageId,Pixels")
    with pytest.raises(ImportSourceError, match="missing column"):
        src.run(engine)
    assert _counts(engine) == (0, 0, 0)


def test_progress_reaches_the_end(engine, src):
    src.image("a.jpg", 40, 30)
    src.write("a.jpg,1 4,30,40,1")
    seen: list[tuple[int, int | None]] = []
    src.run(engine, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] == src.csv.stat().st_size


def test_parsing_in_worker_processes_gives_the_same_store_and_report(tmp_path, src, monkeypatch):
    from db.engine import make_engine

    monkeypatch.setenv("WORKBENCH_IMPORT_BATCH_ROWS", "3")  # several chunks in flight
    src.image("a.jpg", 40, 30)
    rows = [f"a.jpg,{mask_to_text(_mask(30, 40, i, i, i + 5, i + 6))},30,40,{i % 46}" for i in range(12)]
    rows.insert(4, "a.jpg,1 2 3,30,40,1")
    src.write(*rows)
    results = []
    for workers in (0, 1):
        engine = make_engine(f"sqlite:///{tmp_path / f'w{workers}.db'}")
        report = src.run(engine, workers=workers)
        with session_scope(engine) as s:
            stored = s.execute(select(Annotation.source_key, Annotation.area).order_by(Annotation.source_key)).all()
        results.append((report.to_dict(), stored))
    assert results[0] == results[1]
    assert results[0][0]["annotations"] == 12 and results[0][0]["rejected"][0]["line"] == 6


def _store_and_report(engine, report) -> tuple[dict, list]:
    with session_scope(engine) as s:
        stored = s.execute(
            select(
                ImageRow.file_name, Annotation.source_key, Annotation.counts, Annotation.area,
                Annotation.bbox_x, Annotation.bbox_y, Annotation.bbox_w, Annotation.bbox_h,
            ).join(ImageRow).order_by(Annotation.source_key)
        ).all()
        links = s.execute(
            select(Annotation.source_key, Attribute.source_id)
            .join(AnnotationAttribute, AnnotationAttribute.annotation_id == Annotation.id)
            .join(Attribute, AnnotationAttribute.attribute_id == Attribute.id)
            .order_by(Annotation.source_key, Attribute.source_id)
        ).all()
    return report.to_dict(), [tuple(r) for r in stored] + [tuple(r) for r in links]


def _mixed_rows(src: Source) -> list[str]:
    """Good rows with and without attributes, and bad rows of every parsing kind."""
    src.image("a.jpg", 40, 30)
    src.image("b.jpg", 30, 20)
    rows = []
    for i in range(14):
        name, h, w = ("a.jpg", 30, 40) if i % 2 else ("b.jpg", 20, 30)
        text = mask_to_text(_mask(h, w, i % 7, i % 9, i % 7 + 6, i % 9 + 9))
        rows.append(f"{name},{text},{h},{w},{[1, 10, 23][i % 3]}{'_3_77' if i % 3 == 1 else ''}")
    rows[3] = f'"a.jpg","{mask_to_text(_mask(30, 40, 1, 1, 4, 4))}",30,40,6'  # quoted fields
    rows[5] = ""  # a blank line is skipped
    rows[8] = "b.jpg,1 2 3,20,30,1"
    rows[9] = "a.jpg,3 2 1 2,30,40,1"
    rows[11] = "b.jpg,1 2,20,30,1,extra"
    rows[12] = "a.jpg,1 x,30,40,1"
    return rows


def test_parsing_in_small_chunks_gives_the_same_store_and_report(tmp_path, src):
    from db.engine import make_engine

    src.write(*_mixed_rows(src))
    results = []
    for chunk_bytes, workers in ((None, 0), (1, 0), (40, 0), (333, 0), (150, 1)):
        engine = make_engine(f"sqlite:///{tmp_path / f'c{chunk_bytes}-{workers}.db'}")
        report = src.run(engine, chunk_bytes=chunk_bytes, workers=workers)
        results.append(_store_and_report(engine, report))
    assert all(result == results[0] for result in results[1:])
    report, stored = results[0]
    assert report["annotations"] == 9 and len(stored) > 9  # annotations, then attribute links
    assert [(r["line"], r["reason"].split(" (")[0]) for r in report["rejected"]] == [
        (10, "odd number of tokens"),
        (11, "run 1 2 starts before the previous run ends: runs must be in ascending order and must not overlap"),
        (13, "6 fields, expected 5"),
        (14, "non-numeric token 'x' in EncodedPixels"),
    ]


def test_windows_line_ends_import_like_unix_ones(tmp_path, src):
    from db.engine import make_engine

    rows = _mixed_rows(src)
    results = []
    for name, newline in (("lf", "\n"), ("crlf", "\r\n")):
        src.csv.write_bytes(newline.join([HEADER, *rows, ""]).encode())
        engine = make_engine(f"sqlite:///{tmp_path / f'{name}.db'}")
        results.append(_store_and_report(engine, src.run(engine)))
    assert results[0] == results[1]


def test_a_line_csv_cannot_read_is_refused_with_its_line(engine, src):
    src.image("a.jpg", 40, 30)
    good = mask_to_text(_mask(30, 40, 0, 0, 10, 10))
    src.write(f"a.jpg,{good},30,40,1", "a.jpg,1 4\r,30,40,1", f"a.jpg,{good},30,40,6")
    report = src.run(engine)
    assert report.annotations == 2
    assert [(r.line, r.reason.split(" (")[0]) for r in report.rejected] == [(3, "not a CSV line")]


def test_stores_whose_driver_takes_named_parameters_get_the_same_rows(tmp_path, src):
    from sqlalchemy import create_engine

    from db.engine import make_engine, upgrade_schema

    src.write(*_mixed_rows(src))
    positional = make_engine(f"sqlite:///{tmp_path / 'positional.db'}")
    named = create_engine(f"sqlite:///{tmp_path / 'named.db'}", paramstyle="named")
    upgrade_schema(named)
    results = [_store_and_report(e, src.run(e)) for e in (positional, named)]
    named.dispose()
    assert results[0] == results[1]


def test_an_import_leaves_the_connection_settings_as_it_found_them(tmp_path, src):
    from sqlalchemy import create_engine

    from db.engine import upgrade_schema

    engine = create_engine(f"sqlite:///{tmp_path / 'one.db'}", pool_size=1, max_overflow=0)
    upgrade_schema(engine)
    pragmas = ("wal_autocheckpoint", "cache_size")

    def settings() -> dict:
        with engine.connect() as connection:  # the pool's only connection: the import's too
            return {p: connection.exec_driver_sql(f"PRAGMA {p}").scalar() for p in pragmas}

    before = settings()
    src.write(*_mixed_rows(src))
    assert src.run(engine).annotations == 9
    assert settings() == before
    src.write("a.jpg,1 2 3,30,40,1")
    with pytest.raises(StrictImportError):
        src.run(engine, strict=True)
    assert settings() == before
    engine.dispose()


def test_new_images_are_found_when_the_largest_image_id_is_taken(tmp_path, engine, src):
    from db.engine import make_engine
    from db.models import Dataset

    if engine.dialect.name != "sqlite":
        pytest.skip("a rule of SQLite's 64-bit rowids; PostgreSQL's ids come from a sequence")
    with session_scope(engine) as s:  # SQLite then picks new ids at random, below the largest
        other = Dataset(name="other", format="folder", images_root="/elsewhere")
        s.add(other)
        s.flush()
        s.add(ImageRow(id=2**63 - 1, dataset_id=other.id, file_name="x.jpg", width=1, height=1))
    src.write(*_mixed_rows(src))
    usual = make_engine(f"sqlite:///{tmp_path / 'usual.db'}")
    results = []
    for store in (engine, usual):
        report = src.run(store)
        with session_scope(store) as s:
            per_image = s.execute(
                select(ImageRow.file_name, ImageRow.width, func.count(Annotation.id))
                .join(Annotation, Annotation.image_id == ImageRow.id)
                .group_by(ImageRow.file_name)
                .order_by(ImageRow.file_name)
            ).all()
        results.append((report.to_dict(), [tuple(r) for r in per_image]))
    assert results[0] == results[1]
    assert [name for name, _, _ in results[0][1]] == ["a.jpg", "b.jpg"]


def test_the_garbage_collector_is_paused_during_an_import_and_restored_after(engine, src):
    import gc

    src.image("a.jpg", 40, 30)
    src.write(f"a.jpg,{mask_to_text(_mask(30, 40, 2, 2, 9, 9))},30,40,1")
    during = []
    assert gc.isenabled()
    src.run(engine, progress=lambda done, total: during.append(gc.isenabled()))
    assert during and not any(during)
    assert gc.isenabled()
    src.write("a.jpg,1 2 3,30,40,1")
    with pytest.raises(StrictImportError):
        src.run(engine, strict=True)
    assert gc.isenabled()


def test_a_stopped_import_keeps_its_batches_and_a_reimport_completes_it(engine, src):
    from workbench.progress import Cancelled

    src.image("a.jpg", 40, 30)
    rows = [f"a.jpg,{mask_to_text(_mask(30, 40, i, i, i + 5, i + 6))},30,40,{i % 46}" for i in range(20)]
    src.write(*rows)
    calls = []
    with pytest.raises(Cancelled):
        src.run(engine, workers=0, chunk_bytes=200, should_stop=lambda: calls.append(1) or len(calls) >= 2)
    kept = _counts(engine)[1]
    assert 0 < kept < 20
    with session_scope(engine) as s:
        assert s.scalars(select(ImportRun.status)).all() == ["cancelled"]
    report = src.run(engine)
    assert (report.annotations, report.new_annotations) == (20, 20 - kept)
    assert _counts(engine)[1] == 20


def test_quoted_2020_attribute_lists_are_read_by_the_compiled_scan_as_csv_reads_them(monkeypatch):
    """iMaterialist 2020 quotes its AttributesIds ("115,136"): those lines stay on the fast
    path; any other quoting goes to csv, and both give what csv reads."""
    import workbench.formats.imat2019_rows as rows_module
    from workbench.formats.imat2019_rows import RowParser

    header = [*HEADER.split(","), "AttributesIds"]
    taxonomy_ids = frozenset(range(46)), frozenset(range(300))
    parser = RowParser({c: i for i, c in enumerate(header)}, True, *taxonomy_ids)
    m = mask_to_text(_mask(30, 40, 2, 2, 9, 9))
    lines = [
        f'a,{m},30,40,10,"115,136"',  # 2020's own quoting
        f'b,{m},30,40,10,""',
        f"c,{m},30,40,23,",
        f'"d",{m},30,40,10,"115"',  # a quoted ImageId: csv's
        f'e,{m},30,40,10,"115,""136"""',  # doubled quotes: csv's
        f'f,{m},30,40,10,x"115"',  # a quote inside an unquoted field: csv's
        f'g,{m},30,40,"10",115',
        f'h,{m},30,40,10,"115,136',  # unbalanced
    ]
    data = ("\n".join(lines) + "\n").encode()
    read_by_csv: list[str] = []
    real_csv_fields = rows_module._csv_fields

    def spy(line: str) -> list[str]:
        fields = real_csv_fields(line)
        read_by_csv.append(fields[0])
        return fields

    monkeypatch.setattr(rows_module, "_csv_fields", spy)
    fast = parser.parse_chunk(data)
    assert sorted(set(read_by_csv)) == ["d", "e", "f", "h"]
    line_ends = np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n"))
    by_csv: tuple[dict, list] = ({}, [])
    parser._read_lines(data, line_ends, list(range(len(lines))), *by_csv)
    assert fast[1] == [by_csv[0][line] for line in sorted(by_csv[0])]
    assert fast[2] == sorted(by_csv[1], key=lambda r: r.line)
    assert [row[5] for row in fast[1]][:2] == [[115, 136], []]


def test_stores_without_sqlites_consecutive_ids_find_the_new_rows_by_their_keys(tmp_path, src, monkeypatch):
    """Where rows' ids cannot be inferred (other databases), new images and annotations are
    looked up by their keys: the same store and report as with SQLite's rowid rule."""
    import workbench.formats.store as store
    from db.engine import make_engine

    src.write(*_mixed_rows(src))
    inferred = make_engine(f"sqlite:///{tmp_path / 'inferred.db'}")
    expected = _store_and_report(inferred, src.run(inferred))
    monkeypatch.setattr(store, "_ids_are_consecutive", lambda dialect: False)
    looked_up = make_engine(f"sqlite:///{tmp_path / 'looked_up.db'}")
    assert _store_and_report(looked_up, src.run(looked_up)) == expected
