"""Mixing: edit a recipe that turns dataset prompts and reviewed captions into training prompts,
preview it on a sample with the token-length histogram, and save it as a new version."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st
from pydantic import ValidationError

from db.engine import session_scope
from ui.auth import allowed, require_user
from ui.common import datasets_or_stop, store_or_stop
from workbench.captions.mixing import (MixRecipe, empty_sources, get_recipe, list_recipe_names, new_recipe,
                                       preview_mix, recipe_versions, save_recipe)
from workbench.captions.store import caption_sources
from workbench.guard import check_name, refusal

STYLES = {"plain": "dress", "angle": "<dress>", "square": "[dress]", "weight": "(dress:1.2)"}

st.set_page_config(page_title="Mixing · Fashion ControlNet Workbench", page_icon="👗", layout="wide")
user = require_user()
settings, engine = store_or_stop()
st.title("Mixing recipes")
names = datasets_or_stop(engine)
with session_scope(engine) as session:
    recipes = list_recipe_names(session)

# -- load: dataset and a saved recipe to start from ----------------------------------------------------
sb = st.sidebar
name = sb.selectbox("Dataset", names, key="mix_dataset")
start = sb.selectbox("Start from", ["(new recipe)", *recipes], key="mix_start")
if start == "(new recipe)":
    with session_scope(engine) as session:
        base = new_recipe(session, name)  # weighs the sources this dataset has captions from
else:
    with session_scope(engine) as session:
        versions = recipe_versions(session, start)
        version = sb.selectbox("Version", versions[::-1], key=f"mix_version_{start}")
        base = get_recipe(session, start, version).recipe
with session_scope(engine) as session:
    sources = [s for s in caption_sources(session, name) if s != "dataset"]
suffix = f"{start}_{base.model_dump_json().__hash__()}"  # fresh widgets when another recipe is loaded

# -- the editor -----------------------------------------------------------------------------------------
left, right = st.columns(2)
part_choices = list(dict.fromkeys(["trigger", "dataset", "caption", *sources, *base.parts]))
parts = left.multiselect("Parts, in order", part_choices, base.parts, key=f"mix_parts_{suffix}",
                         help="trigger, dataset (garments), caption (weighted choice below) or one source by name.")
weights = {}
with left.container(border=True):
    st.markdown("**Caption part: weights per source** (0 leaves a source out)")
    for source in dict.fromkeys([*sources, *base.weights]):
        weights[source] = st.number_input(source, min_value=0.0, value=float(base.weights.get(source, 0.0)), step=0.5,
                                          key=f"mix_weight_{source}_{suffix}")
statuses = left.multiselect("Caption statuses used", ["accepted", "edited", "pending"], base.statuses,
                            key=f"mix_statuses_{suffix}")
style = right.selectbox("Garment symbols", list(STYLES), list(STYLES).index(base.symbol_style),
                        format_func=lambda s: f"{s}: {STYLES[s]}", key=f"mix_style_{suffix}")
weight = right.number_input("Symbol weight", min_value=0.1, value=base.symbol_weight, step=0.1, key=f"mix_sw_{suffix}")
trigger = right.text_input("Trigger word", base.trigger_word, key=f"mix_trigger_{suffix}")
attributes = right.checkbox("Garment attributes", base.garments.include_attributes, key=f"mix_attrs_{suffix}")
parts_too = right.checkbox("Garment parts and decorations", base.garments.include_parts, key=f"mix_gparts_{suffix}")
shuffle = right.checkbox("Shuffle garment tags", base.shuffle_garments, key=f"mix_shuffle_{suffix}")
keep_first = right.number_input("Keep the first k in place", min_value=0, value=base.keep_first, key=f"mix_keep_{suffix}")
dropout = right.slider("Caption dropout (share of empty prompts)", 0.0, 1.0, base.caption_dropout, 0.05,
                       key=f"mix_dropout_{suffix}")
max_tokens = right.number_input("Length cap in CLIP tokens (start and end included; 0: none)", min_value=0,
                                value=base.max_tokens or 0, key=f"mix_max_{suffix}")
tokenizer = right.text_input("CLIP tokenizer folder or hub id (empty: CLIP's BPE from open_clip)",
                             base.tokenizer or "", key=f"mix_tok_{suffix}")

try:
    recipe = MixRecipe(
        parts=parts, weights={k: v for k, v in weights.items() if v > 0}, statuses=statuses or ["accepted", "edited"],
        symbol_style=style, symbol_weight=weight, trigger_word=trigger, shuffle_garments=shuffle,
        keep_first=int(keep_first), caption_dropout=dropout, max_tokens=int(max_tokens) or None,
        tokenizer=tokenizer.strip() or None,
        garments=base.garments.model_copy(update={"include_attributes": attributes, "include_parts": parts_too}))
except ValidationError as exc:
    st.error("; ".join(e["msg"] for e in exc.errors()))
    st.stop()

with session_scope(engine) as session:
    empty = empty_sources(session, name, recipe)
if empty:
    st.warning("These sources give no caption for this dataset, so the prompts do without them: "
               + "; ".join(empty.values()) + ".")
if not sources:
    st.info(f"{name} has no captions besides its dataset prompt yet: the caption part stays empty until "
            "a captioner runs (Captions page, or `python -m workbench captions run`).")

# -- preview -----------------------------------------------------------------------------------------------
a, b = st.columns(2)
sample = a.number_input("Preview images", min_value=1, value=8, key="mix_sample")
seed = b.number_input("Seed", min_value=0, value=0, key="mix_seed")
try:
    with session_scope(engine) as session:
        shown = preview_mix(session, name, recipe, int(sample), int(seed))
except (ValueError, LookupError) as exc:
    st.error(str(exc))
    st.stop()
st.dataframe(pd.DataFrame([{"image": p.file_name, "prompt": p.prompt, "tokens": p.tokens, "cut": p.truncated,
                            "dropped": p.dropped, "sources": ", ".join(p.sources)} for p in shown.samples]),
             hide_index=True, key="mix_preview_table")
st.caption(f"{len(shown.lengths_after)} images: {shown.truncated} cut to the cap, {shown.dropped} dropped to an empty prompt.")
lengths = pd.DataFrame({"tokens": shown.lengths_before + shown.lengths_after,
                        "when": ["before the cap"] * len(shown.lengths_before) + ["after the cap"] * len(shown.lengths_after)})
fig = px.histogram(lengths, x="tokens", color="when", barmode="overlay", nbins=40,
                   title="Prompt length in CLIP tokens (all images)")
if recipe.max_tokens:
    fig.add_vline(x=recipe.max_tokens, line_dash="dash")
st.plotly_chart(fig, key="mix_histogram")

# -- save ----------------------------------------------------------------------------------------------------
c1, c2, c3 = st.columns([2, 2, 1])
save_name = c1.text_input("Recipe name", "" if start == "(new recipe)" else start, key="mix_save_name")
c2.markdown(f"Saved by **{user.name}**")
if c3.button("Save version", key="mix_save", type="primary", disabled=not allowed("save_recipe", c2)):
    name_problem = refusal(check_name, save_name.strip(), "recipe name") if save_name.strip() else None
    if not user.can("save_recipe"):
        st.error("Saving recipes needs the curator role.")
    elif not save_name.strip():
        st.error("Name the recipe before saving.")
    elif name_problem:
        st.error(name_problem)
    else:
        with session_scope(engine) as session:
            stored = save_recipe(session, save_name.strip(), recipe, user.name, dataset=name)
        st.success(f"Saved {stored.name!r} version {stored.version} for {name}. The Export page uses it for "
                       f"{name} by default, and the export's manifest records this version.")
