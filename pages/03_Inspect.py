"""Inspect: one image's masks over the photo, its conditioning masks per scheme, a scheme editor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image as PILImage
from sqlalchemy import select

from db.engine import session_scope
from db.models import Category, Dataset, Image
from ui.auth import allowed, can, refusal, require_user
from ui.common import datasets_or_stop, open_store, store_or_stop
from ui.similarity import embedded_model_select, thumbnail_grid
from workbench.embeddings.search import more_like
from workbench.embeddings.vectors import NotEmbedded
from workbench.masks import MaskError
from workbench.overlay import (
    OVERLAY_MODES,
    decode_masks,
    export_size,
    list_annotations,
    overlay_masks,
    preview_mask,
    used_categories,
)
from workbench.people.queue import QueueError, flag_image
from workbench.schemes import (
    CLASS_COLUMNS,
    MAPPING_COLUMNS,
    SchemeConflict,
    SchemeError,
    SchemeNotFound,
    hex_colour,
    list_schemes,
    save_scheme,
    scheme_coverage,
    scheme_from_tables,
    scheme_tables,
)
from workbench.settings import get_settings
from workbench.thumbnails import ImageMissing, ThumbnailCache

BUILTIN_VIEW = ["fine", "body-parts", "cloth-seg", "cloth-seg-compat"]
EXPORT_SIZES = ["512 long side", "512x512", "512x768", "768x1024", "1024 long side", "original"]
DISPLAY_SIDE = 1024
SIMILAR_K = 12

st.set_page_config(page_title="Inspect · Fashion ControlNet Workbench", page_icon="👗", layout="wide")
user = require_user()


def swatch(colour, label: str) -> str:
    """A coloured square followed by a label (legend entry)."""
    return (f'<span style="display:inline-block;width:0.9em;height:0.9em;background:'
            f'{hex_colour(colour)};border:1px solid #888;margin-right:0.3em"></span>{label}')


@st.cache_data(show_spinner=False, max_entries=16)
def display_masks(url: str, image_id: int, size: tuple[int, int]):
    """Every annotation's mask of one image at display size (decoded once per image)."""
    with session_scope(open_store(get_settings())) as session:
        return decode_masks(session, session.get(Image, image_id), size)


@st.cache_data(show_spinner=False, max_entries=4)
def image_order(url: str, dataset_id: int, count: int) -> list[int]:
    """All image ids of a dataset by file name (the set to page through without a filter)."""
    with session_scope(open_store(get_settings())) as session:
        return list(session.scalars(select(Image.id).where(Image.dataset_id == dataset_id)
                                    .order_by(Image.file_name)))


def save_clicked(definition, save_name: str, curator: str, base_name: str, base_version: int) -> None:
    """Save the edited scheme as a new version (admins only) and show it beside the others."""
    save_name = save_name.strip()
    if not can("edit_scheme"):
        st.session_state["editor_message"] = ("error", refusal("edit_scheme"))
        return
    try:
        with session_scope(open_store(get_settings())) as session:
            stored = save_scheme(session, definition.edited(name=save_name), curator=curator,
                                 based_on=base_version if save_name == base_name else None)
    except (SchemeError, SchemeConflict) as exc:
        st.session_state["editor_message"] = ("error", str(exc))
        return
    st.session_state["editor_message"] = ("ok", f"Saved {stored.name} version {stored.version}; "
                                                "it is shown beside the other schemes above.")
    if stored.name not in BUILTIN_VIEW:
        shown = list(st.session_state.get("inspect_extra_schemes", []))
        st.session_state["inspect_extra_schemes"] = [*shown, stored.name] if stored.name not in shown else shown


def table_rows(frame: pd.DataFrame) -> list[dict]:
    """An edited table's rows as dicts, blank cells None."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def go_to(file_name: str) -> None:
    """Show another image of the current set."""
    st.query_params["image"] = file_name


st.title("Inspect")

# -- load: which dataset, which image, which set to page through --------------------------
settings, engine = store_or_stop()
names = datasets_or_stop(engine)

wanted = st.query_params.get("dataset")
if wanted not in names:
    wanted = names[0]
name = st.sidebar.selectbox("Dataset", names, index=names.index(wanted), key="inspect_dataset")
if name != st.query_params.get("dataset"):
    st.query_params["dataset"] = name

with session_scope(engine) as session:
    dataset = session.query(Dataset).filter(Dataset.name == name).one()
    n_images = session.query(Image).filter(Image.dataset_id == dataset.id).count()
if n_images == 0:
    st.info(f"Dataset **{name}** has no images.")
    st.stop()

chosen_set = st.session_state.get("inspect_set")
if chosen_set and chosen_set.get("dataset") == name and chosen_set.get("ids"):
    ids, set_label = chosen_set["ids"], chosen_set["label"]
else:
    ids, set_label = image_order(settings.database_url, dataset.id, n_images), "all images"

with session_scope(engine) as session:
    file_name = st.query_params.get("image")
    image = None
    if file_name:
        image = session.query(Image).filter(Image.dataset_id == dataset.id,
                                            Image.file_name == file_name).one_or_none()
        if image is None:
            st.warning(f"Dataset **{name}** has no image {file_name!r}; showing the first of the set.")
    if image is None:
        image = session.get(Image, ids[0])
    if image is None:
        st.info("The images of this set are no longer in the store; pick another set on Explore.")
        st.session_state.pop("inspect_set", None)
        st.stop()
    session.expunge(image)
    position = ids.index(image.id) if image.id in ids else None
    neighbours = {}
    if position is not None:
        for step in (-1, 1):
            other = ids[(position + step) % len(ids)]
            neighbours[step] = session.get(Image, other).file_name
    annotations = list_annotations(session, image.id)
    categories = [(c.name, c.supercategory or "") for c in
                  session.query(Category).filter(Category.dataset_id == dataset.id)
                  .order_by(Category.source_id)]

# -- navigation: previous / next through the current set, with keyboard shortcuts --------
nav = st.columns([1.5, 1.2, 6], vertical_alignment="center")
where = f"{position + 1} of {len(ids)} in {set_label}" if position is not None else \
    f"not in the current set ({set_label})"
if neighbours:
    nav[0].button("◀ Previous", shortcut="Left", key="inspect_prev",
                  on_click=go_to, args=(neighbours[-1],), help="Keyboard: ←")
    nav[1].button("Next ▶", shortcut="Right", key="inspect_next",
                  on_click=go_to, args=(neighbours[1],), help="Keyboard: →")
nav[2].markdown(f"**{image.file_name}** · {image.width}×{image.height} · {where}")
if chosen_set and st.sidebar.button("Page through all images instead", key="inspect_all"):
    st.session_state.pop("inspect_set", None)
    st.rerun()

# -- overlay controls -----------------------------------------------------------------------
sb = st.sidebar
opacity = sb.slider("Mask opacity", 0.0, 1.0, 0.5, 0.05, key="inspect_opacity")
mode = sb.radio("Draw masks as", OVERLAY_MODES, horizontal=True, key="inspect_mode")
size_choice = sb.selectbox("Export resolution", EXPORT_SIZES, key="inspect_export_size")
show_predicted = sb.toggle("Show predicted masks", key="inspect_predicted",
                           help="Masks a segmenter predicted (Segment page), shown apart from the real ones.")
out_size = export_size(size_choice, image.width, image.height)

scale = min(1.0, DISPLAY_SIDE / max(image.width, image.height))
display = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
cache = ThumbnailCache.for_settings(settings)
photo = None
try:
    photo_path = cache.thumbnail(dataset, image, max_side=max(display))
    with PILImage.open(photo_path) as im:
        photo = np.asarray(im.convert("RGB").resize(display))
except ImageMissing as exc:
    st.error(f"{exc}. The masks are still shown, on a grey background.")
if photo is None:
    photo = np.full((display[1], display[0], 3), 96, dtype=np.uint8)

# -- the photo with its masks ---------------------------------------------------------------
left, right = st.columns([3, 2])
with right:
    st.subheader("Annotations")
    if not annotations:
        st.info("This image has no annotations.")
    st.caption("Tick a category to show its masks; select a row to highlight one mask.")
    shown_categories = set()
    for category, colour in used_categories(annotations):
        row = st.columns([1, 12])
        row[0].markdown(swatch(colour, ""), unsafe_allow_html=True)
        if row[1].checkbox(category, value=True, key=f"inspect_show_{category}"):
            shown_categories.add(category)
    table = pd.DataFrame([{
        "id": a.id, "category": a.category, "attributes": ", ".join(a.attributes),
        "area": a.area, "box (x, y, w, h)": ", ".join(map(str, a.bbox)),
    } for a in annotations], columns=["id", "category", "attributes", "area", "box (x, y, w, h)"])
    picked = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row",
                          key=f"inspect_rows_{image.id}")
    rows = picked.selection.rows if picked is not None else []
    highlight_id = int(table.iloc[rows[0]]["id"]) if rows else None
    with st.popover("Someone is unlabelled here"):
        st.caption("Adds this image to the People review queue.")
        flag_note = st.text_input("Note (optional)", key="inspect_flag_note",
                                  placeholder="e.g. a person on the left has no masks")
        if st.button("Flag for review", key="inspect_flag", disabled=not allowed("decide")):
            try:
                with session_scope(engine) as session:
                    flag_image(session, image.id, user.name, flag_note)
            except QueueError as exc:
                st.error(str(exc))
            else:
                st.success(f"{image.file_name} is in the People review queue.")

with left:
    try:
        masks = display_masks(settings.database_url, image.id, display) if annotations else {}
    except MaskError as exc:
        st.error(f"A mask of this image cannot be decoded: {exc}")
        masks = {}
    # Drawn largest first (the list order), so small masks stay visible on top.
    drawn = [(masks[a.id], a.colour) for a in reversed(annotations)
             if a.category in shown_categories and a.id in masks]
    highlight = masks.get(highlight_id) if highlight_id is not None else None
    st.image(overlay_masks(photo, drawn, opacity=opacity, mode=mode,
                           highlight=highlight),
             caption=f"{len(drawn)} of {len(annotations)} masks shown" + (
                 f" · highlighted: {table.iloc[rows[0]]['category']} (annotation {highlight_id})"
                 if highlight_id is not None else ""),
             width="stretch")

# -- more like this: the nearest images by their CLIP embeddings ---------------------------------
similar_model = embedded_model_select(settings, name, "inspect_similar_model", container=st.sidebar)
if similar_model is not None and st.toggle("More like this", key="inspect_more_like",
                                           help="The images whose embeddings are nearest this one's."):
    try:
        with session_scope(engine) as session:
            matches = more_like(session, name, image.id, similar_model, settings.data_dir, k=SIMILAR_K)
    except (LookupError, NotEmbedded) as exc:
        st.info(str(exc))
    else:
        thumbnail_grid(settings, engine, name, [(m.image_id, f"{m.file_name} · {m.score:.3f}") for m in matches],
                       key="inspect_similar")

# -- side by side: the conditioning masks at the export resolution --------------------------
st.subheader(f"Conditioning masks at {out_size[0]}×{out_size[1]}")
with session_scope(engine) as session:
    stored_names = [s.name for s in list_schemes(session)]
extra = sb.multiselect("Also show schemes", [n for n in stored_names if n not in BUILTIN_VIEW],
                       key="inspect_extra_schemes")
views = [n for n in BUILTIN_VIEW if n in stored_names] + extra
cols = st.columns(len(views) + 1)
cols[0].image(photo, caption="photo", width="stretch")
with session_scope(engine) as session:
    image_row = session.get(Image, image.id)
    for col, scheme_name in zip(cols[1:], views):
        try:
            rendered = cache.mask(session, image_row, scheme_name, size=out_size)
        except (MaskError, SchemeError, SchemeNotFound) as exc:
            col.error(f"{scheme_name}: {exc}")
            continue
        col.image(rendered.rgb(), caption=f"{scheme_name} v{rendered.scheme_version}",
                  width="stretch")
        present = set(np.unique(rendered.values()).tolist()) - {0}
        colours = rendered.colours()
        col.markdown("  \n".join(swatch(colours[int(v)], label)
                                  for v, label in rendered.legend.items() if int(v) in present)
                     or "background only", unsafe_allow_html=True)
        if rendered.unmapped:
            col.warning(f"Not in {scheme_name}, left as background: {', '.join(rendered.unmapped)}")

# -- predicted masks (a segmenter's, never mixed with the real ones) -------------------------
if show_predicted:
    from workbench.segment.store import predicted_views

    st.subheader("Predicted masks")
    with session_scope(engine) as session:
        predicted = predicted_views(session, image.id, size=out_size)
    if not predicted:
        st.info("No segmenter has predicted this image; predict on the Segment page "
                "(`python -m workbench segment predict`).")
    for col, view in zip(st.columns(max(1, len(predicted))), predicted):
        col.image(view.rgb, caption=f"predicted · {view.label}", width="stretch")
        col.markdown("  \n".join(swatch(colour, name) for value, (name, colour) in view.classes.items() if value)
                     or "background only", unsafe_allow_html=True)

# -- scheme editor --------------------------------------------------------------------------
st.subheader("Scheme editor")
st.caption("Map each category to a part, give each part a colour and a draw layer (higher "
           "layers are drawn on top), preview it on this image, and save it as a new version.")
with session_scope(engine) as session:
    stored_all = {s.name: s for s in list_schemes(session)}
base_name = st.selectbox("Start from", list(stored_all),
                         index=list(stored_all).index("body-parts") if "body-parts" in stored_all else 0,
                         key="editor_base")
base = stored_all[base_name]
mapping_rows, class_rows = scheme_tables(base.definition, categories)
classes_in = pd.DataFrame(class_rows, columns=list(CLASS_COLUMNS))
edit_key = f"{base.name}_v{base.version}"
classes_out = st.data_editor(
    classes_in, num_rows="dynamic", hide_index=True, key=f"editor_classes_{edit_key}",
    column_config={
        "value": st.column_config.NumberColumn("value", min_value=0, max_value=255, step=1,
                                               help="Pixel value in the mask (0 = background)"),
        "colour": st.column_config.TextColumn("colour", help="#rrggbb"),
        "layer": st.column_config.NumberColumn("layer", min_value=0, step=1,
                                               help="Draw layer: higher is drawn on top; 0 for background"),
    },
)
class_names = [str(n) for n in classes_out["name"].dropna() if str(n).strip()]
mapping_out = st.data_editor(
    pd.DataFrame(mapping_rows, columns=list(MAPPING_COLUMNS)),
    num_rows="dynamic", hide_index=True, key=f"editor_mapping_{edit_key}",
    column_config={"part": st.column_config.SelectboxColumn(
        "part", options=["", *class_names],
        help="Empty: the supercategory fallback decides")},
    disabled=["supercategory"],
)

new_definition = None
try:
    new_definition = scheme_from_tables(base.definition, table_rows(mapping_out),
                                        table_rows(classes_out))
except SchemeError as exc:
    st.error(f"This scheme cannot be used yet: {exc}")

if new_definition is not None:
    for problem in scheme_coverage(new_definition, categories).problems(base.name):
        st.warning(problem)
    pcol, scol = st.columns(2)
    with pcol:
        try:
            with session_scope(engine) as session:
                preview = preview_mask(session, image.id, new_definition, size=out_size)
            st.image(preview.colourised(), caption=f"preview at {out_size[0]}×{out_size[1]}",
                     width="stretch")
        except MaskError as exc:
            st.error(f"Preview failed: {exc}")
    with scol:
        save_name = st.text_input("Save as (a name; the same name saves a new version)",
                                  value=base.name, key=f"editor_save_name_{edit_key}")
        st.button("Save scheme", type="primary", key="editor_save", on_click=save_clicked,
                  args=(new_definition, save_name, user.name, base.name, base.version),
                  disabled=not allowed("edit_scheme"))
        message = st.session_state.pop("editor_message", None)
        if message is not None:
            (st.success if message[0] == "ok" else st.error)(message[1])
