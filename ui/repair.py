"""The People page's repair panel: a box around the unlabelled person, erase or label, preview, save, remove.

The box is four number inputs (no canvas), filled from the best proposal and from the "Use detector
proposal" button; the preview (the erased photo, or the new masks over the photo) is UI state until
"Save repair" stores exactly what was shown through :mod:`workbench.repair`.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
from sqlalchemy import Engine

from db.engine import session_scope
from ui.auth import can, refusal
from ui.models import model_picker
from workbench.models import TINY_LABEL
from workbench.repair import (
    ERASE_METHODS,
    LABEL_SOURCES,
    InpaintSettings,
    RepairError,
    dataset_categories,
    image_photo,
    list_repairs,
    preview_erase,
    preview_label,
    preview_picture,
    propose_box,
    remove_repair,
    save_erase,
    save_label,
)
from workbench.settings import Settings

PREVIEW = "repair_preview"
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


def _on_preview(engine: Engine, dataset: str, file_name: str, image_id: int, request: dict[str, Any]) -> None:
    box = _box(image_id)
    try:
        with session_scope(engine) as session:
            if request["action"] == "erase":
                edited = preview_erase(session, dataset, file_name, box, request["method"], model=request["model"],
                                       settings=request["inpaint"])
                result: dict[str, Any] = {"edited": edited, "picture": preview_picture(edited, box=box)}
            else:
                segments = preview_label(session, dataset, file_name, box, request["source"],
                                         category=request["category"], model=request["model"])
                photo = image_photo(session, dataset, file_name)
                result = {"segments": segments, "picture": preview_picture(photo, segments, box)}
    except RepairError as exc:
        _say("error", str(exc))
        return
    st.session_state[PREVIEW] = {"image_id": image_id, "box": box, **request, **result}


def _on_save(engine: Engine, settings: Settings, dataset: str, file_name: str, curator: str) -> None:
    shown = st.session_state.pop(PREVIEW, None)
    if shown is None:
        return
    if not can("decide"):  # checked again: a role can change while the page is open
        _say("error", refusal("decide"))
        return
    try:
        with session_scope(engine) as session:
            if shown["action"] == "erase":
                options = shown["inpaint"].model_dump() if shown["method"] == "inpaint" else {}
                info = save_erase(session, settings, dataset, file_name, shown["box"], shown["method"], curator,
                                  shown["edited"], model=shown["model"], options=options)
            else:
                info = save_label(session, dataset, file_name, shown["box"], shown["source"], curator,
                                  shown["segments"], model=shown["model"])
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
    request: dict[str, Any] = {"action": action, "model": None, "method": None, "source": None, "category": None,
                               "inpaint": None}
    if action == "erase":
        request["method"] = st.selectbox("Method", ERASE_METHODS, key="repair_method",
                                         help="fill: OpenCV, no model; inpaint: a diffusers inpainting model.")
        if request["method"] == "inpaint":
            request["model"] = model_picker("inpaint", settings, engine, label="Inpainting model",
                                            key="repair_inpaint_model", default="sd15-inpaint")
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
            kind, default = ("sam", "sam-vit-base") if request["source"] == "sam" else ("segmenter", "u2net-cloth-seg")
            request["model"] = model_picker(kind, settings, engine, label="Model", key=f"repair_{kind}_model",
                                            default=default)
    preview_col, save_col = st.columns(2)
    preview_col.button("Preview", key="repair_preview_button", on_click=_on_preview,
                       args=(engine, dataset, file_name, image_id, request))
    shown = st.session_state.get(PREVIEW)
    current = shown is not None and shown["image_id"] == image_id and shown["box"] == _box(image_id)
    save_col.button("Save repair", key="repair_save", type="primary", disabled=not current, on_click=_on_save,
                    args=(engine, settings, dataset, file_name, curator), help="Preview first.")
    if current:
        what = "erased" if shown["action"] == "erase" else ", ".join(s.category for s in shown["segments"])
        st.image(shown["picture"], caption=f"Preview: {what}")
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
