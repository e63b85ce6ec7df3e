"""Home: pick a dataset and see its counts and where each curation step stands."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st
from sqlalchemy import Engine

from db.engine import session_scope
from ui.auth import allowed, require_user
from ui.common import open_store, shown_url, staged_progress_bar
from workbench.audit import record
from workbench.datasets import dataset_stats, delete_dataset, ensure_demo_dataset, list_datasets
from workbench.pipeline import pipeline_status
from workbench.settings import Settings, get_settings

TOP_CATEGORIES = 15

st.set_page_config(page_title="Fashion ControlNet Workbench", page_icon="👗", layout="wide")
user = require_user()


def import_demo_once(engine: Engine, settings: Settings) -> None:
    """Generate and import the demo dataset into an empty store, showing progress."""
    with st.status(f"First start: building the demo dataset ({settings.demo_images} images)…",
                   expanded=True) as status:
        bar = st.progress(0.0, text="Starting…")
        try:
            report = ensure_demo_dataset(engine, settings, n_images=settings.demo_images,
                                         stage=staged_progress_bar(bar, stages=2))
        except Exception as exc:  # shown, not raised: a page must never end in a traceback
            status.update(label="The demo dataset could not be built", state="error")
            st.error(f"{type(exc).__name__}: {exc}. Run `python -m workbench demo` to see details.")
            return
        if report is None:
            status.update(label="Another session imported the demo dataset", state="complete",
                          expanded=False)
        else:
            with session_scope(engine) as session:
                record(session, user.name, "import", "dataset", report.dataset, dataset=report.dataset,
                       after={"images": report.images, "annotations": report.annotations, "demo": True})
            status.update(label=f"Demo dataset imported: {report.images} images, "
                          f"{report.annotations} annotations", state="complete", expanded=False)


st.title("Fashion ControlNet Workbench")

# -- load -----------------------------------------------------------------------------------
try:
    settings = get_settings()
except Exception as exc:
    st.error(f"The workbench settings are invalid: {exc}")
    st.stop()

try:
    engine = open_store(settings)
    with session_scope(engine) as session:
        names = list_datasets(session)
except Exception as exc:
    st.error(
        f"Cannot open the database {shown_url(settings.database_url)}: {type(exc).__name__}: {exc}\n\n"
        "Check `WORKBENCH_DB_URL` (or `WORKBENCH_DATA_DIR`); `python -m workbench config` prints the settings."
    )
    st.stop()

if not names and settings.demo_images > 0 and user.can("import"):
    import_demo_once(engine, settings)
    with session_scope(engine) as session:
        names = list_datasets(session)

if not names:
    st.info("No datasets yet. Import one on the **Import** page, or run `python -m workbench demo`.")
    st.stop()

deleted = st.session_state.pop("home_deleted", None)
if deleted:
    st.success(deleted)
name = st.selectbox("Dataset", names, key="dataset")
with session_scope(engine) as session:
    stats = dataset_stats(session, name)
    steps = pipeline_status(session, name)

# -- show -----------------------------------------------------------------------------------
if stats["import_status"] == "incomplete":
    st.warning(f"**Incomplete dataset**: {stats['import_note']}.")
elif stats["import_status"] == "importing":
    st.info(f"Still importing: {stats['import_note']}.")
used = sum(1 for count in stats["categories"].values() if count)
images_col, annotations_col, categories_col = st.columns(3)
images_col.metric("Images", f"{stats['images']:,}")
annotations_col.metric("Annotations", f"{stats['annotations']:,}")
categories_col.metric("Categories", f"{stats['category_count']:,}",
                      help=f"{used} of them have at least one mask in this dataset.")
st.caption(f"Format `{stats['format']}` · images in `{stats['images_root']}`")

st.subheader("Pipeline")
table = pd.DataFrame([step.as_dict() for step in steps])
table["progress"] = [100 * s.done / s.total if s.total else None for s in steps]
next_step = next((s for s in steps if s.total and s.done < s.total), None)
if next_step is not None:
    st.info(f"Next: **{next_step.step}** ({next_step.done} of {next_step.total} done): {next_step.note}.")
st.dataframe(
    table[["step", "progress", "done", "total", "note"]],
    hide_index=True,
    column_config={"progress": st.column_config.ProgressColumn("progress", format="%.0f%%",
                                                                min_value=0, max_value=100)},
)

st.subheader("Top categories")
counts = pd.Series(stats["categories"], name="masks").sort_values(ascending=False)
counts = counts[counts > 0].head(TOP_CATEGORIES)
if counts.empty:
    st.info("This dataset has no masks yet.")
else:
    chart = px.bar(counts.iloc[::-1], orientation="h", labels={"index": "category", "value": "masks"})
    chart.update_layout(showlegend=False, height=120 + 24 * len(counts), margin={"t": 10, "b": 10})
    st.plotly_chart(chart)

with st.expander("Delete this dataset"):
    st.caption("Removes its images, masks, flags, captions and exports' rows from the store (the files on disk "
               "stay). The audit log keeps who did it. CLI twin: `python -m workbench delete-dataset NAME --yes`.")
    may_delete = allowed("delete_dataset")
    typed = st.text_input(f"Type {name!r} to confirm", key="home_delete_confirm", disabled=not may_delete)
    if st.button("Delete dataset", key="home_delete", disabled=not may_delete or typed.strip() != name) \
            and may_delete and typed.strip() == name:
        with session_scope(engine) as session:
            gone = delete_dataset(session, name, by=user.name)
        st.session_state["home_deleted"] = (f"Deleted {name}: {gone['images']} images, "
                                            f"{gone['annotations']} annotations.")
        st.session_state.pop("home_delete_confirm", None)
        st.rerun()
