"""The People page's repair panel: a box around the unlabelled person, erase or label, preview, save, remove.

The box is four number inputs (no canvas), filled from the best proposal and from the "Use detector
proposal" button. An instant preview (erase with ``fill``, label ``manual``) is made in the click; one
that loads a model (``inpaint``, ``sam``, ``cloth-segmenter``) runs as a background job that writes the
preview into a folder (:mod:`workbench.repair_preview`), watched here with its progress and a Cancel
button, and read back when it has finished. The preview (the erased photo, or the new masks over the
photo) is UI state until "Save repair" stores exactly what was shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st
from PIL import Image as PILImage
from sqlalchemy import Engine

from db.engine import session_scope
from ui.auth import can, refusal
from ui.jobs import job_now, watch_job
from ui.models import model_picker
from workbench.models import TINY_LABEL
from workbench.repair import (
    DEFAULT_CLOTH,
    DEFAULT_INPAINT,
    DEFAULT_SAM,
    ERASE_METHODS,
    LABEL_SOURCES,
    InpaintSettings,
    RepairError,
    check_repair,
    dataset_categories,
    list_repairs,
    propose_box,
    remove_repair,
)
from workbench.repair_preview import (
    PREVIEW_JOB_KIND,
    Preview,
    PreviewRequest,
    make_preview,
    new_preview_folder,
    preview_argv,
    read_preview,
    save_preview,
)
from workbench.settings import Settings

PREVIEW = "repair_preview"  # the preview shown: image id, box, the Preview and its picture
PREVIEW_JOB = "repair_preview_job"  # the preview job under way: its id, image id and folder
CORNERS = ("x0", "y0", "x1", "y1")
NAMED_BY_SEGMENTER = "(the segmenter names each garment)"


def _say(kind: str, text: str) -> None:
    st.session_state["people_message"] = (kind, text)  # the page shows it on its next draw


def _box(image_id: int) -> tuple[int, int, int, int]:
    return tuple(int(st.session_state[f"repair_{c}_{image_id}"]) for c in CORNERS)  # type: ignore[return-value]


def _on_proposal(engine: Engine, dataset: str, file_name: str, image_id: int) -> None:
    with session_scope(engine) as session:
        proposed = propose_box(session, dataset, file_name)
    if proposed is None:
        _say("warning", f"No detector proposes an unlabelled person in {file_name}; enter the box by hand.")
        return
    for corner, value in zip(CORNERS, proposed[0]):
        st.session_state[f"repair_{corner}_{image_id}"] = int(value)
    _say("info", f"Box from the {proposed[1]}.")


def _show(image_id: int, preview: Preview, picture: PILImage.Image) -> None:
    st.session_state[PREVIEW] = {"image_id": image_id, "box": preview.request.box, "preview": preview,
                                 "picture": picture}


def _on_preview(engine: Engine, settings: Settings, dataset: str, file_name: str, image_id: int,
                fields: dict[str, Any], curator: str) -> None:
    from workbench.jobs import cancel_job, start_job

    st.session_state.pop(PREVIEW, None)
    if (earlier := st.session_state.pop(PREVIEW_JOB, None)) is not None:
        cancel_job(engine, earlier["job_id"], wait=False)  # its preview would no longer be shown
    try:
        request = PreviewRequest(dataset=dataset, image=file_name, box=_box(image_id), **fields)
        with session_scope(engine) as session:
            if request.needs_job:  # a bad box or category is said now, not by a job
                check_repair(session, dataset, file_name, request.box, request.action, method=request.method,
                             source=request.source, category=request.category)
            else:
                preview = make_preview(session, request)
                picture = preview.shown(session)
    except RepairError as exc:
        _say("error", str(exc))
        return
    if not request.needs_job:
        _show(image_id, preview, picture)
        return
    if not can("run_jobs"):
        _say("error", refusal("run_jobs"))
        return
    folder = new_preview_folder(settings)
    job_id = start_job(engine, settings, kind=PREVIEW_JOB_KIND, argv=preview_argv(request, folder), dataset=dataset,
                       details={"preview": str(folder), "image": file_name}, user=curator)
    st.session_state[PREVIEW_JOB] = {"job_id": job_id, "image_id": image_id, "folder": str(folder)}


def _follow_preview_job(engine: Engine, pending: dict[str, Any]) -> None:
    """The preview job's progress (and Cancel) while it runs, its reason when it stopped; once it
    has finished, its preview read back and shown."""
    job_id = pending["job_id"]
    if job_now(engine, job_id)["status"] != "finished":
        watch_job(engine, job_id, label="Preview job", cancellable=True,
                  failed=lambda job, log: f"Preview job {job_id} {job['ending']}. Nothing was saved.")
        return
    st.session_state.pop(PREVIEW_JOB, None)
    try:
        preview = read_preview(Path(pending["folder"]))
        with session_scope(engine) as session:
            picture = preview.shown(session)
    except RepairError as exc:
        st.error(str(exc))
        return
    _show(pending["image_id"], preview, picture)


def _on_save(engine: Engine, settings: Settings, dataset: str, file_name: str, curator: str) -> None:
    shown = st.session_state.pop(PREVIEW, None)
    if shown is None:
        return
    if not can("decide"):  # checked again: a role can change while the page is open
        _say("error", refusal("decide"))
        return
    try:
        with session_scope(engine) as session:
            info = save_preview(session, settings, shown["preview"], curator)
    except RepairError as exc:
        _say("error", str(exc))
        return
    _say("success", f"{file_name}: repair #{info.id} saved ({info.action}, {info.source}). Decide the image too: "
                    "an export uses the repair only with repaired=include.")


def _on_remove(engine: Engine, dataset: str, repair_id: int, curator: str) -> None:
    if not can("decide"):
        _say("error", refusal("decide"))
        return
    try:
        with session_scope(engine) as session:
            info = remove_repair(session, repair_id, curator, dataset)
    except RepairError as exc:
        _say("error", str(exc))
        return
    _say("info", f"Repair #{info.id} of {info.file_name} removed.")


def repair_panel(engine: Engine, settings: Settings, dataset: str, curator: str, image_id: int, file_name: str,
                 width: int, height: int, box: list[float] | None) -> None:
    """Erase or label the unlabelled person of one image; ``box`` (x, y, w, h) fills the box at first."""
    start = [round(box[0]), round(box[1]), round(box[0] + box[2]), round(box[1] + box[3])] if box else \
        [0, 0, width, height]
    cols = st.columns(4)
    for col, corner, value, most in zip(cols, CORNERS, start, (width, height, width, height)):
        col.number_input(corner, 0, most, int(min(max(value, 0), most)), 1, key=f"repair_{corner}_{image_id}")
    st.button("Use detector proposal", key="repair_proposal", on_click=_on_proposal,
              args=(engine, dataset, file_name, image_id), help="The best stored proposal, or the annotations "
                                                               "detector's now.")
    action = st.radio("Repair", ["erase", "label"], horizontal=True, key="repair_action",
                      format_func={"erase": "Erase the person", "label": "Label the person"}.get)
    request: dict[str, Any] = {"action": action}
    if action == "erase":
        request["method"] = st.selectbox("Method", ERASE_METHODS, key="repair_method",
                                         help="fill: OpenCV, no model; inpaint: a diffusers inpainting model.")
        if request["method"] == "inpaint":
            request["model"] = model_picker("inpaint", settings, engine, label="Inpainting model",
                                            key="repair_inpaint_model", default=DEFAULT_INPAINT)
            prompt = st.text_input("Paint there", InpaintSettings().prompt, key="repair_prompt")
            steps = st.number_input("Steps", 1, 200, InpaintSettings().steps, key="repair_steps")
            request["inpaint"] = InpaintSettings(prompt=prompt, steps=int(steps))
    else:
        request["source"] = st.selectbox("Segmenter", LABEL_SOURCES, key="repair_source",
                                         help="sam: Segment Anything with the box; cloth-segmenter: garments "
                                              "with their classes; manual: the box itself.")
        with session_scope(engine) as session:
            categories = dataset_categories(session, dataset)
        options = [NAMED_BY_SEGMENTER, *categories] if request["source"] == "cloth-segmenter" else categories
        chosen = st.selectbox("Garment category", options, index=None, key="repair_category",
                              placeholder="Pick the garment of this segment")
        request["category"] = None if chosen in (None, NAMED_BY_SEGMENTER) else chosen
        if request["source"] != "manual":
            kind, default = ("sam", DEFAULT_SAM) if request["source"] == "sam" else ("segmenter", DEFAULT_CLOTH)
            request["model"] = model_picker(kind, settings, engine, label="Model", key=f"repair_{kind}_model",
                                            default=default)
    preview_col, save_col = st.columns(2)
    preview_col.button("Preview", key="repair_preview_button", on_click=_on_preview,
                       args=(engine, settings, dataset, file_name, image_id, request, curator),
                       help="inpaint, sam and the cloth segmenter run as a background job (progress below).")
    pending = st.session_state.get(PREVIEW_JOB)
    if pending is not None and pending["image_id"] == image_id:
        _follow_preview_job(engine, pending)
    shown = st.session_state.get(PREVIEW)
    current = shown is not None and shown["image_id"] == image_id and shown["box"] == _box(image_id)
    save_col.button("Save repair", key="repair_save", type="primary", disabled=not current, on_click=_on_save,
                    args=(engine, settings, dataset, file_name, curator), help="Preview first.")
    if current:
        st.image(shown["picture"], caption=f"Preview: {shown['preview'].summary()}")
    with session_scope(engine) as session:
        repairs = list_repairs(session, dataset, file_name)
    for info in repairs:
        text_col, remove_col = st.columns([4, 1])
        masks = ", ".join(m["category"] for m in info.masks)
        text_col.caption(f"#{info.id} {info.action} · {info.source} · {info.curator} · box "
                         f"{','.join(map(str, info.box))}" + (f" · {masks}" if masks else "")
                         + (f" · {TINY_LABEL}" if info.random_weights else ""))
        remove_col.button("Remove", key=f"repair_remove_{info.id}", on_click=_on_remove,
                          args=(engine, dataset, info.id, curator))
