"""The caption review state as an image facet for the EDA statistics (``workbench.eda``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.captions import Caption


def caption_status(session: Session, dataset_id: int) -> Any:
    """Per image: ``reviewed`` (any caption accepted, edited or rejected) or ``pending``."""
    import pandas as pd

    status: dict[int, str] = {}
    for image_id, value in session.execute(select(Caption.image_id, Caption.status).where(Caption.dataset_id == dataset_id)):
        if value != "pending" or image_id not in status:
            status[image_id] = "reviewed" if value != "pending" else "pending"
    return pd.Series(status, dtype="object")


def eda_facets() -> list[Any]:
    """The facets this area offers."""
    from workbench.eda import ImageFacet

    return [ImageFacet("caption_status", "Captions", caption_status, missing="no caption")]
