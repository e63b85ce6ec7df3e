"""The controllability section of a training run: mIoU over checkpoint steps, per-class IoU, worst cases."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from sqlalchemy import Engine

from db.engine import session_scope
from ui.jobs import page_job, watch_job
from workbench.evaluate import EvaluateError, EvaluateRequest, list_evaluations, miou_curve, start_evaluation, summary
from workbench.settings import Settings


def _of_run(output_dir: Path):
    """Whether an evaluation job's details name a checkpoint of the run in ``output_dir``."""
    run = output_dir.resolve()
    return lambda details: bool(details.get("output_dir")) and Path(details["output_dir"]).resolve() == run


def evaluate_form(engine: Engine, settings: Settings, output_dir: Path, key: str) -> None:
    """Start an evaluation job of one of the run's checkpoints (the page twin of ``python -m workbench
    evaluate``), and follow the run's evaluation still going, also one started in another tab."""
    from workbench.training import checkpoints

    found = checkpoints(output_dir)
    if not found:
        return
    with st.expander("Evaluate a checkpoint"):
        paths = {f"step {step}": path for step, path in found}
        c1, c2, c3, c4 = st.columns([1, 2, 1, 1])
        picked = c1.selectbox("Checkpoint", list(paths), index=len(paths) - 1, key=f"{key}_ckpt")
        segmenter = c2.text_input("Segmenter", value="u2net-cloth", key=f"{key}_segmenter",
                                  help="A SegFormer trained on the run's scheme (folder or hub id), or u2net-cloth[:DIR].")
        per_mask = c3.number_input("Images per mask", min_value=1, max_value=100, value=1, key=f"{key}_per_mask")
        limit = c4.number_input("Masks (0: all)", min_value=0, value=0, key=f"{key}_limit")
        c5, c6, _rest = st.columns([1, 1, 3])
        steps = c5.number_input("Steps", min_value=1, max_value=1000, value=20, key=f"{key}_steps")
        resolution = c6.number_input("Resolution", min_value=8, max_value=4096, value=512, step=8,
                                     key=f"{key}_resolution")
        if st.button("Evaluate", key=f"{key}_start"):
            try:
                request = EvaluateRequest(checkpoint=str(paths[picked]), segmenter=segmenter.strip(),
                                          per_mask=int(per_mask), limit=int(limit) or None, steps=int(steps),
                                          resolution=int(resolution))
                st.session_state[f"{key}_job"] = start_evaluation(engine, settings, request)
            except (EvaluateError, ValueError) as exc:
                st.error(str(exc))
        if (job_id := page_job(engine, f"{key}_job", "evaluate", matching=_of_run(output_dir))) is not None:
            st.caption("UniPC, guidance 7.5 (the protocol: 20 steps, 512 px); the mIoU joins the plot when it ends.")
            watch_job(engine, job_id, label="Evaluation job", unit="images", cancellable=True,
                      finished=lambda job: f"Evaluated {Path(job['details']['checkpoint']).name}")


def show_controllability(engine: Engine, settings: Settings, output_dir: Path, key: str) -> None:
    """mIoU of the run's evaluated checkpoints by step (with the segmenter's ceiling), the newest
    evaluation's per-class IoU and its worst cases (mask | generated | segmentation)."""
    import pandas as pd
    import plotly.graph_objects as go

    if not str(output_dir) or str(output_dir) == ".":
        return
    evaluate_form(engine, settings, output_dir, key)
    with session_scope(engine) as session:
        curve = miou_curve(session, output_dir)
        newest = [summary(row) for row in list_evaluations(session, run_dir=output_dir, limit=1)]
    st.markdown("**Controllability** — mIoU between the masks and a segmenter's reading of the images "
                "generated from them (validation split)")
    if not newest:
        st.caption("No evaluation of this run's checkpoints yet: evaluate one above, or "
                   f"`python -m workbench evaluate --checkpoint {output_dir}/checkpoint-<step> "
                   "--segmenter <SegFormer folder or u2net-cloth>`.")
        return
    if curve:
        frame = pd.DataFrame(curve)
        figure = go.Figure()
        figure.add_scatter(x=frame["step"], y=frame["miou"], name="mIoU (generated)", mode="lines+markers")
        if frame["ceiling_miou"].notna().any():
            figure.add_scatter(x=frame["step"], y=frame["ceiling_miou"], name="ceiling (real photos)",
                               mode="lines", line=dict(dash="dash"))
        figure.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="step",
                             yaxis_title="mIoU", yaxis_range=[0, 1], title="mIoU over training steps")
        st.plotly_chart(figure, key=f"{key}_miou")
    latest = newest[0]
    step = latest["checkpoint_step"] if latest["checkpoint_step"] is not None else "final"
    m1, m2, m3 = st.columns(3)
    m1.metric(f"mIoU (step {step})", f"{latest['miou']:.3f}" if latest["miou"] is not None else "-")
    m2.metric("Ceiling mIoU", f"{latest['ceiling_miou']:.3f}" if latest["ceiling_miou"] is not None else "-",
              help="The same segmenter on the real validation photos: the most a ControlNet can score.")
    m3.metric("CLIP score", f"{latest['clip_score']:.2f}" if latest["clip_score"] is not None else "-")
    table = pd.DataFrame({"class": list(latest["iou"]), "IoU (generated)": list(latest["iou"].values()),
                          "IoU (real photos)": [latest["ceiling"].get("iou", {}).get(c) for c in latest["iou"]]})
    st.dataframe(table, hide_index=True, key=f"{key}_iou")
    for note in latest["notes"]:
        st.caption(note)
    if latest["worst_cases"]:
        with st.expander(f"Worst cases of step {step} ({len(latest['worst_cases'])})"):
            for case in latest["worst_cases"]:
                cols = st.columns(3)
                for col, kind in zip(cols, ("mask", "generated", "segmentation")):
                    if Path(case[kind]).is_file():
                        col.image(case[kind], caption=f"{kind} · mIoU {case['miou']:.3f} · seed {case['seed']}")
