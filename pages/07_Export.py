"""Export: choose a dataset, format, scheme, resolution and filters; export as a background job."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from db.engine import session_scope
from ui.auth import allowed, require_user
from ui.common import datasets_or_stop, store_or_stop
from ui.jobs import page_job, watch_job

st.set_page_config(page_title="Export · Fashion ControlNet Workbench", page_icon="👗", layout="wide")
user = require_user()
st.title("Export for training")
st.caption("The export runs as a background job; the CLI twin is `python -m workbench export ...`.")

# -- load -------------------------------------------------------------------------------------
settings, engine = store_or_stop()
names = datasets_or_stop(engine)
from sqlalchemy import select  # noqa: E402

from db.models import Category, Dataset  # noqa: E402
from workbench.schemes import list_schemes  # noqa: E402

with session_scope(engine) as session:
    schemes = [s.name for s in list_schemes(session)]

from workbench.captions.mixing import latest_recipe_for, list_recipe_names  # noqa: E402
from workbench.export import (ExportRecipe, export_argv, list_exports, read_manifest,  # noqa: E402
                              undecided_flags, undecided_message)
from workbench.guard import check_server_path, refusal  # noqa: E402
from workbench.jobs import start_job  # noqa: E402

# -- the form ---------------------------------------------------------------------------------
dataset = st.selectbox("Dataset", names, key="export_dataset")
with session_scope(engine) as session:
    categories = list(session.scalars(select(Category.name).join(Dataset)
                                      .where(Dataset.name == dataset).order_by(Category.name)))
    recipes = list_recipe_names(session)
    own_recipe = latest_recipe_for(session, dataset)
    undecided_count = undecided_flags(session, dataset)

left, middle, right = st.columns(3)
fmt = left.radio("Format", ["imagefolder", "controlnet"], key="export_format",
                 help="imagefolder: metadata.jsonl for `datasets.load_dataset` and diffusers' "
                      "ControlNet trainer; controlnet: prompt.json, source/, target/ as in the "
                      "ControlNet tutorial.")
scheme = middle.selectbox("Mask scheme", schemes, key="export_scheme",
                          index=schemes.index("body-parts") if "body-parts" in schemes else 0)
resolution = right.number_input("Resolution (short side, px)", min_value=64, max_value=2048,
                                value=512, step=64, key="export_resolution")
crop = left.radio("Crop", ["center", "person"], key="export_crop", horizontal=True,
                  help="person: centred on the union box of the garment masks.")
target_format = middle.radio("Photos as", ["jpeg", "png"], key="export_target", horizontal=True)
buckets = right.checkbox("Aspect buckets instead of squares", key="export_buckets")
DATASET_PROMPT = "(dataset prompt, no recipe)"
recipe_choices = [DATASET_PROMPT, *recipes]
caption_recipe = st.selectbox(
    "Prompts: mixing recipe", recipe_choices, key=f"export_caption_recipe_{dataset}",
    index=recipe_choices.index(own_recipe.name) if own_recipe else 0,
    help="A recipe saved on the Mixing page (its newest version; the manifest records which). "
         "The default is the recipe saved last for this dataset.")

with st.expander("Filters", expanded=False):
    a, b = st.columns(2)
    split = a.radio("Split", ["all", "train", "validation"], key="export_split", horizontal=True)
    validation_fraction = a.slider("Validation share", 0.0, 0.5, 0.1, 0.01, key="export_fraction")
    seed = a.number_input("Seed", min_value=0, value=0, step=1, key="export_seed")
    people = b.radio("People decisions", ["exclude", "crop", "ignore"], key="export_people",
                     horizontal=True, help="exclude: leave out the images a curator excluded or marked "
                     "person regions on; crop: crop the marked regions away where possible; "
                     "ignore: keep every image. Flagged images not decided yet: the choice below.")
    undecided = b.radio("Flagged images not decided yet", ["exclude", "include", "wait"],
                        key="export_undecided", horizontal=True,
                        help="Images a detector or curator flagged that no curator has decided: "
                             "leave them out, export them as they are, or wait (refuse to export "
                             "while any remain).")
    repaired = b.radio("People repairs", ["exclude", "include"], key="export_repaired", horizontal=True,
                       help="include: a repaired image (People page, `people repair`) goes with its erased photo "
                            "and added masks, whatever its decision unless excluded; exclude: repairs are not used.")
    min_size = b.number_input("Minimum short side (px)", min_value=0, value=0, step=64,
                              key="export_min_size")
    require = b.multiselect("Require one of these categories", categories, key="export_require")
    exclude = b.multiselect("Exclude images with these categories", categories, key="export_exclude")
    reviewed = b.checkbox("Only images with a reviewed caption", key="export_reviewed")

if people != "ignore" and undecided_count:
    st.warning(f"{undecided_count} flagged image(s) of {dataset} are not decided yet: "
               + {"exclude": "they are left out", "include": "they are exported as they are",
                  "wait": "the export is refused until they are"}[undecided]
               + " (Filters: “Flagged images not decided yet”). Decide them on the People page.")

default_out = Path(settings.data_dir) / "exports" / f"{dataset}-{fmt}-{int(resolution)}"
out_dir = st.text_input("Destination folder (on the server)", value=str(default_out), key="export_out")
overwrite = st.checkbox("Replace the folder if it holds an earlier export", key="export_overwrite")

# -- act --------------------------------------------------------------------------------------
if st.button("Export", type="primary", disabled=not allowed("export")) and user.can("export"):
    try:
        recipe = ExportRecipe(
            dataset=dataset, format=fmt, scheme=scheme, resolution=int(resolution), crop=crop,
            buckets=buckets, target_format=target_format, split=split,
            validation_fraction=validation_fraction, seed=int(seed), people=people,
            min_size=int(min_size), require_categories=require, exclude_categories=exclude,
            reviewed_captions_only=reviewed, undecided=undecided, repaired=repaired,
            caption_recipe=None if caption_recipe == DATASET_PROMPT else caption_recipe)
    except ValidationError as exc:
        st.error("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    else:
        destination = Path(out_dir.strip()).expanduser()
        out_problem = refusal(check_server_path, out_dir.strip(), settings, "destination folder") if out_dir.strip() else None
        if not out_dir.strip():
            st.error("Fill in the destination folder.")
        elif out_problem:
            st.error(out_problem)
        elif people != "ignore" and undecided == "wait" and undecided_count:
            st.error(undecided_message(dataset, undecided_count))
        elif destination.exists() and not overwrite:
            st.error(f"{destination} already exists: choose another folder, or tick “Replace”.")
        else:
            try:
                job_id = start_job(engine, settings, kind="export", dataset=dataset,
                                   argv=export_argv(recipe, destination, overwrite=overwrite),
                                   details={"out_dir": str(destination.resolve())}, user=user.name,
                                   audit="export")
            except Exception as exc:
                st.error(f"The export could not be started: {type(exc).__name__}: {exc}")
            else:
                st.session_state["export_job"] = job_id


# -- watch the job ----------------------------------------------------------------------------
job_id = page_job(engine, "export_job", "export", dataset)
if job_id is not None:
    st.subheader("Running export")
    try:
        watch_job(engine, job_id, label="Export job", unit="images",
                  finished=lambda job: f"Exported to {job['details'].get('out_dir', '?')}")
    except Exception as exc:
        st.error(f"Cannot read export job {job_id}: {type(exc).__name__}: {exc}")

# -- past exports -----------------------------------------------------------------------------
st.subheader(f"Past exports of {dataset}")
with session_scope(engine) as session:
    past = list_exports(session, dataset)
if not past:
    st.info("No export of this dataset yet.")
else:
    st.dataframe(pd.DataFrame([{
        "id": e.id, "status": e.status, "format": e.format, "images": e.images,
        "scheme": f"{e.recipe.get('scheme')} v{e.recipe.get('scheme_version')}",
        "resolution": e.recipe.get("resolution"), "folder": e.out_dir,
        "created": e.created_at, "manifest sha256": (e.manifest_sha256 or "")[:12],
    } for e in past]), hide_index=True)
    finished = [e for e in past if e.status == "finished"]
    if finished:
        chosen = st.selectbox("Manifest of", [e.id for e in finished], key="export_manifest",
                              format_func=lambda i: f"export {i}: "
                              + next(e.out_dir for e in finished if e.id == i))
        try:
            manifest = read_manifest(next(e.out_dir for e in finished if e.id == chosen))
        except Exception as exc:
            st.warning(f"{exc}")
        else:
            counts = manifest["counts"]
            cols = st.columns(3)
            cols[0].metric("Images", counts["images"])
            cols[1].metric("Left out", counts["excluded_total"])
            cols[2].metric("Files", len(manifest["files"]))
            st.json({k: manifest[k] for k in ("recipe", "scheme", "sources", "counts", "dataset",
                                              "workbench_version")}, expanded=False)
            if manifest["excluded"]:
                st.dataframe(pd.DataFrame([{"reason": r, "image": n} for r, names_ in
                                           manifest["excluded"].items() for n in names_]),
                             hide_index=True)
