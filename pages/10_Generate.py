"""Generate: try trained ControlNets on a mask (a dataset image's, an upload, edited), optionally with a pose."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from pydantic import ValidationError

from db.engine import session_scope
from ui.auth import allowed, require_user
from ui.common import store_or_stop
from ui.jobs import page_job, watch_job
from ui.models import model_picker

st.set_page_config(page_title="Generate · Fashion ControlNet Workbench", page_icon="👗", layout="wide")
user = require_user()
st.title("Generate")
st.caption("Generation runs as a background job (`python -m workbench generate run ...`); every image is "
           "saved with its provenance: base model, checkpoint, export manifest, seed and settings.")

# -- load -------------------------------------------------------------------------------------
settings, engine = store_or_stop()

from workbench import generate as gen  # noqa: E402
from workbench.cli.generate import KIND as GENERATE_KIND  # noqa: E402
from workbench.jobs import start_job  # noqa: E402
from workbench.mask_edit import SHAPES  # noqa: E402
from workbench.models import TINY_LABEL, registry  # noqa: E402

with session_scope(engine) as session:
    trained = gen.trained_controlnets(session)
    registry_names = {spec.name for spec in registry(session, settings)}
by_path = {str(info.path): info for info in trained}

# -- ControlNets and base model ---------------------------------------------------------------
left, right = st.columns(2)
newest_final = [p for p, i in by_path.items() if i.step is None][:1]  # jobs come newest first
picked = left.multiselect("ControlNet checkpoints (several: side by side)", list(by_path),
                          default=newest_final or list(by_path)[-1:], format_func=lambda p: by_path[p].label,
                          key="gen_controlnets",
                          help="The checkpoints and final ControlNets of the training jobs.")
registered = model_picker("controlnet", settings, engine, label="ControlNet from the Models registry",
                          key="gen_controlnet_path", other_label="Or a ControlNet folder", container=left,
                          none="(none: the checkpoints above)" if by_path else None,
                          help="Trained here, downloaded, added on the Models page, or the tiny test model.")
infos = [by_path[p] for p in picked]
if registered:
    try:
        infos.append(gen.resolve_controlnet(registered))
    except gen.GenerateError as exc:
        st.error(str(exc))
if not infos:
    st.info("No ControlNet yet: train one on the **Train** page, pick one from the registry (the **Models** page "
            "makes tiny test models), or type the path of a ControlNet folder.")
    st.stop()
info = infos[0]
trained_base = info.base_model or ""
if st.session_state.get("gen_base_for") != str(info.path):  # a new ControlNet: the base it was trained on
    st.session_state["gen_base"] = "" if trained_base in registry_names else trained_base
    st.session_state["gen_base_for"] = str(info.path)
base_model = model_picker("sd", settings, engine, label="Base model", key="gen_base", container=right,
                          default=trained_base if trained_base in registry_names else "sd15",
                          other_label="Base model: or a hub id, diffusers folder or .safetensors")
right.caption(f"Trained on **{info.scheme or 'an unknown scheme'}** masks, {info.conditioning} control input "
              f"({info.channels} channels)" + (f", export {info.export_dir}" if info.export_dir else ""))

# -- the mask -----------------------------------------------------------------------------------
kinds = {"dataset": "A dataset image", "file": "Upload a mask", "photo": "Upload a photo"}
kind = st.radio("Mask", list(kinds), format_func=kinds.get, horizontal=True, key="gen_mask_kind")
source: dict = {"kind": kind}
default_prompt = ""
if kind == "dataset":
    images = gen.export_images(info)
    if not images:
        st.info("This ControlNet names no training export: upload a mask in its scheme instead.")
        st.stop()
    labels = {i["image_id"]: f"{i['file_name']} ({i['split']})" for i in images}
    image_id = st.selectbox("Image of the training export", list(labels), format_func=labels.get, key="gen_image",
                            index=next((n for n, i in enumerate(images) if i["split"] == "validation"), 0))
    source["image_id"] = image_id
    default_prompt = next(i["prompt"] for i in images if i["image_id"] == image_id)
else:
    upload = st.file_uploader("Mask PNG (class ids, or the scheme's colours)" if kind == "file" else "Photo",
                              type=["png", "jpg", "jpeg", "webp"], key=f"gen_upload_{kind}")
    if upload is None:
        st.stop()
    source["path"] = str(gen.save_upload(Path(settings.data_dir), upload.name, upload.getvalue()))
    if kind == "photo":
        source["segmenter"] = model_picker("segmenter", settings, engine, label="Cloth segmenter (the photo's mask)",
                                           key="gen_segmenter", default="u2net-cloth-seg",
                                           other_label="Cloth segmenter: or a SegFormer folder, hub id or .onnx file")
    if kind == "file":
        photo = st.file_uploader("Its photo (for the pose, optional)", type=["png", "jpg", "jpeg", "webp"],
                                 key="gen_upload_pose_photo")
        if photo is not None:
            source["photo"] = str(gen.save_upload(Path(settings.data_dir), photo.name, photo.getvalue()))

edits = st.session_state.setdefault("gen_edits", [])
with st.expander(f"Edit the mask ({len(edits)} edits)"):
    classes = {int(v): name for v, name in (info.legend or {str(v): str(v) for v in range(256)}).items()}
    e1, e2, e3 = st.columns(3)
    op = e1.radio("Edit", ["swap", "erase", "paint"], key="gen_edit_op")
    if op == "swap":
        old = e2.selectbox("Class", list(classes), format_func=lambda v: f"{v} {classes[v]}", key="gen_edit_from")
        new = e3.selectbox("becomes", list(classes), format_func=lambda v: f"{v} {classes[v]}", key="gen_edit_to")
        edit = {"op": "swap", "from": old, "to": new}
    else:
        shape = e2.radio("Shape", SHAPES, key="gen_edit_shape")
        xs = e3.slider("Left / right (fraction of the width)", 0.0, 1.0, (0.25, 0.75), key="gen_edit_x")
        ys = e3.slider("Top / bottom (fraction of the height)", 0.0, 1.0, (0.25, 0.75), key="gen_edit_y")
        edit = {"op": op, "shape": shape, "box": [xs[0], ys[0], xs[1], ys[1]]}
        if op == "paint":
            edit["value"] = e2.selectbox("Class", list(classes), format_func=lambda v: f"{v} {classes[v]}",
                                         key="gen_edit_value")
    b1, b2 = st.columns(2)
    if b1.button("Add this edit", key="gen_edit_add"):
        edits.append(edit)
        st.rerun()
    if edits and b2.button("Clear the edits", key="gen_edit_clear"):
        edits.clear()
        st.rerun()
    if edits:
        st.json(edits, expanded=False)
source["edits"] = list(edits)

# -- settings -------------------------------------------------------------------------------------
prompt_for = (info.export_dir and str(info.export_dir), source.get("image_id"))
if st.session_state.get("gen_prompt_for") != prompt_for:  # a new image: its training prompt
    st.session_state["gen_prompt"] = default_prompt
    st.session_state["gen_prompt_for"] = prompt_for
prompt = st.text_area("Prompt", key="gen_prompt", help="Pre-filled with the image's training prompt.")
negative = st.text_input("Negative prompt", key="gen_negative")
c1, c2, c3, c4, c5, c6 = st.columns(6)
seeds_text = c1.text_input("Seeds", value="0", key="gen_seeds", help="e.g. 1, 2, 10-12")
steps = c2.number_input("Steps", min_value=1, max_value=200, value=20, key="gen_steps")
guidance = c3.number_input("Guidance", min_value=0.0, max_value=30.0, value=7.5, step=0.5, key="gen_guidance")
scale = c4.number_input("Conditioning scale", min_value=0.0, max_value=2.0, value=1.0, step=0.1, key="gen_scale")
scheduler = c5.selectbox("Scheduler", list(gen.SCHEDULER_LABELS), format_func=gen.SCHEDULER_LABELS.get,
                         key="gen_scheduler")
resolution = c6.number_input("Resolution", min_value=64, max_value=2048, step=8,
                             value=int(info.resolution or 512), key="gen_resolution")
with st.expander("Pose control (OpenPose)"):
    use_pose = st.checkbox("Add a pose ControlNet beside the mask's", key="gen_pose_on")
    pose_detector = model_picker("openpose", settings, engine, label="OpenPose annotator", key="gen_pose_detector",
                                 default="openpose", other_label="OpenPose annotator: or a hub id or folder")
    pose_controlnet = model_picker("controlnet", settings, engine, label="Pose ControlNet",
                                   key="gen_pose_controlnet", default="controlnet-openpose",
                                   other_label="Pose ControlNet: or a hub id or folder")
    pose_scale = st.number_input("Pose conditioning scale", 0.0, 2.0, 1.0, 0.1, key="gen_pose_scale")

# -- preview and act ------------------------------------------------------------------------------
try:
    with session_scope(engine) as session:
        mask = gen.conditioning_mask(session, info, gen.MaskSource(**source), int(resolution))
    st.image(mask.colourised(), caption=f"Conditioning mask ({mask.scheme or 'scheme unknown'}, "
                                        f"{int(resolution)} px)", width=256)
except (gen.GenerateError, ValidationError) as exc:
    st.error(str(exc))
    st.stop()

if st.button("Generate", type="primary", key="gen_start", disabled=not allowed("run_jobs")) and user.can("run_jobs"):
    try:
        request = gen.GenerateRequest(
            base_model=(base_model or "").strip(), controlnets=[str(i.path) for i in infos], mask=source,
            prompt=prompt,
            negative_prompt=negative, seeds=gen.parse_seeds(seeds_text), steps=int(steps), guidance=float(guidance),
            conditioning_scale=float(scale), scheduler=scheduler, resolution=int(resolution),
            pose={"detector": pose_detector, "controlnet": pose_controlnet, "scale": float(pose_scale)}
            if use_pose else None)
    except gen.GenerateError as exc:
        st.error(str(exc))
    except ValidationError as exc:
        st.error("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    else:
        st.session_state["gen_job"] = start_job(engine, settings, kind=GENERATE_KIND, argv=gen.generate_argv(request),
                                                details={"images": len(infos) * len(request.seeds)}, user=user.name)

# -- the job and its images ---------------------------------------------------------------------------
job_id = page_job(engine, "gen_job", GENERATE_KIND)  # started here, or before a reload, or in another tab
if job_id is not None:
    watch_job(engine, job_id, label="Generation job", unit="images", cancellable=True,
              finished=lambda job: f"Generated {job['done']} images")
with session_scope(engine) as session:
    rows = gen.list_generations(session, job_id=job_id, limit=24 if job_id is None else 200)
    shown = [gen.provenance(r) for r in rows]
if not shown:
    st.stop()
st.subheader("Results" if job_id is not None else "Latest images")
if any(r["random_weights"] for r in shown):
    st.warning(f"Images marked 🎲 come from a {TINY_LABEL}: they are noise, made to try the pipeline.", icon="🎲")
columns = st.columns(4)
for n, row in enumerate(shown):
    columns[n % 4].image(row["path"], caption=gen.result_caption(row))

st.subheader("Side by side across checkpoints")
anchor = st.selectbox("Same mask, prompt and seed as", [r["id"] for r in shown], key="gen_compare",
                      format_func=lambda i: next(f"#{r['id']} · seed {r['seed']} · {r['prompt'][:60]}"
                                                 for r in shown if r["id"] == i))
with session_scope(engine) as session:
    lined_up = [gen.provenance(r) for r in gen.side_by_side(session, anchor)]
columns = st.columns(len(lined_up) + 1)
columns[0].image(lined_up[0]["mask_path"], caption="mask")
for column, row in zip(columns[1:], lined_up):
    step = row["checkpoint_step"] if row["checkpoint_step"] is not None else "final"
    column.image(row["path"], caption=f"step {step} · #{row['id']}" + (" · 🎲" if row["random_weights"] else ""))
with st.expander("Provenance"):
    chosen = next(r for r in shown if r["id"] == anchor)
    if chosen["random_weights"]:
        st.warning(f"#{anchor}: {TINY_LABEL}", icon="🎲")
    st.json(chosen, expanded=True)
