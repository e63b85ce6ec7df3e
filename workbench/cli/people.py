"""People commands: detect unlabelled people, list and decide flags (``people ...``)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from workbench.cli.common import CuratorOpt, actor_of, engine_of, fail, print_json, progress_hooks, settings_of

app = typer.Typer()
people_app = typer.Typer(help="Find images where not every person is labelled, and decide them.",
                         no_args_is_help=True)
app.add_typer(people_app, name="people")

DatasetOpt = Annotated[str, typer.Option("--dataset", help="Dataset name.")]
ImageOpt = Annotated[str, typer.Option("--image-id", help="Image file name relative to the images folder.")]
DETECT_JOB_KIND = "people-detect"


def detect_argv(dataset: str, detector: str, threshold: Optional[float] = None, batch_size: int = 8,
                limit: Optional[int] = None, model: Optional[str] = None, weights: Optional[str] = None,
                device: Optional[str] = None) -> list[str]:
    """The foreground ``people detect`` command line for these options (what a job runs)."""
    argv = ["people", "detect", "--dataset", dataset, "--detector", detector, "--batch-size", str(batch_size)]
    for flag, value in (("--threshold", threshold), ("--limit", limit), ("--model", model),
                        ("--weights", weights), ("--device", device)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


@people_app.command("detect")
def detect_cmd(
    ctx: typer.Context,
    dataset: DatasetOpt,
    detector: Annotated[str, typer.Option("--detector", help="grounding-dino, torchvision, opencv or annotations.")],
    threshold: Annotated[Optional[float], typer.Option(help="Flag images scoring at least this "
                                                       "(default: the detector's measured default).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch (committed together).")] = 8,
    limit: Annotated[Optional[int], typer.Option(help="Process at most this many new images.")] = None,
    model: Annotated[Optional[str], typer.Option(help="grounding-dino / torchvision: model registry name "
                                                 "(`models list`), hub id, architecture or local path.")] = None,
    weights: Annotated[Optional[str], typer.Option(help="torchvision: local state-dict file.")] = None,
    device: Annotated[Optional[str], typer.Option(help="grounding-dino / torchvision: auto, cpu, cuda.")] = None,
    background: Annotated[bool, typer.Option("--background", help="Run as a background job; print its id.")] = False,
) -> None:
    """Run a person detector over a dataset; images probably holding an unlabelled person are flagged.

    Resumable: images already processed with the same detector and settings are skipped.
    """
    from workbench.people.detectors import DETECTOR_NAMES

    if detector not in DETECTOR_NAMES:
        fail(f"--detector must be one of {', '.join(DETECTOR_NAMES)}, not {detector!r}")
    if batch_size < 1:
        fail("--batch-size must be at least 1")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        fail(f"--threshold must be between 0 and 1 (got {threshold})")
    argv = detect_argv(dataset, detector, threshold, batch_size, limit, model, weights, device)
    engine = engine_of(ctx)
    actor = actor_of(ctx, "run_jobs")
    if background:
        from workbench.jobs import start_job

        typer.echo(start_job(engine, settings_of(ctx), kind=DETECT_JOB_KIND, argv=argv, dataset=dataset,
                             details={"detector": detector}, user=actor.name))
        return
    from workbench.datasets import DatasetNotFound
    from workbench.people.detect import detect_people
    from workbench.people.detectors import DetectorError, make_detector

    options = {"model": model} if detector == "grounding-dino" else {}
    if detector == "torchvision":
        from workbench.people.torchvision_rcnn import ARCHITECTURES

        # --model: an architecture (its COCO weights from torchvision's cache) or a registry name / path
        options = {"weights_path": weights}
        if model in ARCHITECTURES:
            options["architecture"] = model
        elif model:
            options["weights_path"] = weights or model
    if detector in ("grounding-dino", "torchvision") and device:
        options["device"] = device
    try:
        built = make_detector(detector, **options)
        typer.echo(f"detector {detector} settings {built.settings_dict()}", err=True)
        with progress_hooks(f"people detect ({detector})", unit="img") as (progress, should_stop):
            result = detect_people(engine, dataset, built, threshold=threshold, batch_size=batch_size, limit=limit,
                                   progress=progress, should_stop=should_stop)
    except (DatasetNotFound, DetectorError) as exc:
        fail(_message(exc))
    print_json(result.to_dict())


@people_app.command("list")
def list_cmd(
    ctx: typer.Context,
    dataset: DatasetOpt,
    status: Annotated[Optional[str], typer.Option(help="pending, decided or skipped.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List flagged images, worst first."""
    from db.engine import session_scope
    from workbench.datasets import DatasetNotFound
    from workbench.people.queue import QueueError, list_flags

    try:
        with session_scope(engine_of(ctx)) as session:
            items = [item.to_dict() for item in list_flags(session, dataset, status)]
    except (DatasetNotFound, QueueError) as exc:
        fail(_message(exc))
    if as_json:
        for item in items:
            item.pop("history")
        print_json(items)
        return
    for item in items:
        decided = f"{item['decision']} by {item['curator']}" if item["status"] == "decided" else item["status"]
        conflict = "  CONFLICT" if item["conflict"] else ""
        typer.echo(f"{item['score']:.2f}  {item['image_id']:30s}  {decided}{conflict}")


def _message(exc: Exception) -> str:
    """An exception's own message (a LookupError's str() would quote it)."""
    return str(exc.args[0]) if exc.args else str(exc)


def _parse_region(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
        if len(values) != 4:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"--region must be x,y,w,h in pixels, not {text!r}")
    return values


@people_app.command("decide")
def decide_cmd(
    ctx: typer.Context,
    dataset: DatasetOpt,
    image_id: ImageOpt,
    decision: Annotated[str, typer.Option("--decision", help="ok (all labelled), exclude, or mask-region.")],
    curator: CuratorOpt = None,
    region: Annotated[Optional[list[str]], typer.Option("--region", help="mask-region: x,y,w,h of the "
                                                        "unlabelled person (repeatable).")] = None,
    note: Annotated[str, typer.Option(help="Why (kept with the decision).")] = "",
) -> None:
    """Decide a flagged image (it is flagged by hand first if no detector flagged it)."""
    curator = actor_of(ctx, "decide", curator).name
    from db.engine import session_scope
    from workbench.datasets import DatasetNotFound, get_dataset, get_image
    from workbench.people.queue import QueueError, decide, flag_image, item_for_image

    regions = [_parse_region(r) for r in region or []]
    try:
        with session_scope(engine_of(ctx)) as session:
            item = item_for_image(session, dataset, image_id)
            if item is None:
                image = get_image(session, get_dataset(session, dataset), image_id)
                flag_id = flag_image(session, image.id, curator, "decided from the command line")
            else:
                flag_id = item.flag_id
            result = decide(session, flag_id, curator, decision, regions=regions, note=note)
            data = {"outcome": result.outcome, **result.item.to_dict()}
    except (DatasetNotFound, QueueError, LookupError) as exc:
        fail(_message(exc))
    data.pop("history")
    print_json(data)


@people_app.command("flag")
def flag_cmd(ctx: typer.Context, dataset: DatasetOpt, image_id: ImageOpt, curator: CuratorOpt = None,
             note: Annotated[str, typer.Option(help="What you saw.")] = "") -> None:
    """Flag an image by hand: "someone is unlabelled here" (it joins the review queue)."""
    curator = actor_of(ctx, "decide", curator).name
    from db.engine import session_scope
    from workbench.datasets import DatasetNotFound, get_dataset, get_image
    from workbench.people.queue import QueueError, flag_image

    try:
        with session_scope(engine_of(ctx)) as session:
            image = get_image(session, get_dataset(session, dataset), image_id)
            typer.echo(flag_image(session, image.id, curator, note))
    except (DatasetNotFound, QueueError, LookupError) as exc:
        fail(_message(exc))


@people_app.command("undo")
def undo_cmd(ctx: typer.Context, dataset: DatasetOpt, curator: CuratorOpt = None) -> None:
    """Take back the curator's last decision or skip."""
    curator = actor_of(ctx, "decide", curator).name
    from db.engine import session_scope
    from workbench.datasets import DatasetNotFound
    from workbench.people.queue import QueueError, undo_last

    try:
        with session_scope(engine_of(ctx)) as session:
            item = undo_last(session, dataset, curator)
            typer.echo(f"{item.file_name}: back to {item.status}")
    except (DatasetNotFound, QueueError) as exc:
        fail(_message(exc))
