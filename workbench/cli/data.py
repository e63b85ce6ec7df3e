"""Data commands: settings, the demo, imports, dataset stats, mask rendering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from workbench.cli.common import (actor_of, audit_launch, engine_of, fail, guarded, parse_size, print_json, progress_hooks,
                                  settings_of, stage_hooks)
from workbench.guard import check_name, check_output_file

app = typer.Typer()
import_app = typer.Typer(help="Import a dataset into the store.", no_args_is_help=True)
masks_app = typer.Typer(help="Render conditioning masks.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(masks_app, name="masks")


@app.command()
def config(ctx: typer.Context) -> None:
    """Print the effective settings as JSON."""
    settings = settings_of(ctx)
    data = settings.model_dump(mode="json")
    data["database_url"] = settings.database_url
    print_json(data)


@app.command()
def demo(
    ctx: typer.Context,
    images: Annotated[int, typer.Option(min=1, max=100_000, help="Number of images to generate.")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same dataset).")] = 0,
) -> None:
    """Generate the demo dataset (iMaterialist 2019 format) and import it as 'demo'."""
    from workbench.datasets import ensure_demo_dataset

    if images < 1:
        fail("--images must be at least 1")
    actor = actor_of(ctx, "import")
    with stage_hooks("demo") as (stage, should_stop):
        report = ensure_demo_dataset(
            engine_of(ctx), settings_of(ctx), n_images=images, seed=seed, stage=stage,
            should_stop=should_stop, force=True,
        )
    audit_launch(ctx, actor.name, "import", "dataset", "demo", dataset="demo", after=_summary(report))
    print_json(report.to_dict())


def _summary(report) -> dict[str, Any]:
    """An import report's counts, with the number of rejected rows instead of the rows."""
    return {**{k: v for k, v in report.to_dict().items() if k != "rejected"}, "rejected": len(report.rejected)}


def _run_import(ctx: typer.Context, runner, report_path: Optional[Path], **kwargs: Any) -> None:
    from workbench.formats import ImportSourceError, StrictImportError
    from workbench.formats.images import CHECK_MODES

    # Checked before the import: a refusal afterwards would lose the report of a finished import.
    guarded(check_name, kwargs["name"])
    if kwargs.get("image_check") not in (None, *CHECK_MODES):
        fail(f"--image-check {kwargs['image_check']!r} is not a mode: use {', '.join(CHECK_MODES)}")
    if report_path is not None:
        guarded(check_output_file, report_path, "--report")
    actor = actor_of(ctx, "import")
    try:
        with progress_hooks(f"import {kwargs['name']}", unit="B") as (progress, should_stop):
            report = runner(engine_of(ctx), progress=progress, should_stop=should_stop, **kwargs)
    except StrictImportError as exc:
        fail(f"{exc} (strict mode: nothing was written)", code=1)
    except ImportSourceError as exc:
        fail(str(exc))
    data = report.to_dict()
    audit_launch(ctx, actor.name, "import", "dataset", kwargs["name"], dataset=kwargs["name"], after=_summary(report))
    if report_path is not None:
        report_path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    print_json(_summary(report))
    for r in report.rejected[:20]:
        where = f"line {r.line}" if r.line is not None else r.image_id
        typer.echo(f"rejected {where}: {r.reason}", err=True)
    if len(report.rejected) > 20:
        typer.echo(f"... and {len(report.rejected) - 20} more (see --report)", err=True)


ReportOpt = Annotated[Optional[Path], typer.Option("--report", help="Write the import report (JSON) here.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Stop at the first bad row, writing nothing.")]
CheckOpt = Annotated[Optional[str], typer.Option("--image-check", help="full (decode + SHA-256), header (size only) or none.")]


@import_app.command("imat2019")
def import_imat2019_cmd(
    ctx: typer.Context,
    csv: Annotated[Path, typer.Option("--csv", help="train.csv (2019 or 2020 layout).")],
    labels: Annotated[Path, typer.Option("--labels", help="label_descriptions.json.")],
    images: Annotated[Path, typer.Option("--images", help="Folder holding the images.")],
    name: Annotated[str, typer.Option("--name", help="Dataset name in the store.")],
    report: ReportOpt = None,
    strict: StrictOpt = False,
    image_check: CheckOpt = None,
) -> None:
    """Import iMaterialist Fashion 2019 (or 2020) train.csv + label_descriptions.json."""
    from workbench.formats import import_imat2019

    _run_import(ctx, import_imat2019, report, csv_path=csv, labels_path=labels, images_dir=images,
                name=name, strict=strict, image_check=image_check)


@import_app.command("coco")
def import_coco_cmd(
    ctx: typer.Context,
    annotations: Annotated[Path, typer.Option("--annotations", help="COCO instances JSON (Fashionpedia too).")],
    images: Annotated[Path, typer.Option("--images", help="Folder holding the images.")],
    name: Annotated[str, typer.Option("--name", help="Dataset name in the store.")],
    report: ReportOpt = None,
    strict: StrictOpt = False,
    image_check: CheckOpt = None,
) -> None:
    """Import a COCO instances file (polygons or RLE; Fashionpedia attributes)."""
    from workbench.formats import import_coco

    _run_import(ctx, import_coco, report, annotations_path=annotations, images_dir=images,
                name=name, strict=strict, image_check=image_check)


@import_app.command("folder")
def import_folder_cmd(
    ctx: typer.Context,
    images: Annotated[Path, typer.Option("--images", help="Folder of images (searched recursively).")],
    name: Annotated[str, typer.Option("--name", help="Dataset name in the store.")],
    report: ReportOpt = None,
    image_check: CheckOpt = None,
) -> None:
    """Import a plain folder of images (no annotations)."""
    from workbench.formats import import_folder

    _run_import(ctx, import_folder, report, images_dir=images, name=name, image_check=image_check)


@app.command()
def datasets(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (name, import_status, import_note).")] = False,
) -> None:
    """List the stored datasets; one whose last import did not finish is marked incomplete."""
    from db.engine import session_scope
    from workbench.datasets import import_states

    with session_scope(engine_of(ctx)) as session:
        states = import_states(session)
    if as_json:
        print_json([{"name": name, "import_status": state.status, "import_note": state.note}
                    for name, state in states.items()])
        return
    for name, state in states.items():
        typer.echo(name if state.complete else f"{name}  ({state.status}: {state.note})")


@app.command("delete-dataset")
def delete_dataset_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The dataset to delete.")],
    yes: Annotated[bool, typer.Option("--yes", help="Really delete it (nothing is deleted without it).")] = False,
) -> None:
    """Delete a dataset and every row stored for it (admins only; the audit log records it)."""
    from db.engine import session_scope
    from workbench.datasets import DatasetNotFound, delete_dataset

    actor = actor_of(ctx, "delete_dataset")
    if not yes:
        fail(f"deleting {name!r} removes its images, masks, flags and captions from the store: add --yes")
    try:
        with session_scope(engine_of(ctx)) as session:
            print_json(delete_dataset(session, name, by=actor.name))
    except DatasetNotFound as exc:
        fail(str(exc))


@app.command()
def stats(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Counts of a dataset: images, annotations, per category and attribute."""
    from db.engine import session_scope
    from workbench.datasets import DatasetNotFound, dataset_stats

    try:
        with session_scope(engine_of(ctx)) as session:
            data = dataset_stats(session, dataset)
    except DatasetNotFound as exc:
        fail(str(exc), fix="`python -m workbench datasets` lists the stored datasets; import one first "
                           "(Import page or `python -m workbench import ...`) if it is not there")
    if as_json:
        print_json(data)
        return
    typer.echo(f"{data['dataset']} ({data['format']}): {data['images']} images, "
               f"{data['annotations']} annotations, {data['category_count']} categories")
    if data["import_status"] != "complete":
        typer.echo(f"{data['import_status']}: {data['import_note']}")
    for name, count in sorted(data["categories"].items(), key=lambda kv: -kv[1]):
        if count:
            typer.echo(f"  {count:8d}  {name}")


@masks_app.command("render")
def masks_render(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset name.")],
    image_id: Annotated[str, typer.Option("--image-id", help="Image file name relative to the images folder.")],
    scheme: Annotated[str, typer.Option("--scheme", help="fine, body-parts, cloth-seg, cloth-seg-compat or a saved scheme.")],
    out: Annotated[Path, typer.Option("--out", help="Output palette PNG.")],
    legend: Annotated[Optional[Path], typer.Option("--legend", help="Write the legend JSON here.")] = None,
    size: Annotated[Optional[str], typer.Option("--size", help="Resize (nearest) to WxH.")] = None,
) -> None:
    """Render an image's conditioning mask as a single-channel palette PNG."""
    from db.engine import session_scope
    from workbench.datasets import DatasetNotFound, get_dataset, get_image
    from workbench.masks import render_image_mask, save_legend, save_palette_png
    from workbench.schemes import SchemeError

    target = parse_size(size)
    guarded(check_output_file, out, "--out")
    if legend is not None:
        guarded(check_output_file, legend, "--legend")
    try:
        with session_scope(engine_of(ctx)) as session:
            image = get_image(session, get_dataset(session, dataset), image_id)
            rendered = render_image_mask(session, image.id, scheme, size=target)
    except (DatasetNotFound, LookupError, SchemeError) as exc:
        fail(str(exc).strip("'\""))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_palette_png(rendered, out)
    if legend is not None:
        save_legend(rendered, legend)
    unmapped = getattr(rendered, "unmapped", None)
    if unmapped:
        typer.echo(f"note: categories not in scheme {scheme!r} were left as background: "
                   f"{', '.join(sorted(unmapped))}", err=True)
    typer.echo(str(out))
