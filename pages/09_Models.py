"""Models: every model the workbench uses, where it is, whether it is ready, and how to get it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from db.engine import session_scope
from ui.auth import allowed, require_user
from ui.common import store_or_stop
from ui.jobs import page_job, watch_job
from workbench.cli.models import CHECK_JOB_KIND, TINY_JOB_KIND
from workbench.jobs import start_job
from workbench.models import KINDS, ModelLookupError, add_model, list_models, status_rows

st.set_page_config(page_title="Models · Fashion ControlNet Workbench", page_icon="👗", layout="wide")
user = require_user()
settings, engine = store_or_stop()
st.title("Models")
st.caption(f"Looked for in the models folder `{settings.models_dir}` (`WORKBENCH_MODELS_DIR`), the Hugging Face "
           "cache, and folders or files you add. `python -m workbench models list` shows the same.")

# -- act: check, tiny models, add -----------------------------------------------------------------
JOB_LABELS = {CHECK_JOB_KIND: "Check job", TINY_JOB_KIND: "Tiny models job"}
c1, c2 = st.columns(2)
may_run = allowed("run_jobs")
if c1.button("Check all models", key="models_check", help="Loads each model found here once (never downloads).",
             disabled=not may_run) and may_run:
    st.session_state["models_job"] = start_job(engine, settings, kind=CHECK_JOB_KIND, argv=["models", "check"],
                                               details={"models": "all"}, user=user.name)
if c2.button("Make tiny test models", key="models_tiny",
             help="Small random-weight models of every kind: the whole pipeline runs on a laptop in minutes; "
                  "their output is noise.", disabled=not may_run) and may_run:
    st.session_state["models_job"] = start_job(engine, settings, kind=TINY_JOB_KIND, argv=["models", "tiny"],
                                               details={"models": "all"}, user=user.name)
# this session's job, else one running after a reload or started in another tab
if (job_id := page_job(engine, "models_job", tuple(JOB_LABELS))) is not None:
    watch_job(engine, job_id, label=lambda job: JOB_LABELS[job["kind"]], unit="models", cancellable=True,
              finished=lambda job: "Done: the list below is up to date.")

with st.expander("Add a folder or file you have"):
    a1, a2, a3 = st.columns([1, 2, 1])
    name = a1.text_input("Name", key="models_add_name", placeholder="my-sd15")
    path = a2.text_input("Folder or file", key="models_add_path", placeholder="/models/stable-diffusion-v1-5")
    kind = a3.selectbox("Kind", ["(read from the files)", *KINDS], key="models_add_kind")
    if st.button("Add", key="models_add", disabled=not may_run) and may_run:
        try:
            with session_scope(engine) as session:
                added = add_model(session, name.strip(), path=path.strip(),
                                  kind=None if kind.startswith("(") else kind)
            st.success(f"{added.name} added as {KINDS[added.kind].label}")
        except ModelLookupError as exc:
            st.error(str(exc))

# -- show: the list per kind ---------------------------------------------------------------------------
with session_scope(engine) as session:
    models = list_models(session, settings)
ready = sum(m.ready for m in models)
st.metric("Ready models", f"{ready} of {len(models)}")
rows = pd.DataFrame(status_rows(models))
for key, kind_info in KINDS.items():
    part = rows[rows["kind"] == key].drop(columns="kind")
    marks = "".join("✅" if s.startswith(("ready", "unchecked")) else "❌" for s in part["state"])
    with st.expander(f"{kind_info.label} · {marks}", expanded=False):
        st.dataframe(part, hide_index=True, width="stretch",
                     column_config={"size_mb": st.column_config.NumberColumn("size (MB)"),
                                    "fix": st.column_config.TextColumn("fix", width="large")})
