"""People commands: detect unlabelled people, list and decide flags (``people ...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from workbench.cli.common import (
    MAX_ID, BackgroundOpt, CuratorOpt, actor_of, engine_of, fail, fail_with_fix, guarded, print_json,
    progress_hooks, settings_of, stage_hooks,
)

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
    limit: Annotated[Optional[int], typer.Option(min=1, max=MAX_ID, help="Process at most this many new images.")] = None,
    model: Annotated[Optional[str], typer.Option(help="grounding-dino / torchvision: model registry name "
                                                 "(`models list`), hub id, architecture or local path.")] = None,
    weights: Annotated[Optional[str], typer.Option(help="torchvision: local state-dict file.")] = None,
    device: Annotated[Optional[str], typer.Option(help="grounding-dino / torchvision: auto, cpu, cuda.")] = None,
    background: BackgroundOpt = False,
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
        repaired = f"  repaired ({item['repairs']})" if item["repairs"] else ""
        typer.echo(f"{item['score']:.2f}  {item['image_id']:30s}  {decided}{conflict}{repaired}")


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
    from db.engine import with_retries
    from workbench.datasets import DatasetNotFound, get_dataset, get_image
    from workbench.people.queue import QueueError, decide, flag_image, item_for_image

    regions = [_parse_region(r) for r in region or []]

    def work(session) -> dict:
        item = item_for_image(session, dataset, image_id)
        if item is None:
            image = get_image(session, get_dataset(session, dataset), image_id)
            flag_id = flag_image(session, image.id, curator, "decided from the command line")
        else:
            flag_id = item.flag_id
        result = decide(session, flag_id, curator, decision, regions=regions, note=note)
        return {"outcome": result.outcome, **result.item.to_dict()}

    try:
        data = with_retries(engine_of(ctx), work)
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
    from db.engine import with_retries
    from workbench.datasets import DatasetNotFound
    from workbench.people.queue import QueueError, undo_last

    try:
        item = with_retries(engine_of(ctx), lambda session: undo_last(session, dataset, curator))
        typer.echo(f"{item.file_name}: back to {item.status}")
    except (DatasetNotFound, QueueError) as exc:
        fail(_message(exc))


# -- repairs ------------------------------------------------------------------------------------------
SEGMENTERS = {"sam": "sam", "cloth": "cloth-segmenter", "cloth-segmenter": "cloth-segmenter", "manual": "manual"}


def _repair_box(session, dataset: str, image_id: str, box: Optional[str], proposal: bool) -> tuple:
    """The box of a repair: ``--box`` as given, or the detector proposal (``--proposal``)."""
    from workbench.repair import parse_box, propose_box

    if (box is None) == (not proposal):
        fail("give the box around the unlabelled person: --box x0,y0,x1,y1, or --proposal (a detector's)")
    if box is not None:
        return parse_box(box)
    proposed = propose_box(session, dataset, image_id)
    if proposed is None:
        fail(f"no detector proposes an unlabelled person in {image_id}; give --box x0,y0,x1,y1")
    typer.echo(f"box {','.join(map(str, proposed[0]))} from the {proposed[1]}", err=True)
    return proposed[0]


@people_app.command("repair")
def repair_cmd(
    ctx: typer.Context,
    dataset: DatasetOpt,
    image_id: Annotated[Optional[str], typer.Option("--image-id", help="Image file name relative to the images "
                                                    "folder (not with --from-preview).")] = None,
    curator: CuratorOpt = None,
    box: Annotated[Optional[str], typer.Option("--box", help="x0,y0,x1,y1 around the unlabelled person "
                                               "(pixels).")] = None,
    proposal: Annotated[bool, typer.Option("--proposal", help="Use the best detector proposal as the box.")] = False,
    erase: Annotated[bool, typer.Option("--erase", help="Erase the person from the photo (a new file).")] = False,
    method: Annotated[str, typer.Option(help="--erase: fill (OpenCV, no model) or inpaint (diffusers).")] = "fill",
    label: Annotated[bool, typer.Option("--label", help="Label the person: new garment masks.")] = False,
    category: Annotated[Optional[str], typer.Option(help="--label: garment category of the segment (name or short "
                                                    "name; the cloth segmenter names its own when omitted).")] = None,
    segmenter: Annotated[str, typer.Option(help="--label: sam, cloth (the cloth segmenter) or manual "
                                           "(the box).")] = "sam",
    model: Annotated[Optional[str], typer.Option(help="Model registry name, hub id or path (default: sd15-inpaint for "
                                                 "inpaint, sam-vit-base for sam, u2net-cloth-seg for cloth).")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="--method inpaint: what to paint in the box.")] = None,
    negative_prompt: Annotated[Optional[str], typer.Option(help="--method inpaint: what not to paint.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="--method inpaint: denoising steps.")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="--method inpaint: guidance scale.")] = None,
    seed: Annotated[int, typer.Option(help="--method inpaint: seed.")] = 0,
    resolution: Annotated[Optional[int], typer.Option(help="--method inpaint: long side the photo is inpainted "
                                                      "at.")] = None,
    grow: Annotated[Optional[int], typer.Option(help="--method inpaint: pixels the box is grown by for the "
                                                "pipeline's mask.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    preview_only: Annotated[bool, typer.Option("--preview-only", help="Make the repair and write it as a preview "
                                               "folder (--out); store nothing.")] = False,
    out: Annotated[Optional[str], typer.Option("--out", help="--preview-only: the preview folder (default: a new "
                                               "one under data/repairs/previews).")] = None,
    from_preview: Annotated[Optional[str], typer.Option("--from-preview", help="Store the repair of a preview "
                                                        "folder exactly as it was made.")] = None,
) -> None:
    """Repair a partially-labelled image: erase the unlabelled person, or label them (stored apart from
    the dataset's own masks; the export uses repairs with --repaired include).

    In one step, or in two: --preview-only --out FOLDER makes it (what the People page's preview job
    runs), --from-preview FOLDER stores it."""
    from pydantic import ValidationError

    from db.engine import session_scope
    from workbench.datasets import DatasetNotFound
    from workbench.guard import check_output_dir, validation_problems
    from workbench.repair import ERASE_METHODS, InpaintSettings, RepairError
    from workbench.repair_preview import (
        PreviewRequest, make_preview, new_preview_folder, read_preview, save_preview, write_preview,
    )

    curator = actor_of(ctx, "decide", curator).name
    engine, settings = engine_of(ctx), settings_of(ctx)
    if from_preview is not None:
        if image_id or box or proposal or erase or label or preview_only:
            fail("--from-preview stores the preview as it was made: give no --image-id, --box, --proposal, --erase, "
                 "--label or --preview-only with it")
        try:
            preview = read_preview(Path(from_preview))
            if preview.request.dataset != dataset:
                fail(f"the preview in {from_preview} repairs dataset {preview.request.dataset!r}, not {dataset!r}")
            with session_scope(engine) as session:
                data = save_preview(session, settings, preview, curator).to_dict()
        except (DatasetNotFound, RepairError) as exc:
            fail_with_fix(exc)
        print_json(data)
        return
    if image_id is None:
        fail("give the image to repair: --image-id FILE (or --from-preview FOLDER)")
    if erase == label:
        fail("choose one repair: --erase (paint the person out) or --label (add their garment masks)")
    if erase and method not in ERASE_METHODS:
        fail(f"--method must be one of {', '.join(ERASE_METHODS)}, not {method!r}")
    if label and segmenter not in SEGMENTERS:
        fail(f"--segmenter must be sam, cloth or manual, not {segmenter!r}")
    if out is not None and not preview_only:
        fail("--out is where --preview-only writes the preview: add --preview-only (or drop --out)")
    folder = guarded(check_output_dir, out, "--out") if out is not None else None
    given = {"prompt": prompt, "negative_prompt": negative_prompt, "steps": steps, "guidance": guidance,
             "resolution": resolution, "grow": grow}
    try:
        inpaint = InpaintSettings(seed=seed, **{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        fail(f"inpainting option {validation_problems(exc, InpaintSettings)}")
    try:
        with session_scope(engine) as session:
            request = PreviewRequest(dataset=dataset, image=image_id, action="erase" if erase else "label",
                                     box=_repair_box(session, dataset, image_id, box, proposal), method=method,
                                     source=SEGMENTERS.get(segmenter, segmenter), category=category, model=model,
                                     inpaint=inpaint, device=device)
            with stage_hooks(f"people repair ({request.tool})") as (stage, should_stop):
                preview = make_preview(session, request, stage=stage, should_stop=should_stop)
            if preview_only:
                written = write_preview(folder or new_preview_folder(settings), preview)
                data = {"preview": str(written), "action": request.action, "tool": request.tool,
                        "box": list(preview.box), "model": request.used_model, "made": preview.summary()}
            else:
                data = save_preview(session, settings, preview, curator).to_dict()
    except (DatasetNotFound, RepairError) as exc:
        fail_with_fix(exc)
    print_json(data)


@people_app.command("repairs")
def repairs_cmd(
    ctx: typer.Context,
    dataset: DatasetOpt,
    image_id: Annotated[Optional[str], typer.Option("--image-id", help="Only this image's repairs.")] = None,
    removed: Annotated[bool, typer.Option("--removed", help="Also list removed repairs.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the dataset's repairs (erased photos, added masks), oldest first."""
    from db.engine import session_scope
    from workbench.datasets import DatasetNotFound
    from workbench.repair import RepairError, list_repairs

    try:
        with session_scope(engine_of(ctx)) as session:
            rows = [r.to_dict() for r in list_repairs(session, dataset, image_id, include_removed=removed)]
    except (DatasetNotFound, RepairError) as exc:
        fail(_message(exc))
    if as_json:
        print_json(rows)
        return
    for r in rows:
        what = r["photo_path"] if r["action"] == "erase" else ", ".join(m["category"] for m in r["masks"])
        gone = f"  REMOVED by {r['removed_by']}" if r["removed_at"] else ""
        gone += "  (random weights: tiny test model)" if r["random_weights"] else ""
        typer.echo(f"#{r['id']:<5} {r['image_id']:30s} {r['action']:5s} {r['source']:15s} {r['curator']:12s} "
                   f"box {','.join(map(str, r['box']))}  {what}{gone}")


@people_app.command("unrepair")
def unrepair_cmd(
    ctx: typer.Context,
    dataset: DatasetOpt,
    curator: CuratorOpt = None,
    repair: Annotated[Optional[int], typer.Option("--repair", help="The repair's id (`people repairs`); "
                                                  "default: the curator's latest.")] = None,
) -> None:
    """Take a repair back (kept on record as removed, by whom and when)."""
    from db.engine import session_scope
    from workbench.datasets import DatasetNotFound
    from workbench.repair import RepairError, remove_repair, undo_last_repair

    curator = actor_of(ctx, "decide", curator).name
    try:
        with session_scope(engine_of(ctx)) as session:
            info = remove_repair(session, repair, curator, dataset) if repair is not None else \
                undo_last_repair(session, dataset, curator)
            typer.echo(f"repair #{info.id} of {info.file_name} ({info.action}) removed by {info.removed_by}")
    except (DatasetNotFound, RepairError) as exc:
        fail(_message(exc))
