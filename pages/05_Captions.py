"""Captions: generate, then review every image's captions side by side; accept, edit, reject."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st
from PIL import Image as PILImage, ImageDraw

from db.engine import session_scope, with_retries
from ui.auth import allowed, refusal, require_user
from ui.common import datasets_or_stop, store_or_stop
from ui.jobs import page_job, watch_job
from ui.models import model_picker
from workbench.captions.dataset_prompts import dataset_prompts
from workbench.captions.review import (BulkOperation, CaptionConflict, ReviewError, apply_bulk, decide, preview_bulk,
                                       review_progress)
from workbench.captions.run import CAPTIONERS, captioner_model_kind
from workbench.captions.store import caption_phrases, caption_sources, list_captions
from workbench.datasets import get_dataset
from workbench.models import TINY_LABEL

STATUSES = ["pending", "accepted", "edited", "rejected"]
COLOURS = {True: "#2ca02c", False: "#d62728", None: "#1f77b4"}

st.set_page_config(page_title="Captions · Fashion ControlNet Workbench", page_icon="👗", layout="wide")
user = require_user()
settings, engine = store_or_stop()
st.title("Captions")
names = datasets_or_stop(engine)

# -- load: dataset, curator, filters -----------------------------------------------------------------
sb = st.sidebar
name = sb.selectbox("Dataset", names, key="captions_dataset")
curator = user.name  # every decision is recorded under the signed-in user's name
can_decide = allowed("decide", sb)
with session_scope(engine) as session:
    sources_known = caption_sources(session, name)
    reviewed, total = review_progress(session, name)
sources = sb.multiselect("Source", sources_known, key="captions_sources")
statuses = sb.multiselect("Status", STATUSES, key="captions_statuses")
lo, hi = sb.columns(2)
min_words = lo.number_input("Min words", min_value=0, value=0, step=1, key="captions_min_words")
max_words = hi.number_input("Max words (0: any)", min_value=0, value=0, step=1, key="captions_max_words")
word = sb.text_input("Contains word", key="captions_word")
filters = dict(sources=sources or None, statuses=statuses or None, min_words=int(min_words) or None,
               max_words=int(max_words) or None, word=word.strip() or None)
st.progress(reviewed / total if total else 0.0, text=f"{reviewed} of {total} images have a reviewed caption")

# -- generate ---------------------------------------------------------------------------------------------
with st.expander("Generate captions (runs as a background job)"):
    cols = st.columns([2, 3, 1])
    kind = cols[0].selectbox("Captioner", CAPTIONERS, key="captions_gen_kind")
    model_kind = captioner_model_kind(kind)
    model = "" if model_kind is None else model_picker(
        model_kind, settings, engine, label="CLIP model" if model_kind == "clip" else "Model",
        key=f"captions_gen_model_{model_kind}", container=cols[1],
        default={"clip": "clip-vit-l-14", "caption": "blip-large", "kosmos2": "kosmos2"}[model_kind]) or ""
    batch = cols[2].number_input("Batch", min_value=1, value=8, key="captions_gen_batch")
    if st.button("Start captioning job", key="captions_gen_start", disabled=not allowed("run_jobs")):
        from workbench.jobs import start_job

        argv = ["captions", "run", "--dataset", name, "--captioner", kind, "--batch-size", str(int(batch))]
        argv += ["--model", model.strip()] if model.strip() else []
        st.session_state["captions_job"] = start_job(engine, settings, kind="captions", argv=argv, dataset=name,
                                                     details={"captioners": [kind]}, user=curator)
    if (job_id := page_job(engine, "captions_job", "captions", name)) is not None:
        watch_job(engine, job_id, label="Captioning job", unit="images", cancellable=True,
                  finished=lambda job: "Captions stored: review them below.", restart_key="captions_job")
    from workbench.jobs import list_jobs, refresh_jobs

    refresh_jobs(engine)
    with session_scope(engine) as session:
        jobs = [(j.id, j.status, j.message, " ".join(j.argv[4:6]), j.error or "")
                for j in list_jobs(session, kind="captions", dataset=name)[:5]]
    if jobs:
        st.caption("Recent captioning jobs of this dataset (`python -m workbench jobs status ID` follows one)")
        st.dataframe(pd.DataFrame(jobs, columns=["job", "status", "progress", "captioner", "reason"]), hide_index=True)


def forget(caption_id: int) -> None:
    """Show the stored version of a caption again (after a save, or when keeping theirs)."""
    st.session_state.pop(f"caption_seen_{caption_id}", None)
    st.session_state.pop(f"caption_text_{caption_id}", None)


def run_decision(caption_id: int, version: int, decision: str, text: str | None = None) -> None:
    """Apply a decision, keeping a refused (stale) save on screen with the other version."""
    if not can_decide:
        st.session_state["captions_notice"] = ("error", refusal("decide"))
        return
    try:
        with_retries(engine, lambda session: decide(session, caption_id, version, decision, curator, text=text))
        st.session_state.pop("captions_conflict", None)
        forget(caption_id)
    except CaptionConflict as conflict:
        st.session_state["captions_conflict"] = {
            "id": caption_id, "mine": text, "decision": decision, "theirs": conflict.current.text,
            "version": conflict.current.version, "curator": conflict.current.curator, "status": conflict.current.status}
    except ReviewError as exc:
        st.session_state["captions_notice"] = ("error", str(exc))


# -- bulk operations ----------------------------------------------------------------------------------------
with st.expander("Bulk edit the filtered captions (preview first)"):
    op_kind = st.selectbox("Operation", ["replace", "strip", "lower", "dedupe"], key="bulk_kind",
                           format_func={"replace": "find / replace (regex)", "strip": "strip phrases",
                                        "lower": "lower-case", "dedupe": "de-duplicate words"}.get)
    pattern = replacement = phrases = ""
    if op_kind == "replace":
        pattern = st.text_input("Find (regular expression)", key="bulk_pattern")
        replacement = st.text_input("Replace with", key="bulk_replacement")
    elif op_kind == "strip":
        phrases = st.text_area("Phrases to strip, one a line", "trending on artstation", key="bulk_phrases")
    if st.button("Preview", key="bulk_preview"):
        try:
            op = BulkOperation(kind=op_kind, pattern=pattern, replacement=replacement,
                               phrases=[p for p in phrases.splitlines() if p.strip()])
            with session_scope(engine) as session:
                st.session_state["bulk_changes"] = preview_bulk(session, name, op, **filters)
        except ValueError as exc:
            st.error(str(exc))
    changes = st.session_state.get("bulk_changes")
    if changes is not None:
        if not changes:
            st.info("No filtered caption would change.")
        else:
            st.dataframe(pd.DataFrame([{"image": c.file_name, "source": c.source, "before": c.before, "after": c.after}
                                       for c in changes]), hide_index=True)
            if st.button(f"Apply to {len(changes)} captions", key="bulk_apply", type="primary",
                         disabled=not can_decide):
                if not can_decide:
                    st.error(refusal("decide"))
                else:
                    with session_scope(engine) as session:
                        result = apply_bulk(session, changes, curator)
                    st.session_state.pop("bulk_changes", None)
                    st.success(f"{len(result.applied)} captions changed.")
                    for conflict in result.conflicts:
                        st.warning(str(conflict))

# -- show: one image at a time ----------------------------------------------------------------------------
with session_scope(engine) as session:
    dataset = get_dataset(session, name)
    root = Path(dataset.images_root)
    rows = list_captions(session, name, **filters)
image_ids = list(dict.fromkeys(r.image_id for r in rows))
if not image_ids:
    st.info("No captions match. Generate some above (or `python -m workbench captions run`), or loosen the filters.")
    st.stop()
position = st.session_state.get("captions_position", 0) % len(image_ids)
nav = st.columns([1, 1, 6])
if nav[0].button("◀ Previous", key="captions_prev", shortcut="K"):
    position = (position - 1) % len(image_ids)
if nav[1].button("Next ▶", key="captions_next", shortcut="J"):
    position = (position + 1) % len(image_ids)
st.session_state["captions_position"] = position
image_id = image_ids[position]
shown = [r for r in rows if r.image_id == image_id]
nav[2].markdown(f"**{shown[0].file_name}** · image {position + 1} of {len(image_ids)} · "
                "keys: **J**/**K** next/previous, **A** accept, **X** reject, **Ctrl+Enter** save the edit "
                "of the caption chosen for the keyboard")

notice = st.session_state.pop("captions_notice", None)
if notice:
    (st.error if notice[0] == "error" else st.info)(notice[1])
conflict = st.session_state.get("captions_conflict")
if conflict:
    st.warning(f"Not saved: caption {conflict['id']} was changed by {conflict['curator'] or 'someone'} "
               f"(now version {conflict['version']}, {conflict['status']}):\n\n> {conflict['theirs']}\n\n"
               f"Your {conflict['decision']}: {conflict['mine'] or '(no text change)'}")
    keep, mine = st.columns(2)
    if keep.button("Keep their version", key="conflict_keep"):
        st.session_state.pop("captions_conflict", None)
        forget(conflict["id"])
        st.rerun()
    if mine.button("Apply mine on top of it", key="conflict_mine"):
        run_decision(conflict["id"], conflict["version"], conflict["decision"], conflict["mine"])
        st.rerun()

with session_scope(engine) as session:
    prompt = dataset_prompts(session, dataset.id, image_ids=[image_id]).get(image_id, "")
    phrases = {r.id: caption_phrases(session, r.id) for r in shown if r.source == "kosmos2"}
left, right = st.columns([2, 5])
try:
    with PILImage.open(root / shown[0].file_name) as handle:
        photo = handle.convert("RGB")
    draw = ImageDraw.Draw(photo)
    for items in phrases.values():
        for p in items:
            draw.rectangle((p.x0, p.y0, p.x1, p.y1), outline=COLOURS[p.agrees], width=3)
            draw.text((p.x0 + 3, p.y0 + 2), p.phrase, fill=COLOURS[p.agrees])
    left.image(photo, caption="Kosmos-2 phrases: green agrees with a garment mask, red disagrees, blue names no garment"
               if phrases else None)
except OSError as exc:
    left.error(f"Cannot open {root / shown[0].file_name}: {exc}")
left.markdown(f"**Dataset prompt:** {prompt or '(no garments)'}")
for items in phrases.values():
    for p in items:
        if p.agrees is False:
            left.warning(f"Kosmos-2 “{p.phrase}”: {p.note}")

labels = {r.id: f"{r.source} (v{r.version})" for r in shown}
focus = right.radio("Caption for the keyboard", list(labels), format_func=labels.get, horizontal=True,
                    key=f"captions_focus_{image_id}")
columns = right.columns(min(len(shown), 3))
for n, caption in enumerate(shown):
    box = columns[n % len(columns)].container(border=True)
    box.markdown(f"**{caption.source}** · {caption.status} · v{caption.version}"
                 + (f" · {caption.curator}" if caption.curator else ""))
    box.caption((caption.model or "") + (f" · 🎲 {TINY_LABEL}" if (caption.extra or {}).get("random_weights") else ""))
    # The page remembers the version the curator saw: a save is checked against it, so an edit
    # made elsewhere in the meantime is reported as a conflict instead of being overwritten.
    seen_key, text_key = f"caption_seen_{caption.id}", f"caption_text_{caption.id}"
    if seen_key not in st.session_state:
        st.session_state[seen_key] = caption.version
        st.session_state[text_key] = caption.text
    seen = st.session_state[seen_key]
    if seen != caption.version:
        box.caption(f"⚠ changed since you opened it: now v{caption.version} by {caption.curator or 'the captioner'}")
    text = box.text_area("Text", key=text_key, label_visibility="collapsed", height=120)
    chosen = caption.id == focus
    b1, b2, b3 = box.columns(3)
    if b1.button("Accept", key=f"accept_{caption.id}", shortcut="A" if chosen else None, disabled=not can_decide):
        run_decision(caption.id, seen, "accept")
        st.rerun()
    if b2.button("Save edit", key=f"save_{caption.id}", shortcut="Ctrl+Enter" if chosen else None,
                 disabled=not can_decide):
        if text.strip() != caption.text or seen != caption.version:
            run_decision(caption.id, seen, "edit", text)
            st.rerun()
        st.session_state["captions_notice"] = ("info", "The text is unchanged; nothing to save.")
        st.rerun()
    if b3.button("Reject", key=f"reject_{caption.id}", shortcut="X" if chosen else None, disabled=not can_decide):
        run_decision(caption.id, seen, "reject")
        st.rerun()
