"""Train: pick an export and a base model, start a background training job, watch it live."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from db.engine import session_scope
from ui.common import store_or_stop
from ui.models import model_picker
from workbench.models import TINY_LABEL

st.set_page_config(page_title="Train · Fashion ControlNet Workbench", page_icon="👗", layout="wide")
st.title("Train a ControlNet")
st.caption("Training runs as a background job (`python -m workbench train start --config F`); "
           "this page starts it and watches its metrics, checkpoints and validation images.")

# -- load -------------------------------------------------------------------------------------
settings, engine = store_or_stop()

from train.config import ConfigError  # noqa: E402
from workbench.jobs import (  # noqa: E402
    ACTIVE, JobError, cancel_job, get_job, list_jobs, read_log_tail, refresh_jobs, resume_job, start_job,
)
from workbench import training  # noqa: E402

try:
    from workbench.export import list_exports

    with session_scope(engine) as session:
        exports = [e for e in list_exports(session) if e.status == "finished"]
except Exception:  # no export module or table yet: a typed path still works
    exports = []

from train.suggest import suggest_settings  # noqa: E402


@st.cache_resource(show_spinner=False)
def _gpu_memory() -> float:
    from train.suggest import detect_gpu_memory_gib

    return float(round(detect_gpu_memory_gib(), 1))


# -- a new run ----------------------------------------------------------------------------------
with st.expander("New training run", expanded=not exports or "train_job" not in st.session_state):
    OTHER = "Other folder…"
    choices = [e.out_dir for e in exports] + [OTHER]
    labels = {e.out_dir: f"#{e.id} {e.dataset} · {e.format} · {e.images} images · {e.out_dir}" for e in exports}
    picked = st.selectbox("Export folder", choices, format_func=lambda c: labels.get(c, c), key="train_export")
    export_dir = st.text_input("Export folder path", key="train_export_path") if picked == OTHER else picked
    base_model = model_picker("sd", settings, engine, label="Base model", key="train_base", default="sd15",
                              other_label="Base model (hub id or diffusers folder)",
                              help="From the model registry (Models page); weights are not downloaded here unless "
                                   "the hub is reachable.") or ""
    run_name = Path(export_dir).name if export_dir else "run"
    output_dir = st.text_input("Output folder", value=str(Path(settings.data_dir) / "train" / run_name),
                               key="train_out")

    st.markdown("**Suggested settings** — ControlNets converge suddenly (about 3k-7k steps at batch 4); "
                "a larger effective batch through gradient accumulation (up to about 256) beats more steps.")
    s1, s2 = st.columns(2)
    default_memory = _gpu_memory()
    gpu_memory = s1.number_input("GPU memory (GiB)", min_value=0.0, max_value=200.0, value=default_memory,
                                 step=1.0, key="train_gpu_memory")
    target = s2.number_input("Target effective batch", min_value=1, max_value=256, value=64, key="train_target")
    suggestion = suggest_settings(gpu_memory, int(target))
    st.caption(suggestion.note)

    c1, c2, c3, c4 = st.columns(4)
    resolution = c1.number_input("Resolution", min_value=64, max_value=1024, step=64,
                                 value=training.export_resolution(Path(export_dir)) or 512 if export_dir else 512,
                                 key="train_resolution")
    batch = c2.number_input("Batch size", min_value=1, max_value=64, value=suggestion.train_batch_size,
                            key="train_batch")
    accumulation = c3.number_input("Gradient accumulation", min_value=1, max_value=256,
                                   value=suggestion.gradient_accumulation_steps, key="train_accum")
    steps = c4.number_input("Max steps", min_value=1, max_value=1_000_000, value=suggestion.max_train_steps,
                            key="train_steps")
    c5, c6, c7, c8 = st.columns(4)
    learning_rate = c5.number_input("Learning rate", min_value=1e-7, max_value=1e-2, value=1e-5, format="%.1e",
                                    key="train_lr")
    precision = c6.selectbox("Mixed precision", ["no", "fp16", "bf16"],
                             index=["no", "fp16", "bf16"].index(suggestion.mixed_precision), key="train_precision")
    checkpoint_every = c7.number_input("Checkpoint every", min_value=1, value=500, key="train_ckpt")
    validate_every = c8.number_input("Validate every", min_value=1, value=500, key="train_val")
    c9, c10, c11 = st.columns(3)
    conditioning = c9.radio("Control input", ["palette", "onehot"], horizontal=True, key="train_conditioning",
                            help="palette: the mask's colours (RGB); onehot: one channel per class.")
    cache = c10.checkbox("Cache latents and text embeddings", value=True, key="train_cache")
    checkpointing = c11.checkbox("Gradient checkpointing", value=suggestion.gradient_checkpointing,
                                 key="train_gc")

    extra = st.text_area("More settings (key=value per line)", key="train_extra",
                         placeholder="validation_inference_steps=20\nproportion_empty_prompts=0.5\nrandom_flip=true",
                         help="Any key of train/config.py, e.g. lr_scheduler, lr_warmup_steps, random_flip, "
                              "sd_locked, num_validation_images, validation_prompt.")

    if st.button("Start training", type="primary", key="train_start"):
        try:
            if not export_dir:
                raise ConfigError("choose an export folder (or type its path)")
            from train.config import parse_overrides

            extra_values = parse_overrides([line.strip() for line in extra.splitlines() if line.strip()])
            chosen = dict(resolution=int(resolution), train_batch_size=int(batch),
                          gradient_accumulation_steps=int(accumulation), max_train_steps=int(steps),
                          learning_rate=float(learning_rate), mixed_precision=precision,
                          checkpointing_steps=int(checkpoint_every), validation_steps=int(validate_every),
                          conditioning=conditioning, cache_latents=cache, cache_text_embeddings=cache,
                          gradient_checkpointing=checkpointing)
            config = training.config_for_export(Path(export_dir), base_model, Path(output_dir),
                                                **{**chosen, **extra_values})
            path = training.write_config(config, Path(settings.data_dir) / "train" / "configs" /
                                         f"{run_name}-{int(time.time())}.yaml")
            job_id = start_job(engine, settings, kind="train", argv=training.train_argv(path),
                               details={"config": str(path), "output_dir": str(config.output_dir),
                                        "metrics_path": str(Path(config.output_dir) / training.METRICS_FILE),
                                        "max_train_steps": config.max_train_steps,
                                        "random_weights": training.base_is_tiny(base_model)})
        except (ConfigError, training.TrainingError) as exc:
            st.error(str(exc))
        else:
            st.session_state["train_job"] = job_id
            st.success(f"Training job {job_id} started; config {path}")

# -- jobs ---------------------------------------------------------------------------------------------
with session_scope(engine) as session:
    jobs = [(j.id, j.status, (j.details or {}).get("output_dir", "")) for j in list_jobs(session, kind="train")]
if not jobs:
    st.info("No training jobs yet: pick an export above and press Start training.")
    st.stop()

ids = [j[0] for j in jobs]
if st.session_state.get("train_job_next"):  # a job just resumed from the job panel
    st.session_state["train_job"] = st.session_state.pop("train_job_next")
if st.session_state.get("train_job") not in ids:
    st.session_state["train_job"] = ids[0]
job_id = st.selectbox("Training job", ids, key="train_job",
                      format_func=lambda i: next(f"#{j} · {s} · {o}" for j, s, o in jobs if j == i))
with session_scope(engine) as session:
    active = get_job(session, job_id).status in ACTIVE


def show_job(job_id: int) -> None:
    """Status, progress, loss curve, log and validation grids of one training job."""
    import pandas as pd
    import plotly.graph_objects as go

    refresh_jobs(engine)
    with session_scope(engine) as session:
        job = get_job(session, job_id)
        status, error, details = job.status, job.error, dict(job.details or {})
        log = read_log_tail(job, 60)
    output_dir = Path(details.get("output_dir", ""))
    max_steps = details.get("max_train_steps")
    tails = st.session_state.setdefault("train_tails", {})
    tail = tails.get(job_id)
    if tail is None or tail.path != output_dir / training.METRICS_FILE:
        tail = tails[job_id] = training.MetricsTail(output_dir / training.METRICS_FILE)
    tail.poll()
    records = tail.records
    last = records[-1] if records else {}

    badge = {"running": "🟢", "queued": "⏳", "cancelling": "🟠", "finished": "✅", "failed": "❌",
             "cancelled": "⏹️"}.get(status, "")
    st.subheader(f"{badge} Job {job_id}: {status}")
    if details.get("random_weights"):
        st.warning(f"Base model: {TINY_LABEL}. The loss curve and validation images show the pipeline works, "
                   "not a usable model.", icon="🎲")
    if status == "failed":
        st.error(f"The training job failed: {error or 'see its log'}. Resume continues from its last checkpoint.")
    m1, m2, m3, m4, m5 = st.columns(5)
    m1.metric("Step", f"{last.get('step', 0)} / {max_steps or '?'}")
    m2.metric("ETA", training.format_duration(training.eta_seconds(records, max_steps or 0)) if status in ACTIVE else "-")
    m3.metric("Loss", f"{last['loss']:.4f}" if "loss" in last else "-")
    m4.metric("Samples/s", f"{last['samples_per_s']:.2f}" if "samples_per_s" in last else "-")
    m5.metric("Memory (MiB)", f"{last['memory_mib']:.0f}" if "memory_mib" in last else "-",
              help="Peak GPU memory on a GPU; the process's resident memory on a CPU.")
    if max_steps:
        st.progress(min(1.0, last.get("step", 0) / max_steps))

    if records:
        frame = pd.DataFrame(records)
        weight = st.slider("Smoothing", 0.0, 0.99, 0.9, key=f"train_smooth_{job_id}")
        figure = go.Figure()
        figure.add_scatter(x=frame["step"], y=frame["loss"], name="loss", mode="lines", opacity=0.3)
        figure.add_scatter(x=frame["step"], y=training.smooth(frame["loss"].tolist(), weight),
                           name="loss (smoothed)", mode="lines")
        if "val_loss" in frame:
            val = frame.dropna(subset=["val_loss"])
            figure.add_scatter(x=val["step"], y=val["val_loss"], name="validation loss", mode="lines+markers")
        figure.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="step",
                             yaxis_title="loss", title="Loss")
        st.plotly_chart(figure, key=f"train_loss_{job_id}")
    else:
        st.info("No metrics yet: the first steps are being prepared (model loading, caches).")

    b1, b2 = st.columns(2)
    if status in ACTIVE and b1.button("Cancel (saves a checkpoint)", key=f"train_cancel_{job_id}"):
        cancel_job(engine, job_id, grace_seconds=60, wait=False)
        st.rerun(scope="app")
    if status in ("failed", "cancelled") and b2.button("Resume from the last checkpoint", key=f"train_resume_{job_id}"):
        try:
            new_id = resume_job(engine, settings, job_id, extra_argv=["--resume-from-checkpoint=latest"])
        except JobError as exc:
            st.error(str(exc))
        else:
            st.session_state["train_job_next"] = new_id
            st.rerun(scope="app")

    grids = training.validation_grids(output_dir)
    if grids:
        steps = [g.step for g in grids]
        chosen = st.select_slider("Validation grid at step", steps, value=steps[-1], key=f"train_grid_{job_id}") \
            if len(steps) > 1 else steps[0]
        grid = next(g for g in grids if g.step == chosen)
        loss_text = f", validation loss {grid.val_loss:.4f}" if grid.val_loss is not None else ""
        st.image(str(grid.path), caption=f"step {grid.step}{loss_text} — mask · generated · target")
    checkpoints = training.checkpoints(output_dir)
    if checkpoints:
        st.caption("Checkpoints: " + ", ".join(p.name for _s, p in checkpoints))
    with st.expander("Log", expanded=status == "failed"):
        st.code(log or "(empty)", language=None)


st.fragment(run_every=2.0 if active else None)(show_job)(job_id)
