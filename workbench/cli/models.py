"""Model registry commands: list, add, remove, check, and write the tiny test models (``models ...``)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from workbench.cli.common import BackgroundOpt, engine_of, fail, print_json, progress_hooks, settings_of

app = typer.Typer()
models_app = typer.Typer(help="The model registry: every model the workbench uses, where it is, whether it is ready.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")

CHECK_JOB_KIND = "models-check"
TINY_JOB_KIND = "models-tiny"
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@models_app.command("list")
def list_cmd(ctx: typer.Context,
             kind: Annotated[Optional[str], typer.Option("--kind", help="Only this kind (sd, clip, caption ...).")] = None,
             as_json: JsonOpt = False) -> None:
    """Every model by kind: state (ready, unchecked, missing, broken), size, location, hub id and fix."""
    from db.engine import session_scope
    from workbench.models import KINDS, list_models, status_rows

    if kind is not None and kind not in KINDS:
        fail(f"unknown --kind {kind!r}; choose from {', '.join(KINDS)}")
    with session_scope(engine_of(ctx)) as session:
        found = list_models(session, settings_of(ctx), kind)
    if as_json:
        print_json([m.to_dict() for m in found])
        return
    for row in status_rows(found):
        size = f"{row['size_mb']} MB" if row["size_mb"] is not None else "-"
        typer.echo(f"{row['kind']}\t{row['name']}\t{row['state']}\t{size}\t{row['location'] or row['hub_id']}")
        if row["fix"]:
            typer.echo(f"\tfix: {row['fix']}")


@models_app.command("add")
def add_cmd(ctx: typer.Context,
            name: Annotated[str, typer.Argument(help="Registry name (letters, digits, . _ -).")],
            source: Annotated[str, typer.Argument(help="A local folder or file, or with --hub a hub id (or open_clip spec).")],
            kind: Annotated[Optional[str], typer.Option("--kind", help="Model kind; read from the files when omitted.")] = None,
            hub: Annotated[bool, typer.Option("--hub", help="SOURCE is a hub id (or an open_clip ARCH/TAG), not a path.")] = False,
            ) -> None:
    """Register a folder or file you have (or a hub id) under NAME."""
    from db.engine import session_scope
    from workbench.models import ModelLookupError, add_model

    if hub and kind is None:
        fail("--hub needs --kind (sd, controlnet, clip, caption, kosmos2, grounding-dino, segmenter, openpose)")
    try:
        with session_scope(engine_of(ctx)) as session:
            spec = add_model(session, name, path=None if hub else source, hub_id=source if hub else None, kind=kind)
    except ModelLookupError as exc:
        fail(str(exc))
    typer.echo(f"{spec.name}: {spec.kind} at {spec.path or spec.hub_id}")


@models_app.command("remove")
def remove_cmd(ctx: typer.Context, name: Annotated[str, typer.Argument(help="An added model's name.")]) -> None:
    """Forget a model you added (its files stay where they are)."""
    from db.engine import session_scope
    from workbench.models import ModelLookupError, remove_model

    try:
        with session_scope(engine_of(ctx)) as session:
            remove_model(session, name)
    except ModelLookupError as exc:
        fail(str(exc))
    typer.echo(f"{name} removed from the registry")


@models_app.command("check")
def check_cmd(ctx: typer.Context,
              names: Annotated[Optional[list[str]], typer.Argument(help="Only these models (default: all).")] = None,
              kind: Annotated[Optional[str], typer.Option("--kind", help="Only models of this kind.")] = None,
              as_json: JsonOpt = False, background: BackgroundOpt = False) -> None:
    """Load each model once (on the CPU, never downloading) and record ready / missing / broken with the fix."""
    from workbench.models import KINDS

    if kind is not None and kind not in KINDS:
        fail(f"unknown --kind {kind!r}; choose from {', '.join(KINDS)}")
    engine, settings = engine_of(ctx), settings_of(ctx)
    if background:
        from workbench.jobs import start_job

        argv = ["models", "check", *(names or []), *(["--kind", kind] if kind else [])]
        typer.echo(start_job(engine, settings, kind=CHECK_JOB_KIND, argv=argv, details={"models": names or "all"}))
        return
    from workbench.models_check import check_models

    try:
        with progress_hooks("models check", unit="model") as (progress, should_stop):
            results = check_models(engine, settings, names or None, kind, progress=progress, should_stop=should_stop)
    except LookupError as exc:
        fail(str(exc))
    _print_results(results, as_json)


def _print_results(results: list[dict], as_json: bool) -> None:
    if as_json:
        print_json(results)
        return
    for r in results:
        typer.echo(f"{r['kind']}\t{r['name']}\t{r['state']}\t{r['reason']}" + (f"\n\tfix: {r['fix']}" if r["fix"] else ""))


@models_app.command("tiny")
def tiny_cmd(ctx: typer.Context,
             only: Annotated[Optional[list[str]], typer.Option("--only", help="Only these tiny models (tiny-sd ...).")] = None,
             check: Annotated[bool, typer.Option("--check/--no-check", help="Load each once afterwards.")] = True,
             as_json: JsonOpt = False, background: BackgroundOpt = False) -> None:
    """Write tiny random-weight test models of every kind into the models folder and register them.

    Their output is noise (labelled "random weights" wherever it shows): they let every step run
    on a laptop in minutes, not make anything good.
    """
    engine, settings = engine_of(ctx), settings_of(ctx)
    if background:
        from workbench.jobs import start_job

        argv = ["models", "tiny", *[a for n in only or [] for a in ("--only", n)], *([] if check else ["--no-check"])]
        typer.echo(start_job(engine, settings, kind=TINY_JOB_KIND, argv=argv, details={"models": only or "all"}))
        return
    from db.engine import session_scope
    from workbench.models import add_model
    from workbench.tiny import TINY_MODELS, write_tiny_models

    unknown = [n for n in only or [] if n not in TINY_MODELS]
    if unknown:
        fail(f"unknown tiny model {', '.join(unknown)}; choose from {', '.join(TINY_MODELS)}")
    with progress_hooks("tiny models", unit="model") as (progress, should_stop):
        written = write_tiny_models(settings.models_dir, progress=progress, names=only or None)
    with session_scope(engine) as session:
        for name, folder in written.items():
            add_model(session, name, path=folder, kind=TINY_MODELS[name], tiny=True)
    typer.echo(f"{len(written)} tiny models written to {settings.models_dir} (random weights: for trying the "
               "pipeline, not for results)", err=as_json)
    if check:
        from workbench.models_check import check_models

        _print_results(check_models(engine, settings, list(written)), as_json)
