"""Segmenter commands: train, predict and evaluate cloth segmenters (``segment ...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from workbench.cli.common import engine_of, fail, guarded, print_json, progress_hooks, settings_of
from workbench.guard import check_output_dir
from workbench.cli.jobs import JobArg, resume_or_fail, run_trainer

app = typer.Typer()
segment_app = typer.Typer(help="Cloth segmenters: train SegFormer, predict masks, score them against real masks.",
                          no_args_is_help=True)
app.add_typer(segment_app, name="segment")

ModelOpt = Annotated[str, typer.Option(
    "--model", help="A segmenter of the model registry (`models list`: u2net-cloth-seg, segformer-clothes, "
                    "tiny-segformer ...), u2net-cloth:PATH (the public cloth model's ONNX), a SegFormer folder "
                    "(a training run's output_dir or checkpoint-<step>/model) or a hub id.")]
ConfigOpt = Annotated[Path, typer.Option("--config", help="YAML or JSON segmenter config (keys: train/segmenter.py).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: key=value (repeatable).")]
ResumeOpt = Annotated[Optional[str], typer.Option("--resume-from-checkpoint", help="'latest' or a checkpoint folder.")]
BackgroundOpt = Annotated[bool, typer.Option(help="Run as a background job; print its id.")]


def _overrides(values: Optional[list[str]], resume: Optional[str]) -> list[str]:
    return list(values or []) + ([f"resume_from_checkpoint={resume}"] if resume else [])


@segment_app.command("train")
def train(ctx: typer.Context, config: ConfigOpt, set_: SetOpt = None, resume_from_checkpoint: ResumeOpt = None,
          background: BackgroundOpt = False) -> None:
    """Train a SegFormer segmenter (foreground, or a background job with --background)."""
    from train.config import ConfigError
    from train.segmenter import load_segmenter_config

    overrides = _overrides(set_, resume_from_checkpoint)
    try:
        cfg = load_segmenter_config(config, overrides)
    except ConfigError as exc:
        fail(str(exc))
    if background:
        from workbench.segment.jobs import start_training_job

        typer.echo(start_training_job(engine_of(ctx), settings_of(ctx), config, overrides))
        return
    from train.segmenter import train as run_training

    if cfg.dataset and not cfg.db_url:
        cfg.db_url = settings_of(ctx).database_url  # the store this command was pointed at (--db)
    result = run_trainer(run_training, cfg)
    miou = (result.last_eval or {}).get("miou")
    typer.echo(f"trained {result.global_step} steps; segmenter in {result.output_dir}; validation mIoU {miou}; "
               f"last checkpoint {result.last_checkpoint}")


@segment_app.command("resume")
def resume(ctx: typer.Context, job_id: JobArg) -> None:
    """Start a stopped or failed segmenter training job again from its latest checkpoint; prints the new id."""
    typer.echo(resume_or_fail(ctx, job_id, ("--resume-from-checkpoint=latest",)))


@segment_app.command("predict")
def predict(
    ctx: typer.Context,
    model: ModelOpt = "u2net-cloth-seg",
    dataset: Annotated[Optional[str], typer.Option(help="Predict for this dataset's images (into the store).")] = None,
    split: Annotated[Optional[str], typer.Option(help="Only images of this split (e.g. test).")] = None,
    without_masks: Annotated[bool, typer.Option("--without-masks", help="Only images with no real masks.")] = False,
    folder: Annotated[Optional[Path], typer.Option(help="Or a folder of photos (masks written to --out).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Where --folder's masks go (palette PNGs + legend.json).")] = None,
    scheme: Annotated[Optional[str], typer.Option(help="Scheme of the stored masks (default: the model's).")] = None,
    checkpoint: Annotated[str, typer.Option(help="Checkpoint name recorded with the source.")] = "",
    batch_size: Annotated[int, typer.Option(min=1, help="Photos per forward pass.")] = 8,
    limit: Annotated[Optional[int], typer.Option(min=1, help="At most this many images.")] = None,
    background: BackgroundOpt = False,
) -> None:
    """Predict masks for a dataset (stored apart from real annotations) or a folder; resumes where it stopped."""
    from workbench.datasets import DatasetNotFound
    from workbench.segment.loaders import SegmentError
    from workbench.segment.predict import open_segmenter
    from workbench.segment.store import predict_dataset, predict_folder

    if (dataset is None) == (folder is None):
        fail("name what to predict: --dataset NAME or --folder DIR (with --out DIR)")
    if folder is not None and out is None:
        fail("--folder needs --out DIR for the masks")
    if folder is not None and not folder.is_dir():
        fail(f"--folder {folder} is not a folder of photos")
    if out is not None:
        guarded(check_output_dir, out, "--out")
    if background:
        from workbench.segment.jobs import start_prediction_job

        typer.echo(start_prediction_job(engine_of(ctx), settings_of(ctx), model, dataset=dataset, split=split,
                                        without_masks=without_masks, folder=folder, out=out, scheme=scheme,
                                        checkpoint=checkpoint, batch_size=batch_size, limit=limit))
        return
    try:
        segmenter = open_segmenter(model, batch_size=batch_size)
        with progress_hooks(f"segment {dataset or folder}", unit="img") as (progress, should_stop):
            if dataset is not None:
                summary = predict_dataset(engine_of(ctx), dataset, segmenter, scheme=scheme, split=split,
                                          only_without_masks=without_masks, checkpoint=checkpoint,
                                          batch_size=batch_size, limit=limit, progress=progress,
                                          should_stop=should_stop)
            else:
                summary = predict_folder(folder, out, segmenter, scheme=scheme, batch_size=batch_size,
                                         progress=progress, should_stop=should_stop)
    except (SegmentError, DatasetNotFound) as exc:
        fail(str(exc))
    print_json(summary.as_dict())


@segment_app.command("evaluate")
def evaluate(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="Dataset whose real masks are the truth.")],
    model: ModelOpt = "u2net-cloth-seg",
    scheme: Annotated[Optional[str], typer.Option(help="Scheme to score in (default: the model's).")] = None,
    split: Annotated[Optional[str], typer.Option(help="Only images of this split.")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="At most this many images.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Per-class IoU and mIoU of a segmenter against a dataset's real masks."""
    from workbench.datasets import DatasetNotFound
    from workbench.segment.loaders import SegmentError
    from workbench.segment.predict import open_segmenter
    from workbench.segment.scoring import score_segmenter

    try:
        segmenter = open_segmenter(model, batch_size=batch_size)
        with progress_hooks(f"evaluate {dataset}", unit="img") as (progress, _stop):
            report = score_segmenter(engine_of(ctx), dataset, segmenter, scheme=scheme, split=split, limit=limit,
                                     batch_size=batch_size, progress=progress)
    except (SegmentError, DatasetNotFound) as exc:
        fail(str(exc))
    if json_:
        print_json(report)
        return
    typer.echo(f"{report['images']} images, scheme {report['scheme']}: mIoU {report['miou']}")
    for name, value in report["iou"].items():
        typer.echo(f"  {name:<24} {'-' if value is None else f'{value:.4f}'}")


@segment_app.command("sources")
def sources(ctx: typer.Context, dataset: Annotated[str, typer.Option(help="Dataset.")],
            json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Prediction sources of a dataset (model, checkpoint, scheme) and how many images each predicted."""
    from db.engine import session_scope
    from workbench.datasets import DatasetNotFound, get_dataset
    from workbench.segment.store import list_sources, prediction_counts, source_label

    try:
        with session_scope(engine_of(ctx)) as session:
            found = get_dataset(session, dataset)
            counts = prediction_counts(session, found.id)
            rows = [{"id": s.id, "label": source_label(s), "model": s.model, "checkpoint": s.checkpoint,
                     "scheme": s.scheme, "scheme_version": s.scheme_version, "images": counts.get(s.id, 0)}
                    for s in list_sources(session, found.id)]
    except DatasetNotFound as exc:
        fail(str(exc))
    if json_:
        print_json(rows)
        return
    for row in rows or [{"id": "-", "label": "no predicted masks yet", "images": 0}]:
        typer.echo(f"{row['id']:>4}  {row['images']:>6} images  {row['label']}")
