"""Writing imported rows into the store: shared by every importer.

An importer parses its source into :class:`PendingAnnotation` records and hands them over in
batches; :class:`DatasetWriter` checks image files (in parallel, once per file), skips what is
already stored (idempotent re-imports), writes each batch in one short transaction and keeps
the import report. In ``strict`` mode the whole import is one transaction that is rolled back
at the first rejected row.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Insert, func, insert, select
from sqlalchemy.orm import Session

from db.models import (
    Annotation,
    AnnotationAttribute,
    Attribute,
    Category,
    Dataset,
    Image,
    ImportRun,
    utcnow,
)
from workbench.formats.images import ImageInfo, ImageProblem, check_image
from workbench.formats.records import PendingAnnotation, Rejection
from workbench.guard import check_name, printable
from workbench.processes import record_owner
from workbench.progress import Cancelled, StopFn
from workbench.taxonomy import Taxonomy


@dataclass
class ImportReport:
    """What an import did; ``images``/``annotations`` count what the source holds that is now
    stored, ``new_*`` what this run added (0 on a repeated import)."""

    dataset: str
    images: int = 0
    annotations: int = 0
    new_images: int = 0
    new_annotations: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written by ``--report``."""
        return asdict(self)


class StrictImportError(ValueError):
    """Raised in strict mode at the first bad row; nothing was written."""

    def __init__(self, rejection: Rejection):
        if rejection.line is not None:
            where = f"line {rejection.line}"
        else:
            where = rejection.image_id or "source"
        super().__init__(f"{where}: {rejection.reason}")
        self.rejection = rejection


class ImportSourceError(ValueError):
    """A source that cannot be imported at all (missing file, wrong header, bad label file)."""


# An annotation row's columns, in the table's order, and its INSERT.
_ANNOTATION_COLUMNS = (
    "dataset_id", "image_id", "category_id", "source_key", "counts", "area",
    "bbox_x", "bbox_y", "bbox_w", "bbox_h",
)
_INSERT_ANNOTATION = insert(Annotation.__table__)

_INSERT_LINK = insert(AnnotationAttribute.__table__)
_LINK_COLUMNS = ("annotation_id", "attribute_id")
_IMAGE_COLUMNS = ("dataset_id", "file_name", "width", "height", "checksum", "file_size", "created_at")
_INSERT_IMAGE = insert(Image.__table__)
_ANNOTATION_KEY = (Annotation.image_id, Annotation.source_key)


# SQLite settings of an import's connection, restored when it ends. SQLite checkpoints its
# write-ahead log every 1000 pages by default, syncing the log and the database file each
# time: a bulk load of gigabytes waits on hundreds of syncs; every 64 MB gives the same
# durability with a fraction of the syncs. A 64 MB page cache (default 2 MB) holds a whole
# batch, so pages are not spilled to the log and read back mid-transaction (on the 1.6 GB
# benchmark, 40% fewer read and write calls).
IMPORT_WAL_CHECKPOINT_BYTES = 64 * 2**20
IMPORT_CACHE_KIB = 64 * 1024


def _set_import_pragmas(connection: Connection) -> dict[str, Any]:
    """Apply the import's settings to a SQLite connection; returns the ones to restore."""
    if connection.dialect.name != "sqlite":
        return {}
    page_size = connection.exec_driver_sql("PRAGMA page_size").scalar()
    settings = {"wal_autocheckpoint": IMPORT_WAL_CHECKPOINT_BYTES // page_size, "cache_size": -IMPORT_CACHE_KIB}
    previous = {}
    for name, value in settings.items():
        previous[name] = connection.exec_driver_sql(f"PRAGMA {name}").scalar()
        connection.exec_driver_sql(f"PRAGMA {name}={int(value)}")
    connection.commit()  # the session begins and commits its own transactions on it
    return previous


def _ids_are_consecutive(dialect: str) -> bool:
    """Whether rows one executemany inserts get consecutive ids ending at the largest
    (SQLite's rowid rule, see ``DatasetWriter._inserted_ids``)."""
    return dialect == "sqlite"


class DatasetWriter:
    """Writes one import into the store, batch by batch, keeping the report."""

    def __init__(
        self,
        engine: Engine,
        *,
        name: str,
        format: str,
        images_root: Path,
        taxonomy: Taxonomy,
        sources: dict[str, str],
        strict: bool = False,
        image_check: str = "full",
        max_pixels: int = 89_478_485,
    ):
        check_name(name)  # before anything is written
        self.images_root = Path(images_root)
        self.strict = strict
        self.image_check = image_check
        self.max_pixels = max_pixels
        self.report = ImportReport(dataset=name)
        # One connection for the whole import, so its bulk-load setting stays with it.
        self._connection = engine.connect()
        self._restore_pragmas = _set_import_pragmas(self._connection)
        self._session = Session(bind=self._connection, expire_on_commit=False)
        self._categories = {c.id: c for c in taxonomy.categories}
        self._attributes = {a.id: a for a in taxonomy.attributes}
        self._checked: dict[str, ImageInfo | ImageProblem] = {}
        self._seen_keys: dict[str, int | None] = {}
        self._accepted_images: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
        try:
            self._prepare(name, format, taxonomy, sources)
        except Exception:
            self.close()
            raise

    # -- set-up -----------------------------------------------------------------------------
    def _prepare(self, name: str, format: str, taxonomy: Taxonomy, sources: dict[str, str]) -> None:
        s = self._session
        dataset = s.scalar(select(Dataset).where(Dataset.name == name))
        if dataset is None:
            dataset = Dataset(
                name=name, format=format, images_root=str(self.images_root), info=taxonomy.info
            )
            s.add(dataset)
            s.flush()
        elif dataset.format != format:
            raise ImportSourceError(
                f"dataset {name!r} exists as format {dataset.format!r}; import {format!r} data "
                "under another --name"
            )
        else:
            dataset.images_root = str(self.images_root)
        self.dataset_id = dataset.id
        self.category_ids = self._sync_labels(Category, taxonomy.categories)
        self.attribute_ids = self._sync_labels(Attribute, taxonomy.attributes)
        self.images: dict[str, tuple[int, int, int]] = {
            fn: (iid, w, h)
            for iid, fn, w, h in s.execute(
                select(Image.id, Image.file_name, Image.width, Image.height).where(
                    Image.dataset_id == self.dataset_id
                )
            )
        }
        self._preexisting_images = set(self.images)
        self._run = ImportRun(dataset_id=self.dataset_id, format=format, sources=sources)
        record_owner(self._run)  # a killed import is found by its dead process (workbench.datasets)
        s.add(self._run)
        self._commit()

    def _sync_labels(self, model: type[Category | Attribute], labels) -> dict[int, int]:
        s = self._session
        existing = {
            src: db_id
            for db_id, src in s.execute(
                select(model.id, model.source_id).where(model.dataset_id == self.dataset_id)
            )
        }
        for label in labels:
            if label.id not in existing:
                row = model(
                    dataset_id=self.dataset_id,
                    source_id=label.id,
                    name=label.name,
                    supercategory=label.supercategory,
                    level=label.level,
                )
                s.add(row)
                s.flush()
                existing[label.id] = row.id
        return existing

    # -- rows ---------------------------------------------------------------------------------
    def knows_category(self, source_id: int) -> bool:
        """Whether the label file defines this category id."""
        return source_id in self.category_ids

    def unknown_attributes(self, source_ids: list[int]) -> list[int]:
        """The attribute ids the label file does not define."""
        return [a for a in source_ids if a not in self.attribute_ids]

    def reject(self, line: int | None, image_id: str, reason: str) -> None:
        """Record a refused row; in strict mode, abort the whole import."""
        rejection = Rejection(line, printable(image_id), reason)
        if self.strict:
            self._session.rollback()
            self.close()
            raise StrictImportError(rejection)
        self.report.rejected.append(rejection)

    def _check_new_images(self, file_names: set[str]) -> None:
        todo = sorted(f for f in file_names if f not in self._checked and f not in self.images)

        def one(name: str) -> ImageInfo | ImageProblem:
            try:
                return check_image(
                    self.images_root, name, mode=self.image_check, max_pixels=self.max_pixels
                )
            except ImageProblem as exc:
                return exc

        # Checking only the path takes microseconds: threads would cost more than they save.
        results = map(one, todo) if self.image_check == "none" else self._pool.map(one, todo)
        for name, result in zip(todo, results):
            self._checked[name] = result

    def _image_sizes(self, file_names: set[str]) -> dict[str, tuple[int, int] | str | None]:
        """Per file: its ``(width, height)`` as stored or read from the file, the problem
        that refuses it, or None where the size is not known (image check ``none``)."""
        sizes: dict[str, tuple[int, int] | str | None] = {}
        for name in file_names:
            stored = self.images.get(name)
            if stored is not None:
                sizes[name] = stored[1:]
                continue
            info = self._checked[name]
            if isinstance(info, ImageProblem):
                sizes[name] = str(info)
            else:
                sizes[name] = None if info.width is None else (info.width, info.height)
        return sizes

    def write_batch(self, batch: list[PendingAnnotation]) -> None:
        """Check the batch's images, drop duplicates and stored rows, and write the rest."""
        if not batch:
            return
        file_names = {p.file_name for p in batch}
        self._check_new_images(file_names)
        sizes = self._image_sizes(file_names)
        seen = self._seen_keys
        accepted: list[PendingAnnotation] = []
        for pending in batch:
            size = sizes[pending.file_name]
            if size is not None and size != (pending.width, pending.height):
                problem = size if isinstance(size, str) else (
                    f"Height {pending.height}, Width {pending.width} disagree with the image file, "
                    f"which is {size[0]} wide and {size[1]} high"
                )
                self.reject(pending.line, pending.file_name, problem)
                continue
            key = (pending.file_name, pending.source_key)
            if key in seen:
                first = seen[key]
                where = f"line {first}" if first is not None else "an earlier annotation"
                self.reject(pending.line, pending.file_name, f"duplicate of {where} (same image, class and mask)")
                continue
            seen[key] = pending.line
            accepted.append(pending)
        self._insert(accepted)
        self._commit()

    def _insert(self, accepted: list[PendingAnnotation]) -> None:
        s = self._session
        new_images: dict[str, tuple] = {}
        for p in accepted:
            if p.file_name in self.images or p.file_name in new_images:
                continue
            info = self._checked[p.file_name]
            assert isinstance(info, ImageInfo)
            new_images[p.file_name] = self._image_row(p.file_name, p.width, p.height, info)
        self._insert_images(new_images)
        self._accepted_images.update(p.file_name for p in accepted)
        self.report.annotations += len(accepted)

        # Rows already stored by an earlier import of the same source are skipped.
        old_image_ids = {
            self.images[p.file_name][0] for p in accepted if p.file_name in self._preexisting_images
        }
        stored: set[tuple[int, str]] = set()
        if old_image_ids:
            stored = set(
                s.execute(
                    select(Annotation.image_id, Annotation.source_key).where(
                        Annotation.image_id.in_(old_image_ids)
                    )
                ).all()
            )
        rows: list[tuple] = []
        attributes: list[list[int]] = []  # per row
        images, categories, dataset_id = self.images, self.category_ids, self.dataset_id
        for p in accepted:
            image_id = images[p.file_name][0]
            if stored and (image_id, p.source_key) in stored:
                continue
            rows.append(
                (dataset_id, image_id, categories[p.category_source_id], p.source_key, p.counts, p.area, *p.bbox)
            )
            attributes.append(sorted({self.attribute_ids[a] for a in p.attribute_source_ids}))
        if rows:
            last_id = s.scalar(select(func.max(Annotation.id))) or 0
            self._execute_many(_INSERT_ANNOTATION, _ANNOTATION_COLUMNS, rows)
            if any(attributes):
                ids = self._inserted_ids(last_id, _ANNOTATION_KEY, [row[1:4:2] for row in rows])
                links = [(i, a) for i, row_attributes in zip(ids, attributes) for a in row_attributes]
                self._execute_many(_INSERT_LINK, _LINK_COLUMNS, links)
            self.report.new_annotations += len(rows)

    def _inserted_ids(self, last_id: int, key_columns: tuple, keys: list[tuple], *scope) -> list[int]:
        """The ids of the rows just inserted, one per key in ``keys`` (values of ``key_columns``,
        in the order of the rows).

        Plain executemany, then the ids: RETURNING with ordered rows makes SQLite insert row by
        row, several times slower. SQLite gives a row without an id one more than the largest
        id so far (below 2**63 - 1), and the import holds the write lock from its first insert
        on, so the rows have consecutive ids ending at the largest. Elsewhere they are found by
        a range of ids past ``last_id``, the largest before (``scope`` keeps out rows another
        import added meanwhile), and any not found so one by one.
        """
        id_column = key_columns[0].table.c.id
        connection = self._session.connection()
        if _ids_are_consecutive(connection.dialect.name):
            top = connection.scalar(select(func.max(id_column)))
            if top is not None and top < 2**63 - 1:
                return list(range(top - len(keys) + 1, top + 1))
        wanted = set(keys)
        ids = {
            tuple(row[1:]): row[0]
            for row in connection.execute(select(id_column, *key_columns).where(id_column > last_id, *scope))
            if tuple(row[1:]) in wanted
        }
        for key in wanted.difference(ids):
            where = [column == value for column, value in zip(key_columns, key)]
            ids[key] = connection.scalar(select(id_column).where(*scope, *where))
        return [ids[key] for key in keys]

    def _execute_many(self, statement: Insert, names: tuple[str, ...], rows: list[tuple]) -> None:
        """Run an INSERT once per row, each a tuple of the values of the columns ``names``.

        Where the driver takes parameters by position in that order (SQLite), the tuples go
        straight to its ``executemany``, converted only where a column's type says so (dates):
        for hundreds of thousands of rows SQLAlchemy's per-row parameter handling costs more
        than SQLite's insert.
        """
        connection = self._session.connection()
        dialect = connection.dialect
        compiled = statement.compile(dialect=dialect, column_keys=list(names))
        if compiled.positiontup != list(names):
            connection.execute(statement, [dict(zip(names, row)) for row in rows])
            return
        processors = [(i, f) for i, name in enumerate(names)
                      if (f := statement.table.c[name].type.bind_processor(dialect)) is not None]
        if processors:
            rows = [list(row) for row in rows]
            for row in rows:
                for i, process in processors:
                    row[i] = process(row[i])
        connection.exec_driver_sql(compiled.string, rows)

    def add_images(
        self, file_names_with_sizes: Iterable[tuple[str, int | None, int | None]]
    ) -> dict[str, str]:
        """Check and store images, annotated or not; returns the refused ones with the reason.

        Each entry is ``(file_name, width, height)``; a size of ``None`` is taken from the file.
        Refused images are rejected with ``line`` None, as rows are.
        """
        entries = list(file_names_with_sizes)
        self._check_new_images({file_name for file_name, _, _ in entries})
        refused: dict[str, str] = {}
        rows: dict[str, tuple] = {}
        for file_name, width, height in entries:
            if file_name in self.images:
                info: ImageInfo | ImageProblem = ImageInfo(*self.images[file_name][1:])
            elif file_name in rows:
                info = ImageInfo(*rows[file_name][2:4])
            else:
                info = self._checked[file_name]
            problem = str(info) if isinstance(info, ImageProblem) else None
            if problem is None and (width is None or height is None):
                width, height = info.width, info.height
                if width is None or height is None:
                    problem = "size unknown: check the image file with image_check 'header' or 'full'"
            elif problem is None and info.width is not None and (info.width, info.height) != (width, height):
                problem = (
                    f"size {width}x{height} (width x height) disagrees with the image file, "
                    f"which is {info.width}x{info.height}"
                )
            if problem is not None:
                refused[file_name] = problem
                self.reject(None, file_name, problem)
                continue
            if file_name not in self.images and file_name not in rows:
                assert isinstance(info, ImageInfo)
                rows[file_name] = self._image_row(file_name, width, height, info)
            self._accepted_images.add(file_name)
        self._insert_images(rows)
        self._commit()
        return refused

    def _image_row(self, file_name: str, width: int, height: int, info: ImageInfo) -> tuple:
        return (self.dataset_id, file_name, width, height, info.checksum, info.file_size, utcnow())

    def _insert_images(self, rows: dict[str, tuple]) -> None:
        if not rows:
            return
        last_id = self._session.scalar(select(func.max(Image.id))) or 0
        self._execute_many(_INSERT_IMAGE, _IMAGE_COLUMNS, list(rows.values()))
        keys = [(file_name,) for file_name in rows]
        ids = self._inserted_ids(last_id, (Image.file_name,), keys, Image.dataset_id == self.dataset_id)
        for image_id, (file_name, (_, _, width, height, *_)) in zip(ids, rows.items()):
            self.images[file_name] = (image_id, width, height)
        self.report.new_images += len(rows)

    def _commit(self) -> None:
        if self.strict:
            self._session.flush()
        else:
            self._session.commit()

    # -- end ----------------------------------------------------------------------------------
    def stop_if_asked(self, should_stop: StopFn | None) -> None:
        """If ``should_stop`` says so, record the run as cancelled (what was written stays; a
        re-import goes on from there) and raise :class:`~workbench.progress.Cancelled`."""
        if should_stop is not None and should_stop():
            self.finish("cancelled")
            raise Cancelled(f"import of {self.report.dataset} stopped on request")

    def finish(self, status: str = "finished") -> ImportReport:
        """Record the import run (``finished``, or ``cancelled`` when stopped on request; what
        was written stays, and a re-import goes on from there) and commit; returns the report."""
        if status != "finished" and self.strict:
            self.close()  # strict imports write all or nothing
            return self.report
        self.report.images = len(self._accepted_images)
        self.report.rejected.sort(key=lambda r: (r.line is None, r.line or 0))
        self._run.status = status
        self._run.finished_at = utcnow()
        self._run.images = self.report.images
        self._run.annotations = self.report.annotations
        self._run.rejected = [asdict(r) for r in self.report.rejected]
        self._session.commit()
        self.close()
        return self.report

    def close(self) -> None:
        """Release the session, its connection (settings restored) and the checking threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()
        if not self._connection.closed:
            for name, value in self._restore_pragmas.items():
                self._connection.exec_driver_sql(f"PRAGMA {name}={int(value)}")
            self._connection.commit()
            self._connection.close()
