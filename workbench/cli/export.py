"""Export command: write the curated set in a trainer's format (``export``)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from workbench.cli.common import MAX_ID, actor_of, audit_launch, engine_of, fail, guarded, print_json, progress_hooks, settings_of
from workbench.guard import check_output_dir, loads_json, validation_problems

app = typer.Typer()


class Format(str, Enum):
    controlnet = "controlnet"
    imagefolder = "imagefolder"


class Repaired(str, Enum):
    include = "include"
    exclude = "exclude"


class Undecided(str, Enum):
    include = "include"
    exclude = "exclude"
    wait = "wait"


@app.command("export")
def export(
    ctx: typer.Context,
    dataset: Annotated[Optional[str], typer.Option(help="Dataset to export.")] = None,
    fmt: Annotated[Optional[Format], typer.Option(
        "--format", help="controlnet (prompt.json, source/, target/) or imagefolder "
                         "(metadata.jsonl for datasets.load_dataset).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Destination folder (must not exist "
                                                     "unless --overwrite).")] = None,
    resolution: Annotated[Optional[int], typer.Option(help="Short side of the output (default 512).")] = None,
    scheme: Annotated[Optional[str], typer.Option(help="Mask scheme (default body-parts).")] = None,
    recipe: Annotated[Optional[Path], typer.Option(
        help="Recipe JSON file (or a past export's manifest.json); options given here override it.")] = None,
    crop: Annotated[Optional[str], typer.Option(help="center or person (default center).")] = None,
    buckets: Annotated[Optional[bool], typer.Option("--buckets/--no-buckets",
                                                    help="Aspect buckets instead of squares.")] = None,
    target_format: Annotated[Optional[str], typer.Option(help="Photos as jpeg or png (default jpeg).")] = None,
    split: Annotated[Optional[str], typer.Option(help="all, train or validation (default all).")] = None,
    validation_fraction: Annotated[Optional[float], typer.Option(help="Share of the seeded "
                                                                      "validation split (default 0.1).")] = None,
    seed: Annotated[Optional[int], typer.Option(min=0, max=MAX_ID, help="Seed of the split and prompt mixing (default 0).")] = None,
    people: Annotated[Optional[str], typer.Option(help="People decisions: ignore, exclude or "
                                                       "crop (default exclude).")] = None,
    undecided: Annotated[Optional[Undecided], typer.Option(
        help="Flagged images no curator decided yet: include, exclude, or wait (refuse to export "
             "while any remain) (default exclude).")] = None,
    min_size: Annotated[Optional[int], typer.Option(help="Minimum short side of a photo, px.")] = None,
    require: Annotated[Optional[list[str]], typer.Option(
        help="Keep images with at least one of these categories (repeatable).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(
        help="Leave out images with any of these categories (repeatable).")] = None,
    reviewed_captions_only: Annotated[Optional[bool], typer.Option(
        "--reviewed-captions-only/--all-captions", help="Only images whose caption was reviewed.")] = None,
    caption_recipe: Annotated[Optional[str], typer.Option(help="Caption mixing recipe.")] = None,
    use_predicted_masks: Annotated[Optional[bool], typer.Option(
        "--use-predicted-masks/--real-masks-only",
        help="Images without real masks use predicted ones of the same scheme (`segment predict`).")] = None,
    predicted_source: Annotated[Optional[int], typer.Option(
        min=1, max=MAX_ID, help="Prediction source id to use (`segment sources`; default the newest of the scheme).")] = None,
    repaired: Annotated[Optional[Repaired], typer.Option(
        help="People repairs (`people repair`): include = repaired images go with their erased photo and "
             "added masks; exclude = repairs are not used (default exclude).")] = None,
    recipe_json: Annotated[Optional[str], typer.Option(hidden=True, help="The recipe as JSON "
                                                                         "(what jobs run).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing export folder.")] = False,
    workers: Annotated[Optional[int], typer.Option(min=1, max=1024, help="Worker processes (default every core).")] = None,
    background: Annotated[bool, typer.Option(help="Run as a background job; print its id.")] = False,
) -> None:
    """Export a dataset for training: masks, photos, prompts and a manifest."""
    from pydantic import ValidationError

    from workbench.datasets import DatasetNotFound
    from workbench.export import ExportError, ExportRecipe, export_argv, export_dataset, load_recipe

    values: dict[str, Any] = {}
    try:
        if recipe is not None:
            values.update(load_recipe(recipe))
        if recipe_json is not None:
            given_json = guarded(loads_json, recipe_json, "--recipe-json")
            if not isinstance(given_json, dict):
                fail(f"--recipe-json must be a JSON object of recipe keys, not {type(given_json).__name__}")
            values.update(given_json)
    except ExportError as exc:
        fail(str(exc))
    given = {"dataset": dataset, "format": fmt.value if fmt else None, "resolution": resolution,
             "scheme": scheme, "crop": crop, "buckets": buckets, "target_format": target_format,
             "split": split, "validation_fraction": validation_fraction, "seed": seed,
             "people": people, "undecided": undecided.value if undecided else None, "min_size": min_size, "require_categories": require or None,
             "exclude_categories": exclude or None, "reviewed_captions_only": reviewed_captions_only,
             "caption_recipe": caption_recipe, "use_predicted_masks": use_predicted_masks,
             "predicted_source": predicted_source, "repaired": repaired.value if repaired else None}
    if scheme is not None and values.get("scheme") != scheme:
        values.pop("scheme_version", None)  # a version pinned for another scheme means nothing here
    values.update({k: v for k, v in given.items() if v is not None})
    if not values.get("dataset"):
        fail("name the dataset: --dataset NAME (or a --recipe file that names it)")
    if out is None:
        fail("name the destination folder: --out DIR")
    guarded(check_output_dir, out, "--out")
    try:
        parsed = ExportRecipe(**values)
    except ValidationError as exc:
        fail(f"bad export recipe: {validation_problems(exc, ExportRecipe)}")

    actor = actor_of(ctx, "export")
    if background:
        from workbench.jobs import start_job

        job_id = start_job(engine_of(ctx), settings_of(ctx), kind="export",
                           argv=export_argv(parsed, out, overwrite=overwrite, workers=workers),
                           dataset=parsed.dataset, details={"out_dir": str(out.expanduser().resolve())},
                           user=actor.name, audit="export")
        typer.echo(job_id)
        return

    from workbench.jobs import current_job

    job = current_job()
    try:
        with progress_hooks(f"export {parsed.dataset}", unit="img") as (progress, should_stop):
            result = export_dataset(engine_of(ctx), settings_of(ctx), parsed, out,
                                    overwrite=overwrite, workers=workers, progress=progress,
                                    should_stop=should_stop,
                                    job_id=job.job_id if job is not None else None)
    except (ExportError, DatasetNotFound) as exc:
        fail(str(exc))
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if job is not None:
        job.update_details(export_id=result.export_id, out_dir=str(result.out_dir),
                           manifest_sha256=result.manifest_sha256)
    audit_launch(ctx, actor.name, "export", "export", result.export_id, dataset=parsed.dataset,
                 after={"out_dir": str(result.out_dir), "format": parsed.format,
                        "manifest_sha256": result.manifest_sha256})
    print_json(result.to_dict())
