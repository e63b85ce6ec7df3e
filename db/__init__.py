"""The curated-data store: SQLAlchemy 2.0 models, engine/session setup and migrations."""

from db.engine import make_engine, session_factory, session_scope
from db.models import (
    Annotation,
    AnnotationAttribute,
    Attribute,
    AuditLog,
    Base,
    Category,
    Curator,
    Dataset,
    Image,
    ImportRun,
    MaskScheme,
)

__all__ = [
    "Annotation",
    "AnnotationAttribute",
    "Attribute",
    "AuditLog",
    "Base",
    "Category",
    "Curator",
    "Dataset",
    "Image",
    "ImportRun",
    "MaskScheme",
    "make_engine",
    "session_factory",
    "session_scope",
]
