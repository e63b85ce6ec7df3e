"""Similarity: embed a dataset, then review its duplicates, outliers and likely label problems, and search it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from db.engine import session_scope
from ui.auth import allowed, can, refusal, require_user
from ui.common import datasets_or_stop, store_or_stop
from ui.jobs import page_job, watch_job
from ui.models import model_picker
from ui.similarity import embedded_model_select, thumbnail_grid
from workbench.captions.base import CaptionerError
from workbench.cli.embeddings import EMBED_JOB_KIND, embed_argv
from workbench.embeddings.compute import DEFAULT_MODEL
from workbench.embeddings.decisions import DecisionError, record_decision
from workbench.embeddings.duplicates import DEFAULT_HASH_DISTANCE, DEFAULT_THRESHOLD, find_duplicates, keep_one
from workbench.embeddings.outliers import review_queue
from workbench.embeddings.search import text_search
from workbench.embeddings.vectors import NotEmbedded

SHOWN = 20

st.set_page_config(page_title="Similarity · Fashion ControlNet Workbench", page_icon="👗", layout="wide")
user = require_user()
st.title("Similarity")


def notice(kind: str, text: str) -> None:
    st.session_state["similarity_notice"] = (kind, text)


def on_keep(dataset: str, group, image_id: int, curator: str) -> None:
    """Keep one image of a duplicate group, exclude the others."""
    if not can("decide"):  # checked again: a role can change while the page is open
        notice("error", refusal("decide"))
        return
    try:
        with session_scope(engine) as session:
            new = keep_one(session, dataset, group, image_id, curator)
        kept = next(m.file_name for m in group.members if m.image_id == image_id)
        notice("success", f"Kept {kept}; {len(group.members) - 1} other(s) excluded ({new} decision(s) recorded).")
    except (DecisionError, ValueError) as exc:
        notice("error", str(exc))


def on_decide(dataset: str, image_id: int, source: str, decision: str, curator: str, details: dict) -> None:
    """Record a keep / exclude decision on a queue item."""
    if not can("decide"):
        notice("error", refusal("decide"))
        return
    try:
        with session_scope(engine) as session:
            record_decision(session, dataset, image_id, source, decision, curator, details=details)
        notice("success", f"{details.get('file_name', image_id)}: {decision} recorded.")
    except DecisionError as exc:
        notice("error", str(exc))


# -- load -----------------------------------------------------------------------------------
settings, engine = store_or_stop()
names = datasets_or_stop(engine)
sb = st.sidebar
dataset = sb.selectbox("Dataset", names, key="similarity_dataset")
curator = user.name  # every keep / exclude is recorded under the signed-in user
may_decide = allowed("decide", sb)
model = embedded_model_select(settings, dataset, "similarity_model", container=sb)
if (shown := st.session_state.pop("similarity_notice", None)) is not None:
    getattr(st, shown[0])(shown[1])

# -- embed (a background job) -------------------------------------------------------------------
with st.expander("Embed the images (a background job; stopped runs continue where they were)", expanded=model is None):
    c1, c2, c3 = st.columns([3, 1, 1])
    embed_model = model_picker("clip", settings, engine, label="CLIP model", key="similarity_embed_model",
                               container=c1, default=DEFAULT_MODEL)
    crops = c2.checkbox("Garment crops too", key="similarity_crops", help="Needed for the label check.")
    batch = c3.number_input("Batch", min_value=1, value=32, key="similarity_batch")
    if st.button("Start embedding job", key="similarity_embed_start", disabled=not embed_model or not allowed("run_jobs")):
        from workbench.jobs import start_job

        st.session_state["similarity_job"] = start_job(
            engine, settings, kind=EMBED_JOB_KIND, argv=embed_argv(dataset, embed_model, crops, int(batch)),
            dataset=dataset, details={"model": embed_model, "crops": crops})
    if (job_id := page_job(engine, "similarity_job", EMBED_JOB_KIND, dataset)) is not None:
        watch_job(engine, job_id, label="Embedding job", unit="images", cancellable=True, restart_key="similarity_job",
                  finished=lambda job: "Embeddings stored: pick them in the sidebar.")

if model is None:
    st.info(f"Dataset **{dataset}** has no embeddings yet: start the job above "
            f"(or `python -m workbench embed --dataset {dataset}`). Exact duplicates need none:")

dup_tab, out_tab, label_tab, search_tab = st.tabs(["Duplicates", "Outliers", "Label problems", "Search"])

# -- duplicates -------------------------------------------------------------------------------------
with dup_tab:
    c1, c2, c3, c4 = st.columns(4)
    use_cosine = c1.checkbox("Embedding similarity", value=True, key="dup_cosine",
                             help="Off: identical files and the same picture resized or re-encoded only.")
    threshold = c2.slider("Cosine from", 0.80, 1.0, DEFAULT_THRESHOLD, 0.005, key="dup_threshold")
    distance = c3.number_input("Picture-hash bits (of 256)", 0, 64, DEFAULT_HASH_DISTANCE, key="dup_hash")
    show_reviewed = c4.checkbox("Show reviewed groups", key="dup_reviewed")
    with session_scope(engine) as session:
        report = find_duplicates(session, dataset, settings.data_dir, model=model,
                                 threshold=threshold if use_cosine else None, hash_distance=int(distance))
    groups = [g for g in report.groups if show_reviewed or not g.decided]
    leaks = sum(g.cross_split for g in report.groups)
    st.caption(f"{len(report.groups)} group(s), {sum(len(g.members) - 1 for g in report.groups)} duplicate image(s)"
               f"{f', {leaks} across splits (leakage)' if leaks else ''}; {sum(g.decided for g in report.groups)} "
               f"reviewed. {report.note}")
    if not groups:
        st.success("No duplicate group left to review.")
    for n, group in enumerate(groups[:SHOWN]):
        leak = f" · ⚠️ across splits {', '.join(group.splits)} (leakage)" if group.cross_split else ""
        st.markdown(f"**Group {n + 1}**: {len(group.members)} images · {', '.join(group.kinds)}{leak}")

        def keep_button(image_id: int, file_name: str, col, group=group) -> None:
            member = next(m for m in group.members if m.image_id == image_id)
            if member.decision:
                col.caption(f"{member.decision} ({member.curator})")
            col.button("Keep this, exclude the rest", key=f"dup_keep_{image_id}", disabled=not may_decide,
                       on_click=on_keep, args=(dataset, group, image_id, curator))

        thumbnail_grid(settings, engine, dataset, [(m.image_id, m.file_name + (f" · {m.split}" if m.split else ""))
                                                   for m in group.members], key=f"dup_{n}", actions=keep_button)
    if len(groups) > SHOWN:
        st.caption(f"{len(groups) - SHOWN} more group(s): decide these first, or use "
                   f"`python -m workbench duplicates --dataset {dataset} --apply --curator NAME`.")


# -- outliers and label problems: review queues ------------------------------------------------------
def queue_view(kind: str, empty: str) -> None:
    """The undecided candidates of ``kind``, worst first, with Keep / Exclude."""
    if model is None:
        st.info("This needs embeddings: start the job above.")
        return
    try:
        with session_scope(engine) as session:
            items = review_queue(session, dataset, model, settings.data_dir, kind)
    except (NotEmbedded, CaptionerError) as exc:
        st.info(str(exc))
        return
    st.caption(f"{len(items)} image(s) to review, worst first.")
    if not items:
        st.success(empty)
        return
    by_image = {i.image_id: i for i in items[:SHOWN]}

    def buttons(image_id: int, file_name: str, col) -> None:
        item = by_image[image_id]
        details = {"file_name": file_name, "score": item.score, "category": item.category, "likely": item.likely,
                   "annotation_id": item.annotation_id}
        for decision, label in (("keep", "Fine, keep"), ("exclude", "Exclude")):
            col.button(label, key=f"{kind}_{decision}_{image_id}", disabled=not may_decide, on_click=on_decide,
                       args=(dataset, image_id, kind, decision, curator, details))

    thumbnail_grid(settings, engine, dataset, [(i.image_id, f"{i.file_name}: {i.detail}") for i in by_image.values()],
                   key=f"{kind}_queue", columns=4, actions=buttons)


with out_tab:
    queue_view("outlier", "No image stands out from its category.")
with label_tab:
    queue_view("label", "No garment looks more like another category than its own.")

# -- search by words ----------------------------------------------------------------------------------
with search_tab:
    text = st.text_input("Find images by words", key="similarity_text", placeholder="red sequin dress")
    if text.strip() and model is not None:
        try:
            with session_scope(engine) as session:
                found = text_search(session, dataset, text, model, settings.data_dir, k=24)
        except (NotEmbedded, CaptionerError, ValueError) as exc:
            st.info(str(exc))
        else:
            st.dataframe(pd.DataFrame([m.to_dict() for m in found]), hide_index=True)
            thumbnail_grid(settings, engine, dataset, [(m.image_id, f"{m.file_name} · {m.score:.3f}") for m in found],
                           key="search")
