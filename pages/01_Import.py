"""Import: bring a dataset from files on the server into the store, then show the report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from ui.common import open_store, progress_bar
from workbench.settings import get_settings
from workbench.taxonomy import BUNDLED_IMAT2019_LABELS

IMAT = "iMaterialist 2019/2020 CSV"
COCO = "COCO JSON (Fashionpedia)"
FOLDER = "Image folder"

st.set_page_config(page_title="Import · Fashion ControlNet Workbench", page_icon="👗", layout="wide")


def importer(kind: str) -> Callable[..., Any]:
    """The library function that imports ``kind``."""
    if kind == IMAT:
        from workbench.formats import import_imat2019

        return import_imat2019
    if kind == COCO:
        from workbench.formats import import_coco

        return import_coco
    from workbench.formats import import_folder

    return import_folder


st.title("Import a dataset")
st.caption("Paths are on the machine running the workbench. The CLI twin is `python -m workbench import ...`.")

# -- the form: widget values are kept by key, so nothing typed is lost when an import fails ---
kind = st.radio("Format", [IMAT, COCO, FOLDER], horizontal=True, key="import_format")
name = st.text_input("Dataset name", key="import_name", placeholder="e.g. imat2019-train")
paths: dict[str, str] = {}
if kind == IMAT:
    paths["csv_path"] = st.text_input("train.csv", key="import_csv", placeholder="/data/imat/train.csv")
    paths["labels_path"] = st.text_input("label_descriptions.json", key="import_labels",
                                         value=str(BUNDLED_IMAT2019_LABELS),
                                         help="Defaults to the bundled iMaterialist 2019 label file.")
elif kind == COCO:
    paths["annotations_path"] = st.text_input("Annotations JSON", key="import_annotations",
                                              placeholder="/data/fashionpedia/instances_train.json")
paths["images_dir"] = st.text_input("Images folder", key="import_images", placeholder="/data/imat/train")
options: dict[str, Any] = {
    "image_check": st.selectbox("Image check", ["full", "header", "none"], key="import_check",
                                help="full: decode every image and hash it; header: read its size only; "
                                     "none: trust the annotation file."),
}
if kind != FOLDER:
    options["strict"] = st.checkbox("Strict: stop at the first bad row and write nothing",
                                    key="import_strict")

# -- act -------------------------------------------------------------------------------------
if st.button("Import", type="primary"):
    missing = [label for label, value in [("dataset name", name), *paths.items()] if not value.strip()]
    if missing:
        st.error(f"Fill in: {', '.join(m.replace('_', ' ') for m in missing)}.")
    else:
        from workbench.formats import ImportSourceError, StrictImportError

        settings = get_settings()
        with st.status(f"Importing {name}…", expanded=True) as status:
            bar = st.progress(0.0, text="0%")
            try:
                engine = open_store(settings)
                report = importer(kind)(engine, name=name.strip(), progress=progress_bar(bar),
                                        **{k: Path(v.strip()) for k, v in paths.items()}, **options)
            except StrictImportError as exc:
                status.update(label="Import stopped (strict mode)", state="error")
                st.error(f"{exc}. Strict mode: nothing was written.")
            except ImportSourceError as exc:
                status.update(label="Import failed", state="error")
                st.error(str(exc))
            except Exception as exc:  # shown, not raised: a page must never end in a traceback
                status.update(label="Import failed", state="error")
                st.error(f"{type(exc).__name__}: {exc}")
            else:
                status.update(label=f"Imported {report.dataset}", state="complete", expanded=False)
                st.session_state["import_report"] = report.to_dict()

# -- show the last report (UI state only: the import itself is in the store) -----------------
result = st.session_state.get("import_report")
if result is not None:
    st.subheader(f"Report: {result['dataset']}")
    cols = st.columns(5)
    for col, key in zip(cols, ["images", "annotations", "new_images", "new_annotations"]):
        col.metric(key.replace("_", " ").capitalize(), f"{result[key]:,}")
    cols[4].metric("Rejected", f"{len(result['rejected']):,}")
    if result["rejected"]:
        st.dataframe(pd.DataFrame(result["rejected"], columns=["line", "image_id", "reason"]),
                     hide_index=True)
    else:
        st.success("No rows were rejected.")
    st.download_button("Download report (JSON)", json.dumps(result, indent=2),
                       file_name=f"{result['dataset']}-import-report.json", mime="application/json",
                       on_click="ignore")
