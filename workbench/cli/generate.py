"""Generation commands: try a trained ControlNet on a mask (and a pose) (``generate ...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from workbench.cli.common import (MAX_ID, MAX_SIDE, BackgroundOpt, RequestJsonOpt, engine_of, fail, print_json,
                                  run_with_progress, settings_of)

app = typer.Typer()
generate_app = typer.Typer(help="Generate images with trained ControlNets; list them; compare checkpoints.",
                           no_args_is_help=True)
app.add_typer(generate_app, name="generate")

KIND = "generate"


def _request(base: Optional[str], controlnet: Optional[list[str]], image_id: Optional[int], mask: Optional[Path],
             photo: Optional[Path], scheme: Optional[str], edit: Optional[list[str]], prompt: Optional[str],
             negative_prompt: str, seed: Optional[list[int]], steps: int, guidance: float, conditioning_scale: float,
             scheduler: str, resolution: Optional[int], pose_detector: Optional[str], pose_controlnet: Optional[str],
             pose_scale: float, device: str, request_json: Optional[str], segmenter: Optional[str] = None):
    """The request the options describe (or ``--request-json`` as is)."""
    from pydantic import ValidationError

    from workbench.generate import GenerateRequest
    from workbench.mask_edit import MaskEditError, parse_edit

    try:
        if request_json:
            return GenerateRequest.model_validate_json(request_json)
        if not base or not controlnet:
            fail("give --base (the Stable Diffusion model) and at least one --controlnet")
        sources = [name for name, value in (("--image-id", image_id), ("--mask", mask)) if value is not None]
        if len(sources) > 1 or (not sources and photo is None):
            fail("give the mask as exactly one of --image-id (a stored image), --mask (a mask PNG) or --photo alone "
                 "(its mask predicted by the cloth segmenter)")
        kind = "dataset" if image_id is not None else "file" if mask is not None else "photo"
        path = mask if mask is not None else photo if kind == "photo" else None
        mask_source = {"kind": kind, "image_id": image_id, "path": str(path) if path else None,
                       "photo": str(photo) if photo and kind == "file" else None, "scheme": scheme,
                       "segmenter": segmenter if kind == "photo" else None,
                       "edits": [parse_edit(e) for e in edit or []]}
        if (pose_detector is None) != (pose_controlnet is None):
            fail("pose control needs both --pose-detector (OpenPose weights) and --pose-controlnet")
        pose = ({"detector": pose_detector, "controlnet": pose_controlnet, "scale": pose_scale}
                if pose_detector else None)
        return GenerateRequest(base_model=base, controlnets=list(controlnet), mask=mask_source, prompt=prompt,
                               negative_prompt=negative_prompt, seeds=list(seed or [0]), steps=steps,
                               guidance=guidance, conditioning_scale=conditioning_scale, scheduler=scheduler,
                               resolution=resolution, pose=pose, device=device)
    except MaskEditError as exc:
        fail(str(exc))
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"{'.'.join(str(p) for p in first['loc']) or 'request'}: {first['msg']}")


@generate_app.command("run")
def run(
    ctx: typer.Context,
    base: Annotated[Optional[str], typer.Option(
        help="Base Stable Diffusion: registry name (sd15, tiny-sd ...), hub id, diffusers folder or "
             ".safetensors file.")] = None,
    controlnet: Annotated[Optional[list[str]], typer.Option(
        help="ControlNet: a checkpoint-N folder, a run's output folder, a registry name or any ControlNet "
             "folder (repeat to compare checkpoints).")] = None,
    image_id: Annotated[Optional[int], typer.Option(
        min=1, max=MAX_ID, help="Mask: this stored image's masks in the ControlNet's scheme.")] = None,
    mask: Annotated[Optional[Path], typer.Option(
        help="Mask: a label PNG (pixel value = class id) or one in the scheme's colours.")] = None,
    photo: Annotated[Optional[Path], typer.Option(
        help="A photo: its mask is predicted (alone) or it goes with --mask (for the pose).")] = None,
    segmenter: Annotated[Optional[str], typer.Option(
        help="The cloth segmenter of --photo alone: registry name (u2net-cloth-seg, segformer-clothes, "
             "tiny-segformer), SegFormer folder or hub id, or .onnx file.")] = None,
    scheme: Annotated[Optional[str], typer.Option(help="The mask scheme, for a ControlNet that names none.")] = None,
    edit: Annotated[Optional[list[str]], typer.Option(
        help="Mask edit (repeatable): 'swap 1 2', 'erase ellipse x0,y0,x1,y1', "
             "'paint rectangle 3 x0,y0,x1,y1' (fractions).")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="Prompt (default: the image's training prompt).")] = None,
    negative_prompt: Annotated[str, typer.Option(help="Negative prompt.")] = "",
    seed: Annotated[Optional[list[int]], typer.Option(min=0, max=MAX_ID, help="Seed (repeatable; default 0).")] = None,
    steps: Annotated[int, typer.Option(min=1, max=1000, help="Inference steps.")] = 20,
    guidance: Annotated[float, typer.Option(min=0, max=100, help="Classifier-free guidance scale.")] = 7.5,
    conditioning_scale: Annotated[float, typer.Option(min=0, max=10, help="The mask ControlNet's conditioning scale.")] = 1.0,
    scheduler: Annotated[str, typer.Option(help="unipc, ddim, euler-a or dpm++2m.")] = "unipc",
    resolution: Annotated[Optional[int], typer.Option(
        min=8, max=MAX_SIDE, help="Square size in pixels (default: the training resolution).")] = None,
    pose_detector: Annotated[Optional[str], typer.Option(
        help="OpenPose weights: registry name (openpose, tiny-openpose), hub id or folder.")] = None,
    pose_controlnet: Annotated[Optional[str], typer.Option(
        help="The OpenPose ControlNet: registry name (controlnet-openpose), hub id or folder.")] = None,
    pose_scale: Annotated[float, typer.Option(min=0, max=10, help="The pose ControlNet's conditioning scale.")] = 1.0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    request_json: RequestJsonOpt = None,
    background: BackgroundOpt = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the images' provenance as JSON.")] = False,
) -> None:
    """Generate every seed with every ControlNet; each image saved with its provenance in the store."""
    from workbench.generate import GenerateError, generate, generate_argv, resolve_controlnet

    request = _request(base, controlnet, image_id, mask, photo, scheme, edit, prompt, negative_prompt, seed, steps,
                       guidance, conditioning_scale, scheduler, resolution, pose_detector, pose_controlnet,
                       pose_scale, device, request_json, segmenter)
    settings, engine = settings_of(ctx), engine_of(ctx)
    if background:
        from workbench.jobs import start_job

        try:
            for item in request.controlnets:  # a wrong path fails here, not in the job's log
                resolve_controlnet(item)
        except GenerateError as exc:
            fail(str(exc))
        typer.echo(start_job(engine, settings, kind=KIND, argv=generate_argv(request),
                             details={"images": len(request.controlnets) * len(request.seeds)}))
        return
    results = run_with_progress("generating", "image", generate, engine, Path(settings.data_dir), request,
                                errors=GenerateError)
    if json_:
        _print_rows(engine, [r.id for r in results])
        return
    for result in results:
        typer.echo(f"{result.id}  {result.label}  seed {result.seed}  {result.seconds:.1f}s  {result.path}")


def _print_rows(engine, ids: list[int]) -> None:
    from db.engine import session_scope
    from db.generations import Generation
    from workbench.generate import provenance

    with session_scope(engine) as session:
        print_json([provenance(session.get(Generation, i)) for i in ids])


@generate_app.command("list")
def list_(ctx: typer.Context,
          job: Annotated[Optional[int], typer.Option(min=1, max=MAX_ID, help="Only the images of this job.")] = None,
          limit: Annotated[int, typer.Option(min=1, max=1_000_000, help="At most this many, newest first.")] = 50,
          json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Generated images, newest first, with their provenance."""
    from db.engine import session_scope
    from workbench.generate import list_generations, provenance
    from workbench.models import TINY_LABEL

    with session_scope(engine_of(ctx)) as session:
        rows = [provenance(r) for r in list_generations(session, job_id=job, limit=limit)]
    if json_:
        print_json(rows)
        return
    if not rows:
        typer.echo("no generated images")
    for row in rows:
        mark = f"  [{TINY_LABEL}]" if row["random_weights"] else ""
        typer.echo(f"{row['id']:>5}  step {row['checkpoint_step'] if row['checkpoint_step'] is not None else 'final'}"
                   f"  seed {row['seed']}  {row['path']}{mark}")


@generate_app.command("compare")
def compare(ctx: typer.Context, generation_id: int,
            json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The same mask + prompt + seed across checkpoints (side by side), by step."""
    from db.engine import session_scope
    from workbench.generate import GenerateError, provenance, side_by_side

    try:
        with session_scope(engine_of(ctx)) as session:
            rows = [provenance(r) for r in side_by_side(session, generation_id)]
    except GenerateError as exc:
        fail(str(exc))
    if json_:
        print_json(rows)
        return
    for row in rows:
        typer.echo(f"{row['id']:>5}  step {row['checkpoint_step'] if row['checkpoint_step'] is not None else 'final'}"
                   f"  {row['controlnet']}  {row['path']}")
