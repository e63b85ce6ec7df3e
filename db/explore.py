"""Indexes the Explore pages rely on (no tables of their own).

The EDA page reads every annotation's image, category and area; with this covering index
SQLite answers that from the index alone instead of walking the table, whose rows carry the
run-length text (kilobytes each).
"""

from __future__ import annotations

from sqlalchemy import Index

from db.models import Annotation

ANNOTATION_EXPLORE_INDEX = Index(
    "ix_annotation_explore",
    Annotation.dataset_id,
    Annotation.image_id,
    Annotation.category_id,
    Annotation.area,
)
