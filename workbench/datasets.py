"""Datasets in the store: look-up, counts and the embedded demo dataset.

The pipeline overview Home shows is in :mod:`workbench.pipeline`, above the areas that import
this module.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import Annotation, AnnotationAttribute, Attribute, Category, Dataset, Image, ImportRun
from workbench.processes import ORPHANED, settle_orphans
from workbench.progress import ProgressFn, StageFn, StopFn
from workbench.settings import Settings

DEMO_NAME = "demo"
DEMO_IMPORT_UPDATES = 40  # about how often the demo's import reports the rows it has stored
# One first-start demo import at a time in this process (several browser sessions may ask).
_demo_lock = threading.Lock()


class DatasetNotFound(LookupError):
    """No dataset of that name; the message lists the ones there are."""


def list_datasets(session: Session) -> list[str]:
    """Names of the stored datasets, oldest first."""
    return list(session.scalars(select(Dataset.name).order_by(Dataset.id)))


@dataclass(frozen=True)
class ImportState:
    """Whether a dataset's import is ``complete``, still ``importing``, or ``incomplete`` (its last
    import was killed, failed or cancelled: what it stored stays, a re-import completes it)."""

    status: Literal["complete", "importing", "incomplete"]
    note: str = ""

    @property
    def complete(self) -> bool:
        """Whether the last import of the dataset finished."""
        return self.status == "complete"


def import_states(session: Session) -> dict[str, ImportState]:
    """The :class:`ImportState` of every dataset by name (oldest first); an import whose process is
    gone is recorded as failed on the way."""
    runs = session.scalars(select(ImportRun).where(ImportRun.status == "running")).all()
    settle_orphans(runs, error=f"the import's {ORPHANED}")
    last_runs = select(ImportRun.dataset_id, func.max(ImportRun.id).label("run_id")).group_by(
        ImportRun.dataset_id).subquery()
    rows = session.execute(
        select(Dataset.name, ImportRun)
        .join(last_runs, last_runs.c.dataset_id == Dataset.id, isouter=True)
        .join(ImportRun, ImportRun.id == last_runs.c.run_id, isouter=True)
        .order_by(Dataset.id)
    ).all()
    return {name: _state_of(name, run) for name, run in rows}


def _state_of(name: str, run: ImportRun | None) -> ImportState:
    if run is None or run.status == "finished":
        return ImportState("complete")
    if run.status == "running":
        return ImportState("importing", f"import {run.id} is running (pid {run.pid} on {run.host})")
    why = {"cancelled": "was cancelled"}.get(run.status, f"failed: {run.error}" if run.error else "failed")
    return ImportState("incomplete", f"import {run.id} {why}; what it stored is kept: import the same "
                                     f"files under the name {name!r} again to complete it")


def get_dataset(session: Session, name: str) -> Dataset:
    """The dataset called ``name``, or :class:`DatasetNotFound` naming the alternatives."""
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is None:
        known = ", ".join(list_datasets(session)) or "none yet; run `python -m workbench demo`"
        raise DatasetNotFound(f"no dataset named {name!r} (datasets: {known})")
    return dataset


def get_image(session: Session, dataset: Dataset, file_name: str) -> Image:
    """An image of ``dataset`` by its file name relative to the images folder."""
    image = session.scalar(
        select(Image).where(Image.dataset_id == dataset.id, Image.file_name == file_name)
    )
    if image is None:
        raise LookupError(f"dataset {dataset.name!r} has no image {file_name!r}")
    return image


def dataset_stats(session: Session, name: str) -> dict[str, Any]:
    """Counts of a dataset computed in SQL: images, annotations, per category and attribute."""
    dataset = get_dataset(session, name)
    images = session.scalar(select(func.count()).where(Image.dataset_id == dataset.id)) or 0
    annotations = (
        session.scalar(select(func.count()).where(Annotation.dataset_id == dataset.id)) or 0
    )
    per_category = dict(
        session.execute(
            select(Category.name, func.count(Annotation.id))
            .join(Annotation, Annotation.category_id == Category.id, isouter=True)
            .where(Category.dataset_id == dataset.id)
            .group_by(Category.id)
            .order_by(Category.source_id)
        ).all()
    )
    per_attribute = dict(
        session.execute(
            select(Attribute.name, func.count(AnnotationAttribute.annotation_id))
            .join(AnnotationAttribute, AnnotationAttribute.attribute_id == Attribute.id)
            .where(Attribute.dataset_id == dataset.id)
            .group_by(Attribute.id)
            .order_by(Attribute.source_id)
        ).all()
    )
    last_import = session.scalar(
        select(ImportRun).where(ImportRun.dataset_id == dataset.id).order_by(ImportRun.id.desc())
    )
    state = import_states(session)[dataset.name]
    return {
        "dataset": dataset.name,
        "import_status": state.status,
        "import_note": state.note,
        "format": dataset.format,
        "images_root": dataset.images_root,
        "images": images,
        "annotations": annotations,
        "category_count": len(per_category),
        "categories": per_category,
        "attributes": per_attribute,
        "last_import_rejected": len(last_import.rejected) if last_import else 0,
    }


def ensure_demo_dataset(
    engine: Engine,
    settings: Settings,
    *,
    n_images: int = 64,
    seed: int = 0,
    stage: StageFn | None = None,
    should_stop: StopFn | None = None,
    force: bool = False,
) -> Any:
    """Generate the demo dataset into ``settings.demo_dir`` and import it as ``demo``.

    Without ``force`` nothing happens when the store already holds a dataset: the demo is the
    default only for an empty workbench. Progress comes in two stages (see
    :data:`~workbench.progress.StageFn`): images drawn, then CSV rows stored. Returns the import
    report, or ``None``.
    """
    from workbench.demo import generate_demo
    from workbench.formats.imat2019 import import_imat2019

    with _demo_lock:
        with session_scope(engine) as session:
            if not force and list_datasets(session):
                return None
        files = generate_demo(
            Path(settings.demo_dir),
            n_images=n_images,
            seed=seed,
            progress=stage("drawing images", "images") if stage else None,
            should_stop=should_stop,
        )
        size = files.csv.stat().st_size
        return import_imat2019(
            engine,
            csv_path=files.csv,
            labels_path=files.labels,
            images_dir=files.images_dir,
            name=DEMO_NAME,
            # The demo's CSV is small enough for one chunk: read it in several, so that the
            # rows stored are reported as they are written rather than all at the end.
            chunk_bytes=max(1, size // DEMO_IMPORT_UPDATES),
            progress=_rows_of(files.csv, stage("importing rows", "rows")) if stage else None,
        )


def _rows_of(csv_path: Path, progress: ProgressFn) -> ProgressFn:
    """A ``ProgressFn`` in bytes of ``csv_path`` read that reports the data rows read instead."""
    ends: list[int] = []  # the byte offset just past each data row
    with csv_path.open("rb") as handle:
        handle.readline()  # the header
        for _line in iter(handle.readline, b""):
            ends.append(handle.tell())
    progress(0, len(ends))

    def update(done_bytes: int, _total_bytes: int | None) -> None:
        progress(bisect_right(ends, done_bytes), len(ends))

    return update


def delete_dataset(session: Session, name: str, *, by: str | None) -> dict[str, Any]:
    """Delete a dataset with everything stored for it (images, masks, flags, captions, recipes'
    links, exports' rows); the audit log keeps a row saying who did it and what was there."""
    from workbench.audit import record

    dataset = get_dataset(session, name)
    images = session.scalar(select(func.count()).where(Image.dataset_id == dataset.id)) or 0
    annotations = session.scalar(select(func.count()).where(Annotation.dataset_id == dataset.id)) or 0
    gone = {"format": dataset.format, "images_root": dataset.images_root, "images": images,
            "annotations": annotations}
    record(session, by, "dataset.delete", "dataset", dataset.id, dataset=name, before=gone)
    # A statement, not session.delete: the store's foreign keys cascade to every row of the dataset
    # (the ORM would first try to detach its categories and attributes).
    session.execute(delete(Dataset).where(Dataset.id == dataset.id))
    session.expunge(dataset)
    return {"dataset": name, **gone}
