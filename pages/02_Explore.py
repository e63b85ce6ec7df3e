"""Explore: what is in a dataset, filtered on every chart at once, and the images behind a bar."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import streamlit as st

from db.engine import session_scope
from db.models import Dataset, Image
from ui import charts
from ui.auth import require_user
from ui.common import datasets_or_stop, open_store, store_or_stop
from workbench.embeddings.projection import COLOUR_BY, map_frame, saved_or_pca
from workbench.embeddings.store import embedded_models
from workbench.embeddings.vectors import image_vectors
from workbench.eda import (
    Drill,
    EdaFilter,
    FilterError,
    attach_facets,
    compute_eda,
    dataset_fingerprint,
    drill_images,
    filter_choices,
    load_frames,
)
from workbench.settings import get_settings
from workbench.thumbnails import ImageMissing, ThumbnailCache

GALLERY_PAGE = 24
GALLERY_COLUMNS = 6
INSPECT_PAGE = "pages/03_Inspect.py"

st.set_page_config(page_title="Explore · Fashion ControlNet Workbench", page_icon="👗", layout="wide")
require_user()


@st.cache_resource(show_spinner="Reading the dataset's statistics…", max_entries=4)
def cached_frames(url: str, name: str, fingerprint: str, cache_dir: str):
    """The compact frames of one dataset version, shared by every session (read-only)."""
    with session_scope(open_store(get_settings())) as session:
        return load_frames(session, name, cache_dir=Path(cache_dir), fingerprint=fingerprint,
                           with_facets=False)


def pick(kind: str, key: str) -> None:
    """A chart selection changed: remember the images behind the clicked element."""
    event = st.session_state.get(key) or {}
    points = (event.get("selection") or {}).get("points") or []
    drill = charts.drill_from_points(kind, points)
    if drill is not None:
        st.session_state["explore_drill"] = drill
        st.session_state["explore_gallery_page"] = 1


def pick_on_map(key: str) -> None:
    """Points were boxed or lassoed on the map: the gallery of exactly those images."""
    event = st.session_state.get(key) or {}
    drill = charts.drill_from_map((event.get("selection") or {}).get("points") or [])
    if drill is not None:
        st.session_state["explore_drill"] = drill
        st.session_state["explore_gallery_page"] = 1


def chart(fig, kind: str | None, key: str) -> None:
    """A Plotly chart; clickable ones open the gallery of the clicked element's images."""
    if kind is None:
        st.plotly_chart(fig, key=key)
    else:
        st.plotly_chart(fig, key=key, on_select=partial(pick, kind, key),
                        selection_mode="points")


st.title("Explore")

# -- load -----------------------------------------------------------------------------------
settings, engine = store_or_stop()
names = datasets_or_stop(engine)

wanted = st.query_params.get("dataset")
name = st.sidebar.selectbox("Dataset", names, key="explore_dataset",
                            index=names.index(wanted) if wanted in names else 0)
if st.session_state.get("explore_drill_dataset") != name:
    st.session_state.pop("explore_drill", None)
    st.session_state["explore_drill_dataset"] = name
with session_scope(engine) as session:
    dataset_id = session.query(Dataset.id).filter(Dataset.name == name).scalar()
    fingerprint = dataset_fingerprint(session, dataset_id)
    base = cached_frames(settings.database_url, name, fingerprint,
                         str(Path(settings.data_dir) / "cache"))
    # Facets (people flags, captions) change with every decision: read them on each run.
    frames = attach_facets(session, replace(base, facets={}, facet_info={}))
if frames.images.empty:
    st.info(f"Dataset **{name}** has no images yet.")
    st.stop()

# -- filter ---------------------------------------------------------------------------------
choices = filter_choices(frames)
sb = st.sidebar
sb.header("Filters")
sb.caption("Each filter keeps images; every chart describes the images kept.")
cats = sb.multiselect("Has a mask of category", choices["categories"], key="explore_categories")
atts = sb.multiselect("Has a mask with attribute", choices["attributes"], key="explore_attributes")
(w_lo, w_hi), (h_lo, h_hi) = choices["width"], choices["height"]
width = sb.slider("Width (px)", w_lo, max(w_hi, w_lo + 1), (w_lo, max(w_hi, w_lo + 1)),
                  key="explore_width")
height = sb.slider("Height (px)", h_lo, max(h_hi, h_lo + 1), (h_lo, max(h_hi, h_lo + 1)),
                   key="explore_height")
flt = EdaFilter(categories=tuple(cats), attributes=tuple(atts),
                min_width=width[0] if width[0] > w_lo else None,
                max_width=width[1] if width[1] < w_hi else None,
                min_height=height[0] if height[0] > h_lo else None,
                max_height=height[1] if height[1] < h_hi else None)
for facet_name, values in choices["facets"].items():
    label = frames.facet_info[facet_name].label
    chosen = sb.multiselect(label, values, key=f"explore_facet_{facet_name}")
    flt = flt.with_facet(facet_name, chosen)
if not choices["facets"]:
    sb.caption("People-flag and caption status filters appear here once those steps record "
               "decisions for this dataset.")

try:
    result = compute_eda(frames, flt)
except FilterError as exc:
    st.error(str(exc))
    st.stop()

# -- show -----------------------------------------------------------------------------------
c1, c2, c3, c4 = st.columns(4)
c1.metric("Images", f"{result.images:,}", help=f"of {result.total_images:,} in the dataset")
c2.metric("Masks", f"{result.masks:,}")
c3.metric("Images with masks", f"{result.images_with_masks:,}")
c4.metric("Categories used", f"{int((result.categories['masks'] > 0).sum()):,}")

if frames.annotations.empty:
    st.info(f"Dataset **{name}** has no annotations (a folder of images, or an import whose rows "
            "were all rejected): the mask charts are empty. Sizes and splits are below.")
elif result.images == 0:
    st.warning("No image passes these filters. Widen the size range or remove a category or "
               "attribute.")

st.caption("Click a bar or a heatmap square to see exactly those images below.")
if result.masks:
    measure = st.radio("Count categories by", ["masks", "images"], horizontal=True,
                       key="explore_measure")
    left, right = st.columns(2)
    with left:
        chart(charts.category_bars(result, measure), "category", "chart_categories")
    with right:
        chart(charts.attribute_bars(result), "attribute", "chart_attributes")
    if not result.cooccurrence.empty:
        chart(charts.cooccurrence_map(result), "cell", "chart_cooccurrence")
    left, right = st.columns(2)
    with left:
        chart(charts.simple_bars(result.masks_per_image, "masks", "images", "Masks per image",
                                 "masks", xtitle="masks in the image"), "masks", "chart_masks")
    with right:
        chart(charts.area_boxes(result), None, "chart_area")
if result.images:
    left, mid, right = st.columns(3)
    with left:
        chart(charts.size_map(result), None, "chart_sizes")
    with mid:
        chart(charts.aspect_bars(result), None, "chart_aspect")
    with right:
        chart(charts.simple_bars(result.splits, "split", "images", "Split sizes", "split"),
              "split", "chart_splits")
    facet_cols = st.columns(max(len(result.facets), 1))
    for col, (facet_name, table) in zip(facet_cols, result.facets.items()):
        with col:
            label = frames.facet_info[facet_name].label
            if table.empty:
                st.caption(f"{label}: no data yet for these images.")
            else:
                chart(charts.simple_bars(table, "value", "images", label, "value"),
                      f"facet:{facet_name}", f"chart_facet_{facet_name}")

# -- the dataset map: image embeddings in 2-D --------------------------------------------------
st.subheader("Dataset map")
models = embedded_models(settings.data_dir, name)
if not models:
    st.caption(f"Embed the images on the **Similarity** page (or `python -m workbench embed --dataset {name}`) "
               "to see them on a map: similar photos close together, coloured by category, split, people "
               "review or caption state; box or lasso a region for its gallery.")
else:
    left, right = st.columns([1, 2])
    map_model = left.selectbox("Embeddings of", models, key="explore_map_model")
    colour = right.radio("Colour by", list(COLOUR_BY), horizontal=True, key="explore_map_colour",
                         format_func=COLOUR_BY.get)
    with session_scope(engine) as session:
        vectors = image_vectors(session, name, map_model, settings.data_dir)
    coords, method = saved_or_pca(vectors.store, vectors.checksums, vectors.vectors)
    points = map_frame(vectors.image_ids, coords, frames)
    points = points[points["id"].isin(drill_images(frames, flt, Drill())["id"])]
    st.plotly_chart(charts.map_scatter(points, colour, method), key="chart_map",
                    on_select=partial(pick_on_map, "chart_map"), selection_mode=("box", "lasso"))
    st.caption(f"{len(points):,} images on the map (those passing the filters)"
               + (f"; {vectors.missing:,} not embedded yet" if vectors.missing else "")
               + ("" if method == "umap" else "; PCA: the embed job saves a UMAP map when umap-learn is installed"))

with st.expander("Tables (sortable: click a column header; downloadable as CSV)"):
    table_name = st.selectbox("Table", list(result.TABLES), key="explore_table",
                              format_func=lambda t: t.replace("_", " "))
    table = getattr(result, table_name)
    st.dataframe(table, hide_index=True)
    st.download_button(f"Download {table_name}.csv", table.to_csv(index=False),
                       file_name=f"{name}-{table_name}.csv", mime="text/csv", on_click="ignore",
                       key="explore_download")

# -- act: the gallery of the clicked element ------------------------------------------------
drill: Drill | None = st.session_state.get("explore_drill")
if drill is not None:
    try:
        shown = drill_images(frames, flt, drill)
    except FilterError as exc:
        st.error(str(exc))
        st.stop()
    st.subheader(f"Gallery: {drill.describe()} ({len(shown):,})")
    head, clear = st.columns([5, 1])
    if clear.button("Close gallery", key="gallery_close"):
        st.session_state.pop("explore_drill", None)
        st.rerun()
    if shown.empty:
        st.info("No image under the current filters matches this element.")
    else:
        pages = (len(shown) - 1) // GALLERY_PAGE + 1
        page = 0
        if pages > 1:
            if st.session_state.get("explore_gallery_page", 1) > pages:
                st.session_state["explore_gallery_page"] = 1
            page = head.number_input(f"Page (of {pages})", 1, pages, key="explore_gallery_page") - 1
        part = shown.iloc[page * GALLERY_PAGE:(page + 1) * GALLERY_PAGE]
        cache = ThumbnailCache.for_settings(settings)
        with session_scope(engine) as session:
            dataset = session.get(Dataset, dataset_id)
            rows = {im.id: im for im in session.query(Image).filter(Image.id.in_(part["id"].tolist()))}
            cols = st.columns(GALLERY_COLUMNS)
            for i, image_id in enumerate(part["id"].tolist()):
                image = rows[image_id]
                with cols[i % GALLERY_COLUMNS]:
                    try:
                        st.image(str(cache.thumbnail(dataset, image)), caption=image.file_name)
                    except ImageMissing as exc:
                        st.warning(f"{image.file_name}: photo missing", icon="⚠️",
                                   help=str(exc))
                    if st.button("Inspect", key=f"inspect_{image_id}"):
                        st.session_state["inspect_set"] = {
                            "dataset": name, "ids": shown["id"].tolist(),
                            "label": drill.describe(),
                        }
                        st.switch_page(INSPECT_PAGE,
                                       query_params={"dataset": name, "image": image.file_name})
