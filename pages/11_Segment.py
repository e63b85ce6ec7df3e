"""Segment: train a SegFormer cloth segmenter, predict masks for a dataset, watch both as jobs."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from db.engine import session_scope
from ui.auth import allowed, require_user
from ui.common import datasets_or_stop, store_or_stop
from ui.jobs import page_job, watch_job
from ui.models import model_picker

st.set_page_config(page_title="Segment · Fashion ControlNet Workbench", page_icon="👗", layout="wide")
user = require_user()
st.title("Cloth segmenter")
st.caption("Training and prediction run as background jobs; the CLI twins are "
           "`python -m workbench segment train --config F --background` and `segment predict ... --background`.")

# -- load -------------------------------------------------------------------------------------
settings, engine = store_or_stop()
names = datasets_or_stop(engine)

from train.config import ConfigError  # noqa: E402
from train.segmenter import SegmenterConfig  # noqa: E402
from workbench.datasets import get_dataset  # noqa: E402
from workbench.guard import check_server_model, check_server_path  # noqa: E402
from workbench.schemes import list_schemes  # noqa: E402
from workbench.segment.jobs import PREDICT_KIND, TRAIN_KIND, start_prediction_job, start_training_job  # noqa: E402
from workbench.segment.loaders import trains_from  # noqa: E402
from workbench.segment.store import list_sources, prediction_counts, source_label  # noqa: E402
from workbench.training import read_metrics  # noqa: E402

with session_scope(engine) as session:
    schemes = [s.name for s in list_schemes(session)]
dataset = st.selectbox("Dataset", names, key="segment_dataset")
train_tab, predict_tab = st.tabs(["Train", "Predict"])

# -- train ------------------------------------------------------------------------------------
with train_tab:
    c1, c2 = st.columns(2)
    scheme = c1.selectbox("Scheme", schemes, index=schemes.index("cloth-seg") if "cloth-seg" in schemes else 0,
                          key="segment_scheme")
    base = model_picker("segmenter", settings, engine, label="SegFormer to start from", key="segment_base",
                        container=c2, default="segformer-clothes", only=trains_from,
                        other_label="Or a SegFormer hub id (e.g. nvidia/mit-b2, an ImageNet encoder) or folder",
                        help="Its classification head is replaced by one with the scheme's classes.")
    output_dir = st.text_input("Output folder", key="segment_out",
                               value=str(Path(settings.data_dir) / "segment" / f"{dataset}-{scheme}"))
    c3, c4, c5, c6 = st.columns(4)
    resolution = c3.number_input("Resolution", 64, 2048, 512, step=32, key="segment_resolution")
    batch = c4.number_input("Batch size", 1, 256, 8, key="segment_batch")
    steps = c5.number_input("Max steps", 1, 1_000_000, 2000, key="segment_steps")
    weights = c6.selectbox("Class weights", ["none", "inverse-frequency"], key="segment_weights")
    if st.button("Start training", key="segment_train", disabled=not allowed("train")) and user.can("train"):
        try:
            check_server_model(base, settings, "SegFormer")
            check_server_path(output_dir.strip(), settings, "output folder")
            config = SegmenterConfig(pretrained_model_name_or_path=base, dataset=dataset, scheme=scheme,
                                     db_url=settings.database_url, output_dir=Path(output_dir),
                                     resolution=int(resolution), train_batch_size=int(batch),
                                     max_train_steps=int(steps), class_weights=weights)
            path = config.to_file(Path(output_dir) / "segmenter.yaml")
            st.session_state["segment_train_job"] = start_training_job(engine, settings, path)
        except (ConfigError, ValueError, OSError) as exc:
            st.error(f"Cannot start training: {exc}")
    job_id = page_job(engine, "segment_train_job", TRAIN_KIND, dataset)
    if job_id is not None:
        job = watch_job(engine, job_id, label="Segmenter training job", unit="steps", cancellable=True,
                        finished=lambda j: f"Segmenter saved in {j['details'].get('output_dir', '?')}")
        records = [r for r in read_metrics(Path(job["details"].get("metrics_path", ""))) if "val_miou" in r]
        if records:
            st.line_chart({"validation mIoU": {r["step"]: r["val_miou"] for r in records}})
            st.dataframe([{"step": r["step"], "mIoU": r["val_miou"], **r["val_iou"]} for r in records],
                         key="segment_iou_table")

# -- predict ------------------------------------------------------------------------------------
with predict_tab:
    model = model_picker("segmenter", settings, engine, label="Segmenter", key="segment_model",
                         other_label="Or a SegFormer folder (a training run's output folder), hub id or "
                                     "u2net-cloth:PATH instead")
    c1, c2, c3 = st.columns(3)
    predict_scheme = c1.selectbox("Store masks in scheme", ["(the model's)"] + schemes, key="segment_predict_scheme")
    split = c2.text_input("Only split (empty: all)", key="segment_split")
    without = c3.checkbox("Only images without real masks", value=True, key="segment_without")
    if st.button("Start prediction", key="segment_predict",
                 disabled=model is None or not allowed("run_jobs")) and user.can("run_jobs"):
        st.session_state["segment_predict_job"] = start_prediction_job(
            engine, settings, model, dataset=dataset, split=split or None, without_masks=without,
            scheme=None if predict_scheme == "(the model's)" else predict_scheme)
    job_id = page_job(engine, "segment_predict_job", PREDICT_KIND, dataset)
    if job_id is not None:
        watch_job(engine, job_id, label="Prediction job", unit="images", cancellable=True,
                  finished=lambda j: "Predicted masks stored beside the real ones (Inspect shows them)")
    with session_scope(engine) as session:
        found = get_dataset(session, dataset)
        counts = prediction_counts(session, found.id)
        sources = [{"id": s.id, "source": source_label(s), "images": counts.get(s.id, 0)}
                   for s in list_sources(session, found.id)]
    st.subheader("Predicted masks of this dataset")
    if sources:
        st.dataframe(sources, key="segment_sources")
    else:
        st.info("No predicted masks yet.")
