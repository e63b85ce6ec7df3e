"""Controllability evaluation of a ControlNet checkpoint (``evaluate ...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from workbench.cli.common import (MAX_ID, MAX_SIDE, BackgroundOpt, RequestJsonOpt, engine_of, fail, print_json,
                                  run_with_progress, settings_of)

app = typer.Typer()


@app.command("evaluate")
def evaluate_command(
    ctx: typer.Context,
    checkpoint: Annotated[Optional[str], typer.Option(
        help="A training run's checkpoint-N folder, its output folder, or a ControlNet folder.")] = None,
    split: Annotated[str, typer.Option(help="The export's split whose masks and prompts are used.")] = "validation",
    segmenter: Annotated[str, typer.Option(
        help="The judge: a SegFormer folder or hub id, or u2net-cloth[:PATH].")] = "u2net-cloth",
    per_mask: Annotated[int, typer.Option(min=1, max=1000, help="Images generated per mask (fixed seeds).")] = 1,
    seed: Annotated[int, typer.Option(min=0, max=MAX_ID, help="First seed (then seed+1, ...).")] = 0,
    steps: Annotated[int, typer.Option(min=1, max=1000, help="Inference steps (protocol: 20).")] = 20,
    guidance: Annotated[float, typer.Option(min=0, max=100, help="Guidance scale (protocol: 7.5).")] = 7.5,
    scheduler: Annotated[str, typer.Option(help="unipc (protocol), ddim, euler-a or dpm++2m.")] = "unipc",
    resolution: Annotated[int, typer.Option(min=8, max=MAX_SIDE, help="Square size in pixels (protocol: 512).")] = 512,
    base: Annotated[Optional[str], typer.Option(help="Base model (default: the one it was trained on).")] = None,
    clip_model: Annotated[Optional[str], typer.Option(
        help="open_clip model for the CLIP score (registry name, ARCH/TAG or folder); none: skipped.")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, max=MAX_ID, help="At most this many masks.")] = None,
    worst: Annotated[int, typer.Option(min=0, max=1000, help="Worst cases kept as images.")] = 4,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    request_json: RequestJsonOpt = None,
    background: BackgroundOpt = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Generate from the export's masks, segment the images, score mIoU against the masks; store it."""
    from pydantic import ValidationError

    from workbench.evaluate import (EvaluateError, EvaluateRequest, evaluate, evaluation_target, start_evaluation,
                                    summary)
    from workbench.progress import Cancelled

    try:
        if request_json:
            request = EvaluateRequest.model_validate_json(request_json)
        else:
            if not checkpoint:
                fail("give --checkpoint (a training run's checkpoint-N folder)")
            request = EvaluateRequest(checkpoint=checkpoint, split=split, segmenter=segmenter, per_mask=per_mask,
                                      seed=seed, steps=steps, guidance=guidance, scheduler=scheduler,
                                      resolution=resolution, base_model=base, clip_model=clip_model, limit=limit,
                                      worst=worst, device=device)
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"{'.'.join(str(p) for p in first['loc']) or 'request'}: {first['msg']}")
    settings, engine = settings_of(ctx), engine_of(ctx)
    try:
        target = evaluation_target(request)  # a wrong checkpoint or export fails here, not in a job's log
    except EvaluateError as exc:
        fail(str(exc))
    if background:
        typer.echo(start_evaluation(engine, settings, request, target))
        return
    try:
        row = run_with_progress("evaluating", "image", evaluate, engine, Path(settings.data_dir), request,
                                errors=EvaluateError)
    except Cancelled:
        typer.echo("stopped: nothing stored")
        raise typer.Exit(1)
    if json_:
        print_json(summary(row))
        return
    ceiling = f"{row.ceiling_miou:.3f}" if row.ceiling_miou is not None else "n/a"
    clip = f"{row.clip_score:.2f}" if row.clip_score is not None else "skipped"
    typer.echo(f"evaluation {row.id}: mIoU {row.miou:.3f} (ceiling {ceiling}) over {row.images} images of "
               f"{row.masks} masks; CLIP score {clip}")
    for name, value in row.iou.items():
        typer.echo(f"  {name:<24} {'n/a' if value is None else f'{value:.3f}'}")
    for note in row.notes:
        typer.echo(f"note: {note}")
