"""Import: bring a dataset from files on the server into the store as a background job, then
show its report."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import streamlit as st

IMAT = "iMaterialist 2019/2020 CSV"
COCO = "COCO JSON (Fashionpedia)"
FOLDER = "Image folder"
COMMANDS = {IMAT: "imat2019", COCO: "coco", FOLDER: "folder"}  # `python -m workbench import <command>`

st.set_page_config(page_title="Import · Fashion ControlNet Workbench", page_icon="👗", layout="wide")
st.title("Import a dataset")
st.caption("Paths are on the machine running the workbench. The import runs as a background job; "
           "the CLI twin is `python -m workbench import ...`.")

# The store's libraries (SQLAlchemy, pydantic) take seconds to import in a fresh server: load
# them after the title, under a spinner, so the page never sits blank (pandas waits for a report).
with st.spinner("Loading the import form…"):
    from ui.auth import allowed, require_user  # noqa: E402
    from ui.common import store_or_stop  # noqa: E402
    from ui.jobs import page_job, watch_job  # noqa: E402
    from workbench.guard import check_name, refusal  # noqa: E402
    from workbench.jobs import start_job  # noqa: E402
    from workbench.taxonomy import BUNDLED_IMAT2019_LABELS  # noqa: E402

    settings, engine = store_or_stop()
user = require_user()

# -- the form: widget values are kept by key, so nothing typed is lost when an import fails ---
kind = st.radio("Format", [IMAT, COCO, FOLDER], horizontal=True, key="import_format")
name = st.text_input("Dataset name", key="import_name", placeholder="e.g. imat2019-train")
paths: dict[str, tuple[str, str]] = {}  # CLI option -> (what it is, as typed)
if kind == IMAT:
    paths["--csv"] = ("csv path", st.text_input("train.csv", key="import_csv",
                                                placeholder="/data/imat/train.csv"))
    paths["--labels"] = ("labels path", st.text_input(
        "label_descriptions.json", key="import_labels", value=str(BUNDLED_IMAT2019_LABELS),
        help="Defaults to the bundled iMaterialist 2019 label file."))
elif kind == COCO:
    paths["--annotations"] = ("annotations path", st.text_input(
        "Annotations JSON", key="import_annotations", placeholder="/data/fashionpedia/instances_train.json"))
paths["--images"] = ("images dir", st.text_input("Images folder", key="import_images",
                                                 placeholder="/data/imat/train"))
image_check = st.selectbox("Image check", ["full", "header", "none"], key="import_check",
                           help="full: decode every image and hash it; header: read its size only; "
                                "none: trust the annotation file.")
strict = kind != FOLDER and st.checkbox("Strict: stop at the first bad row and write nothing",
                                        key="import_strict")

# -- act: start the import job --------------------------------------------------------------
if st.button("Import", type="primary", disabled=not allowed("import")) and user.can("import"):
    missing = [what for what, value in [("dataset name", name), *paths.values()] if not value.strip()]
    name_problem = None if missing else refusal(check_name, name.strip())
    if missing:
        st.error(f"Fill in: {', '.join(missing)}.")
    elif name_problem:
        st.error(name_problem)
    else:
        # The job reads the paths from its own working directory: make them absolute here.
        report_path = Path(settings.data_dir) / "jobs" / f"import-{uuid.uuid4().hex}.json"
        argv = ["import", COMMANDS[kind], "--name", name.strip(),
                *[a for option, (_what, value) in paths.items()
                  for a in (option, str(Path(value.strip()).expanduser().absolute()))],
                "--image-check", image_check, *(["--strict"] if strict else []),
                "--report", str(report_path.absolute())]
        try:
            job_id = start_job(engine, settings, kind="import", dataset=name.strip(), argv=argv,
                               details={"report": str(report_path.absolute())}, user=user.name, audit="import")
        except Exception as exc:
            st.error(f"The import could not be started: {type(exc).__name__}: {exc}")
        else:
            st.session_state["import_job"] = job_id
            st.session_state.pop("import_report", None)


# -- watch the job (this session's, else the import running in the store after a reload or in
# another tab); once it has finished, its report file is the result ---------------------------
job_id = page_job(engine, "import_job", "import")
if job_id is not None:
    try:
        job = watch_job(engine, job_id, label="Import job", unit=None, cancellable=True,
                        finished=lambda job: f"Imported {job['dataset']}")
        if job["status"] == "finished" and "import_report" not in st.session_state:
            st.session_state["import_report"] = json.loads(
                Path(job["details"]["report"]).read_text(encoding="utf-8"))
    except Exception as exc:
        st.error(f"Cannot read import job {job_id}: {type(exc).__name__}: {exc}")

# -- show the last report (UI state only: the import itself is in the store) -----------------
result = st.session_state.get("import_report")
if result is not None:
    st.subheader(f"Report: {result['dataset']}")
    cols = st.columns(5)
    for col, key in zip(cols, ["images", "annotations", "new_images", "new_annotations"]):
        col.metric(key.replace("_", " ").capitalize(), f"{result[key]:,}")
    cols[4].metric("Rejected", f"{len(result['rejected']):,}")
    if result["rejected"]:
        import pandas as pd

        st.dataframe(pd.DataFrame(result["rejected"], columns=["line", "image_id", "reason"]),
                     hide_index=True)
    else:
        st.success("No rows were rejected.")
    st.download_button("Download report (JSON)", json.dumps(result, indent=2),
                       file_name=f"{result['dataset']}-import-report.json", mime="application/json",
                       on_click="ignore")
