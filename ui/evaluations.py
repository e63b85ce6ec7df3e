"""The controllability section of a training run: mIoU over checkpoint steps, per-class IoU, worst cases."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from sqlalchemy import Engine

from db.engine import session_scope
from workbench.evaluate import list_evaluations, miou_curve, summary


def show_controllability(engine: Engine, output_dir: Path, key: str) -> None:
    """mIoU of the run's evaluated checkpoints by step (with the segmenter's ceiling), the newest
    evaluation's per-class IoU and its worst cases (mask | generated | segmentation)."""
    import pandas as pd
    import plotly.graph_objects as go

    if not str(output_dir) or str(output_dir) == ".":
        return
    with session_scope(engine) as session:
        curve = miou_curve(session, output_dir)
        newest = [summary(row) for row in list_evaluations(session, run_dir=output_dir, limit=1)]
    st.markdown("**Controllability** — mIoU between the masks and a segmenter's reading of the images "
                "generated from them (validation split)")
    if not newest:
        st.caption("No evaluation of this run's checkpoints yet: "
                   f"`python -m workbench evaluate --checkpoint {output_dir}/checkpoint-<step> "
                   "--segmenter <SegFormer folder or u2net-cloth>` (or `--background` for a job).")
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
