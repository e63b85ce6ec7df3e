"""Streamlit pieces shared by the pages that use image embeddings (Explore, Inspect, Similarity)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import streamlit as st
from sqlalchemy import Engine

from db.engine import session_scope
from db.models import Dataset, Image
from workbench.embeddings.store import embedded_models
from workbench.settings import Settings
from workbench.thumbnails import ImageMissing, ThumbnailCache

INSPECT_PAGE = "pages/03_Inspect.py"


def embedded_model_select(settings: Settings, dataset: str, key: str, container=st) -> str | None:
    """A selectbox of the models ``dataset`` has embeddings of (newest first); ``None`` when there are none."""
    models = embedded_models(settings.data_dir, dataset)
    if not models:
        return None
    return container.selectbox("Embeddings of", models, key=key,
                               help="The CLIP model the stored embeddings were made with (Similarity page: Embed).")


def open_in_inspector(dataset: str, file_name: str) -> None:
    """Show an image in the inspector."""
    st.switch_page(INSPECT_PAGE, query_params={"dataset": dataset, "image": file_name})


def thumbnail_grid(settings: Settings, engine: Engine, dataset: str, items: Sequence[tuple[int, str]], *,
                   key: str, columns: int = 6,
                   actions: Callable[[int, str, object], None] | None = None) -> None:
    """Thumbnails of ``items`` (``(image_id, caption)``), each with an Inspect button and, below it,
    whatever ``actions(image_id, file_name, column)`` draws (decision buttons)."""
    cache = ThumbnailCache.for_settings(settings)
    with session_scope(engine) as session:
        ds = session.query(Dataset).filter(Dataset.name == dataset).one()
        rows = {im.id: im for im in session.query(Image).filter(Image.id.in_([i for i, _ in items]))}
        session.expunge_all()
    cols = st.columns(columns)
    for n, (image_id, caption) in enumerate(items):
        image = rows.get(image_id)
        if image is None:
            continue
        col = cols[n % columns]
        try:
            col.image(str(cache.thumbnail(ds, image)), caption=caption)
        except ImageMissing as exc:
            col.warning(f"{image.file_name}: photo missing", icon="⚠️", help=str(exc))
        if col.button("Inspect", key=f"{key}_inspect_{image_id}"):
            open_in_inspector(dataset, image.file_name)
        if actions is not None:
            actions(image_id, image.file_name, col)
