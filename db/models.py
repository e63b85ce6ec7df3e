"""Typed ORM models of the store (SQLAlchemy 2.0 ``Mapped`` style).

Later capabilities add their tables through Alembic migrations in ``db/migrations``; the
test ``tests/test_db.py`` checks that these models and the migrations agree.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Timezone-aware now, the timestamp of every row."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of every table."""


class MaskColumns:
    """A run-length mask (``workbench.rle``) with its area and bounding box: the columns every
    table of masks shares (the dataset's, predicted and repaired ones)."""

    counts: Mapped[str] = mapped_column(Text)
    area: Mapped[int] = mapped_column(Integer)
    bbox_x: Mapped[int] = mapped_column(Integer)
    bbox_y: Mapped[int] = mapped_column(Integer)
    bbox_w: Mapped[int] = mapped_column(Integer)
    bbox_h: Mapped[int] = mapped_column(Integer)


class Dataset(Base):
    """One imported dataset: its format, where its images live, and its label-file metadata."""

    __tablename__ = "dataset"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    format: Mapped[str] = mapped_column(String(40))
    images_root: Mapped[str] = mapped_column(Text)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    categories: Mapped[list[Category]] = relationship(back_populates="dataset")
    attributes: Mapped[list[Attribute]] = relationship(back_populates="dataset")


class Category(Base):
    """A garment category as the dataset's label file defines it (``source_id`` is its id there)."""

    __tablename__ = "category"
    __table_args__ = (UniqueConstraint("dataset_id", "source_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    source_id: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    supercategory: Mapped[str] = mapped_column(String(200), default="")
    level: Mapped[int | None] = mapped_column(Integer, nullable=True)

    dataset: Mapped[Dataset] = relationship(back_populates="categories")


class Attribute(Base):
    """A fine-grained attribute ("a-line", "floral") from the dataset's label file."""

    __tablename__ = "attribute"
    __table_args__ = (UniqueConstraint("dataset_id", "source_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    source_id: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    supercategory: Mapped[str] = mapped_column(String(200), default="")
    level: Mapped[int | None] = mapped_column(Integer, nullable=True)

    dataset: Mapped[Dataset] = relationship(back_populates="attributes")


class Image(Base):
    """A photo, addressed by its file name relative to the dataset's images folder."""

    __tablename__ = "image"
    __table_args__ = (UniqueConstraint("dataset_id", "file_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    file_name: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    split: Mapped[str | None] = mapped_column(String(40), nullable=True)
    checksum: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Bytes: 64-bit everywhere (SQLite's INTEGER already is; see migration 0019).
    file_size: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Annotation(MaskColumns, Base):
    """One garment mask of an image.

    ``counts`` holds the mask as a COCO compressed RLE string (pycocotools' ``counts`` of an
    image's ``[height, width]``; see :mod:`workbench.rle`) whatever the source format was;
    ``area`` and the box are computed from the runs at import so that statistics never decode
    masks.
    ``source_key`` identifies the source row, which makes re-imports idempotent.
    """

    __tablename__ = "annotation"
    __table_args__ = (
        UniqueConstraint("image_id", "source_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    # No index of its own: the (image_id, source_key) unique constraint serves look-ups by image.
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id", ondelete="CASCADE"))
    source_key: Mapped[str] = mapped_column(String(64))


class AnnotationAttribute(Base):
    """Attribute ids of an annotation (many-to-many), so attribute statistics stay in SQL."""

    __tablename__ = "annotation_attribute"

    annotation_id: Mapped[int] = mapped_column(
        ForeignKey("annotation.id", ondelete="CASCADE"), primary_key=True
    )
    attribute_id: Mapped[int] = mapped_column(
        ForeignKey("attribute.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class MaskScheme(Base):
    """A named, versioned mapping from categories to conditioning classes and colours.

    Edits never overwrite: saving a scheme adds a row with the next version, so an export can
    record exactly which mapping it used.
    """

    __tablename__ = "mask_scheme"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    curator: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Curator(Base):
    """A person who reviews data; named at the start of a review session."""

    __tablename__ = "curator"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditLog(Base):
    """Every write: who, what, the value before and after, and when (see :mod:`workbench.audit`).

    ``dataset`` is the dataset's name, not a key, so the log outlives a deleted dataset.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    curator: Mapped[str | None] = mapped_column(String(200), nullable=True)
    action: Mapped[str] = mapped_column(String(100))
    dataset: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    entity: Mapped[str] = mapped_column(String(100))
    entity_id: Mapped[str] = mapped_column(String(200))
    before: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    after: Mapped[Any | None] = mapped_column(JSON, nullable=True)


class ImportRun(Base):
    """One run of an importer: its sources, its counts and the rows it rejected.

    ``pid``, ``pid_started`` (the process's create time) and ``host`` name the process that runs
    it, so that a run whose process died is told from one still running (``workbench.processes``).
    """

    __tablename__ = "import_run"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    format: Mapped[str] = mapped_column(String(40))
    sources: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="running")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    images: Mapped[int] = mapped_column(Integer, default=0)
    annotations: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid_started: Mapped[float | None] = mapped_column(Float, nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
