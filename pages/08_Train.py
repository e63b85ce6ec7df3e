"""Train: pick an export and a base model, start a background training job, watch it live."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from db.engine import session_scope
from ui.auth import allowed, require_user
from ui.common import store_or_stop
from ui.evaluations import show_controllability
from ui.jobs import job_log, job_now, restart_button, show_ending
from ui.models import model_picker
from workbench.models import TINY_LABEL

st.set_page_config(page_title="Train · Fashion ControlNet Workbench", page_icon="👗", layout="wide")
user = require_user()
st.title("Train a ControlNet")
st.caption("Training runs as a background job (`python -m workbench train start --config F`); "
           "this page starts it and watches its metrics, checkpoints and validation images.")

# -- load -------------------------------------------------------------------------------------
settings, engine = store_or_stop()

from train.config import ConfigError  # noqa: E402
from workbench.guard import InputRefused, check_server_model, check_server_path  # noqa: E402
from workbench.jobs import ACTIVE, cancel_job, list_jobs, refresh_jobs  # noqa: E402
from workbench import training  # noqa: E402
from workbench.train_launch import start_training  # noqa: E402

try:
    from workbench.export import list_exports

    with session_scope(engine) as session:
        exports = [e for e in list_exports(session) if e.status == "finished"]
except Exception:  # no export module or table yet: a typed path still works
    exports = []

from train.suggest import suggest_settings  # noqa: E402


def train_jobs() -> list[tuple[int, str, str]]:
    """Training jobs, newest first, as (id, status, output folder); dead processes found first."""
    refresh_jobs(engine)
    with session_scope(engine) as session:
        return [(j.id, j.status, (j.details or {}).get("output_dir", "")) for j in list_jobs(session, kind="train")]


jobs = train_jobs()


@st.cache_resource(show_spinner=False)
def _default_processes() -> int:
    from workbench.train_launch import default_processes

    return default_processes()


@st.cache_resource(show_spinner=False)
def _gpu_memory() -> float:
    from train.suggest import detect_gpu_memory_gib

    return float(round(detect_gpu_memory_gib(), 1))


# -- a new run ----------------------------------------------------------------------------------
# Open or closed as the user leaves it (its state is kept under its key); `expanded` is only the
# first state, and must not change between runs, or the expander would be a new one.
form_default = st.session_state.setdefault("train_form_default", not exports or not jobs)
with st.expander("New training run", expanded=form_default, key="train_form", on_change="rerun"):
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

    p1, p2 = st.columns([1, 3])
    processes = p1.number_input("Processes (GPUs)", min_value=1, max_value=1024, value=_default_processes(),
                                key="train_processes",
                                help="One training process per GPU; more than 1 launches through `accelerate launch`.")
    accelerate_config = p2.text_input("Accelerate config file (optional: multi-node)", key="train_accelerate_config",
                                      help="Made with `accelerate config --config_file PATH`; the runs are launched "
                                           "with it (machines, addresses, ranks).")

    extra = st.text_area("More settings (key=value per line)", key="train_extra",
                         placeholder="validation_inference_steps=20\nproportion_empty_prompts=0.5\nrandom_flip=true",
                         help="Any key of train/config.py, e.g. lr_scheduler, lr_warmup_steps, random_flip, "
                              "sd_locked, num_validation_images, validation_prompt.")

    if st.button("Start training", type="primary", key="train_start", disabled=not allowed("train")) \
            and user.can("train"):
        try:
            if not export_dir:
                raise ConfigError("choose an export folder (or type its path)")
            check_server_path(export_dir, settings, "export folder", kind="input")
            check_server_model(base_model, settings, "base model")
            check_server_path(output_dir.strip(), settings, "output folder")
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
            job_id = start_training(engine, settings, config, path, num_processes=int(processes),
                                    accelerate_config=Path(accelerate_config.strip()) if accelerate_config.strip() else None,
                                    user=user.name)
        except (ConfigError, training.TrainingError, InputRefused) as exc:
            st.error(str(exc))
        else:
            st.session_state["train_job"] = job_id
            # kept, so that the rerun a status change causes (below) does not wipe it
            st.session_state["train_started"] = f"Training job {job_id} started; config {path}"
            jobs = train_jobs()
    if "train_started" in st.session_state:
        st.success(st.session_state["train_started"])

# -- jobs ---------------------------------------------------------------------------------------------
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
picked_status = next(s for j, s, _o in jobs if j == job_id)


def show_job(job_id: int) -> None:
    """Status, progress, loss curve, log and validation grids of one training job."""
    import pandas as pd
    import plotly.graph_objects as go

    job = job_now(engine, job_id)
    if job["status"] != picked_status:  # it moved on since the picker was drawn: redraw both
        st.rerun(scope="app")
    status, details = job["status"], dict(job["details"] or {})
    log = job_log(engine, job_id, 60)
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
    if job["ending"]:
        show_ending(job, log, f"Training job {job_id} {job['ending']}")
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
    elif status in ACTIVE:
        stage = details.get("stage")  # what the trainer says it is doing before its first step
        st.info(f"No metrics yet: {stage}…" if stage else
                "No metrics yet: the first steps are being prepared (model loading, caches).")

    b1, b2 = st.columns(2)
    if status in ACTIVE and b1.button("Cancel (saves a checkpoint)", key=f"train_cancel_{job_id}",
                                      disabled=not user.can("train")) and user.can("train"):
        cancel_job(engine, job_id, grace_seconds=60, wait=False)
        st.rerun(scope="app")
    with b2:
        new_id = restart_button(engine, job, key=f"train_restart_{job_id}",
                                resume_argv=("--resume-from-checkpoint=latest",), action="train",
                                audit="train.resume")
    if new_id is not None:
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
        show_controllability(engine, settings, output_dir, key=f"train_eval_{job_id}")
    if not job["ending"]:  # a stopped job shows its log with its reason, above
        with st.expander("Log"):
            st.code(log or "(empty)", language=None, wrap_lines=True)


st.fragment(run_every=2.0 if picked_status in ACTIVE else None)(show_job)(job_id)
