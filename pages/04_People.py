"""People: find images where not every person is labelled, and decide them one at a time."""

from __future__ import annotations

import streamlit as st

from db.engine import session_scope, with_retries
from db.models import Image
from ui.auth import allowed, can, refusal, require_user
from ui.common import datasets_or_stop, open_store, store_or_stop
from ui.jobs import job_log, restart_button, show_ending
from ui.models import model_picker
from workbench.cli.people import DETECT_JOB_KIND, detect_argv
from workbench.people.coverage import DEFAULT_THRESHOLDS
from workbench.people.detectors import DETECTOR_NAMES
from workbench.people.queue import (
    QueueError,
    decide,
    next_item,
    queue_counts,
    release_claims,
    review_progress,
    skip,
    undo_last,
)
from workbench.settings import get_settings

st.set_page_config(page_title="People · Fashion ControlNet Workbench", page_icon="👗", layout="wide")
user = require_user()
st.title("People: is every person labelled?")
st.caption("CLI twin: `python -m workbench people detect | list | decide | flag | undo | repair | repairs | "
           "unrepair`.")


# -- actions (button callbacks: they run before the page draws again) ------------------------
def say(kind: str, text: str) -> None:
    """Keep a message for the next draw of the page (UI state only)."""
    st.session_state["people_message"] = (kind, text)


def refused(action: str) -> bool:
    """Whether the signed-in user may not ``action`` (said on the page); callbacks check again,
    since a role can change while the page is open."""
    if can(action):
        return False
    say("error", refusal(action))
    return True


def on_decide(dataset: str, curator: str, flag_id: int, version: int, decision: str, regions: list) -> None:
    if refused("decide"):
        return
    try:
        result = with_retries(open_store(get_settings()), lambda session: decide(
            session, flag_id, curator, decision, regions=regions or None, seen_version=version))
    except QueueError as exc:
        say("error", str(exc))
        return
    if result.outcome == "conflict":
        say("warning", f"{result.item.file_name}: someone decided differently meanwhile; both decisions are "
                       "kept and the image is back in the queue")
    else:
        say("success", f"{result.item.file_name}: {decision} ({result.outcome})")


def on_skip(curator: str, flag_id: int) -> None:
    if refused("decide"):
        return
    item = with_retries(open_store(get_settings()), lambda session: skip(session, flag_id, curator))
    say("info", f"{item.file_name}: skipped (left for someone else)")


def on_undo(dataset: str, curator: str) -> None:
    if refused("decide"):
        return
    try:
        item = with_retries(open_store(get_settings()), lambda session: undo_last(session, dataset, curator))
    except QueueError as exc:
        say("error", str(exc))
        return
    say("info", f"Undone: {item.file_name} is back with you ({item.status})")


def on_start_detection(dataset: str, detector: str, threshold: float, model: str | None = None) -> None:
    from workbench.jobs import start_job

    if refused("run_jobs"):
        return
    settings = get_settings()
    try:
        job_id = start_job(open_store(settings), settings, kind=DETECT_JOB_KIND, dataset=dataset,
                           argv=detect_argv(dataset, detector, threshold, model=model),
                           details={"detector": detector, "model": model}, user=user.name)
    except Exception as exc:  # shown, not raised
        say("error", f"Could not start detection: {type(exc).__name__}: {exc}")
        return
    say("success", f"Detection started as job {job_id}")


# -- load -----------------------------------------------------------------------------------
settings, engine = store_or_stop()
names = datasets_or_stop(engine)

left, right = st.columns(2)
dataset = left.selectbox("Dataset", names, key="people_dataset")
curator = user.name  # every decision is recorded under the signed-in user's name
right.markdown(f"Deciding as **{curator}** ({user.role})")

# -- detection jobs -------------------------------------------------------------------------
from workbench.jobs import ACTIVE, job_summary, list_jobs, refresh_jobs  # noqa: E402


def detection_job_rows() -> list[dict]:
    """The dataset's five latest detection jobs, newest first (dead processes found first)."""
    refresh_jobs(engine)
    with session_scope(engine) as session:
        return [job_summary(j) for j in list_jobs(session, kind=DETECT_JOB_KIND, dataset=dataset)[:5]]


# Open while the latest detection runs or when it stopped, so its progress or its reason is in view.
latest = detection_job_rows()[:1]
with st.expander("Detection", expanded=bool(latest) and latest[0]["status"] != "finished"):
    c1, c2, c3 = st.columns([2, 1, 1])
    detector = c1.selectbox("Detector", DETECTOR_NAMES, index=DETECTOR_NAMES.index("opencv"), key="people_detector",
                            help="opencv and annotations work offline; grounding-dino and torchvision need "
                                 "their weights (hub id / local path / torchvision cache).")
    threshold = c2.number_input("Threshold", 0.0, 1.0, float(DEFAULT_THRESHOLDS[detector]), 0.05,
                                key=f"people_threshold_{detector}")
    detector_model = None
    if detector in ("grounding-dino", "torchvision"):
        detector_model = model_picker(detector, settings, engine, label="Detector model",
                                      key=f"people_model_{detector}", container=c1,
                                      default={"grounding-dino": "grounding-dino-tiny",
                                               "torchvision": "maskrcnn_resnet50_fpn_v2"}[detector])
    c3.button("Start detection", on_click=on_start_detection, args=(dataset, detector, threshold, detector_model),
              key="people_start_detection", disabled=not user.can("run_jobs"))

    @st.fragment(run_every=2)
    def detection_jobs() -> None:
        """Running and recent detection jobs of this dataset, polled every two seconds; the
        latest one's reason, fix and log when it stopped."""
        jobs = detection_job_rows()
        if not jobs:
            st.caption("No detection has run on this dataset yet.")
        for job in jobs:
            argv, done, total = job["argv"], job["done"], job["total"]
            text = f"job {job['id']} · {argv[argv.index('--detector') + 1]} · {job['status']} · {done}/{total or '?'}"
            if job["status"] in ACTIVE:
                st.progress(done / total if total else 0.0, text=text)
            else:
                st.caption(text + (f" · {job['error']}" if job["error"] else ""))
        if jobs and jobs[0]["ending"]:
            newest = jobs[0]
            show_ending(newest, job_log(engine, newest["id"]), f"Detection job {newest['id']} {newest['ending']}")
            restart_button(engine, newest, key=f"people_restart_{newest['id']}")  # the list shows the new job

    detection_jobs()

# -- the queue --------------------------------------------------------------------------------
with session_scope(engine) as session:
    decided, flagged = review_progress(session, dataset)
    counts = queue_counts(session, dataset)
if flagged:
    st.progress(decided / flagged, text=f"{decided} of {flagged} flagged images decided · "
                f"{counts['pending']} pending · {counts['skipped']} skipped · {counts['conflict']} in conflict")
else:
    st.info("Nothing is flagged in this dataset yet: start a detection above, or flag an image from the mask "
            "inspector.")

message = st.session_state.pop("people_message", None)
if message:
    getattr(st, message[0])(message[1])

if not allowed("decide"):
    st.stop()  # viewers see the counts, not the queue: showing it would claim an image

undo_col, leave_col = st.columns([1, 5])
undo_col.button("Undo last", shortcut="U", key="people_undo", on_click=on_undo, args=(dataset, curator),
                help="Take back your last decision or skip (U).")
if leave_col.button("Stop reviewing (free my image)", key="people_release"):
    with session_scope(engine) as session:
        release_claims(session, curator)
    st.session_state["people_paused"] = True
    st.rerun()
if st.session_state.get("people_paused"):
    st.info("Your image is free for someone else.")
    if st.button("Resume reviewing", key="people_resume"):
        st.session_state.pop("people_paused")
        st.rerun()
    st.stop()

try:
    item = with_retries(engine, lambda session: next_item(session, dataset, curator))
except QueueError as exc:
    st.error(str(exc))
    st.stop()
if item is None:
    st.success("Nothing left for you in this queue. Thank you!" if flagged else "The queue is empty.")
    st.stop()

# -- one image -------------------------------------------------------------------------------
from workbench.people.review import review_image, shown_proposals  # noqa: E402  (after the early stops)

st.subheader(f"{item.file_name} · score {item.score:.2f}")
st.caption(f"Source: {item.source} · detector scores: "
           + ", ".join(f"{k} {v:.2f}" for k, v in sorted(item.scores.items()))
           + (f" · repaired ({item.repairs} repair{'s' if item.repairs > 1 else ''})" if item.repairs else ""))
if item.conflict:
    lines = [f"- {h['curator']}: **{h['decision']}** ({h['outcome']}, {h['at']:%H:%M:%S})"
             for h in item.history if h["action"] == "decide" and not h["undone"]]
    st.warning("Curators disagreed on this image; decide it again:\n" + "\n".join(lines))
if item.note:
    st.caption("Notes: " + item.note.replace("\n", " · "))

with session_scope(engine) as session:
    proposals = shown_proposals(session, item.image_id)
candidates = [p for p in proposals if p.kind != "labelled"]
by_label = {p.label: p for p in candidates}
default = [p.label for p in candidates if p.unlabelled_score >= 0.5][:3]
photo_col, act_col = st.columns([3, 2])
with act_col:
    chosen = st.multiselect("Regions to mask (for Mark region)", list(by_label), default=default,
                            key=f"people_regions_{item.flag_id}_{item.version}",
                            help="Proposals whose box marks the unlabelled person.")
    extra = st.text_input("More regions: x,y,w,h; x,y,w,h", key=f"people_extra_{item.flag_id}_{item.version}")
    regions = [list(by_label[c].box) for c in chosen]
    bad = None
    for part in [p for p in extra.split(";") if p.strip()]:
        try:
            values = [float(v) for v in part.split(",")]
            assert len(values) == 4 and values[2] > 0 and values[3] > 0
            regions.append(values)
        except (ValueError, AssertionError):
            bad = part
    if bad:
        st.error(f"Region {bad.strip()!r} must be x,y,w,h with a positive width and height.")

    args = (dataset, curator, item.flag_id, item.version)
    st.button("All people labelled", shortcut="A", type="primary", key="people_ok", on_click=on_decide,
              args=(*args, "ok", []), width="stretch")
    st.button("Exclude the image", shortcut="X", key="people_exclude", on_click=on_decide,
              args=(*args, "exclude", []), width="stretch")
    st.button("Keep, mask the region(s)", shortcut="M", key="people_mask", on_click=on_decide,
              args=(*args, "mask-region", regions), disabled=not regions or bool(bad), width="stretch",
              help="Select at least one region above.")
    st.button("Not sure: skip", shortcut="S", key="people_skip", on_click=on_skip, args=(curator, item.flag_id),
              width="stretch")
    st.caption("Keys: **A** all labelled · **X** exclude · **M** mask region · **S** skip · **U** undo")
    if proposals:
        st.dataframe([{"proposal": p.label} for p in proposals], hide_index=True)

with photo_col:
    show_masks = st.toggle("Garment masks", value=True, key="people_show_masks")
    try:
        with session_scope(engine) as session:
            picture = review_image(session, item.image_id, proposals, regions=regions, masks=show_masks)
        st.image(picture, caption="Red: probably unlabelled · amber: unsure · green: labelled people "
                                  "(% = garment coverage)")
    except Exception as exc:  # a broken mask must not hide the decision buttons
        st.error(f"Cannot draw {item.file_name}: {type(exc).__name__}: {exc}")

from ui.repair import repair_panel  # noqa: E402

with st.expander("Repair instead: erase the unlabelled person, or label them", expanded=bool(item.repairs)):
    with session_scope(engine) as session:
        shape = session.get(Image, item.image_id)
        width, height = shape.width, shape.height
    repair_panel(engine, settings, dataset, curator, item.image_id, item.file_name, width, height,
                 candidates[0].box if candidates else None)
