"""The curated-data store: SQLAlchemy 2.0 models, engine/session setup and migrations.

Models live in one module per area (``db/models.py`` for the core, ``db/people.py``,
``db/captions.py``, ``db/training.py``, ``db/jobs.py``, ``db/generations.py``, ``db/models_registry.py``,
``db/segment.py``, ``db/evaluations.py``, ``db/curation.py``, ``db/repair.py``, ``db/users.py``); importing ``db``
registers them all on ``Base``.
"""

from db import (captions, curation, evaluations, explore, generations, jobs, models_registry, people,  # noqa: F401
                repair, segment, training, users)  # (importing them registers their tables on Base)
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
