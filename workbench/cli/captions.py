"""Caption commands: run captioners, list captions, mix training prompts (``captions ...``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from workbench.cli.common import (MAX_ID, CuratorOpt, actor_of, engine_of, fail, guarded, print_json, progress_hooks,
                                  settings_of)
from workbench.guard import check_output_file, validation_problems

app = typer.Typer()
captions_app = typer.Typer(help="Captions: generate, list, review state, and mix into training prompts.",
                           no_args_is_help=True)
app.add_typer(captions_app, name="captions")

CAPTIONER_HELP = "dataset | clip-fast | clip-classic | clip-best | clip-negative | blip | kosmos2 (repeat to run several CLIP modes over one pass of image features)."


@captions_app.command("run")
def run_cmd(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset name.")],
    captioner: Annotated[list[str], typer.Option("--captioner", help=CAPTIONER_HELP)],
    model: Annotated[Optional[str], typer.Option("--model", help="Model registry name (`models list`), hub id or local "
                                                 "folder (CLIP model for clip-*).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
    caption_model: Annotated[Optional[str], typer.Option("--caption-model", help="clip-*: blip-base, blip-large, blip2, git, a registry name, hub id or folder.")] = None,
    vocabulary: Annotated[Optional[str], typer.Option("--vocabulary", help="clip-*: art, fashion or both.")] = None,
    data_path: Annotated[Optional[str], typer.Option("--data-path", help="clip-*: folder of label lists.")] = None,
    max_flavors: Annotated[Optional[int], typer.Option("--max-flavors", min=1, max=10_000)] = None,
    low_vram: Annotated[bool, typer.Option("--low-vram", help="clip-*: offload models, smaller chunks.")] = False,
    prefix: Annotated[Optional[str], typer.Option("--prefix", help="blip: conditional caption prefix.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", min=1, max=4096, help="blip / kosmos2.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda:0 ...")] = None,
    symbol_style: Annotated[Optional[str], typer.Option("--symbol-style", help="dataset: plain, angle, square, weight.")] = None,
    trigger_word: Annotated[Optional[str], typer.Option("--trigger-word", help="dataset: a leading trigger word.")] = None,
    include_parts: Annotated[bool, typer.Option("--include-parts", help="dataset: also garment parts and decorations.")] = False,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, max=MAX_ID, help="At most this many images (testing a setting).")] = None,
    background: Annotated[bool, typer.Option("--background", help="Run as a background job; prints its id.")] = False,
) -> None:
    """Caption a dataset's images (resumable: images done with the same model and settings are skipped)."""
    from workbench.captions.run import CAPTIONERS

    kinds = list(dict.fromkeys(captioner))
    unknown = [k for k in kinds if k not in CAPTIONERS]
    if unknown:
        fail(f"unknown --captioner {', '.join(unknown)}; choose from {', '.join(CAPTIONERS)}")
    if len(kinds) > 1 and not all(k.startswith("clip-") for k in kinds):
        fail("several --captioner values work only for CLIP Interrogator modes (clip-*); run the others one by one")
    settings = settings_of(ctx)
    engine = engine_of(ctx)
    actor = actor_of(ctx, "run_jobs")
    if background:
        from workbench.jobs import start_job

        argv = _foreground_argv(ctx)
        job_id = start_job(engine, settings, kind="captions", argv=argv, dataset=dataset,
                           details={"captioners": kinds}, user=actor.name)
        typer.echo(f"job {job_id} started: python -m workbench jobs status {job_id}")
        return
    from db.engine import session_scope
    from workbench.datasets import DatasetNotFound, get_dataset

    try:
        with session_scope(engine) as session:
            get_dataset(session, dataset)
    except DatasetNotFound as exc:
        fail(str(exc))
    from workbench.captions.base import CaptionerError

    try:
        if kinds == ["dataset"]:
            from pydantic import ValidationError

            from workbench.captions.dataset_prompts import DatasetPromptSettings
            from workbench.captions.run import store_dataset_prompts

            options = {k: v for k, v in {"symbol_style": symbol_style, "trigger_word": trigger_word,
                                          "include_parts": include_parts or None}.items() if v is not None}
            try:
                prompt_settings = DatasetPromptSettings(**options)
            except ValidationError as exc:
                fail(validation_problems(exc, DatasetPromptSettings))
            result = store_dataset_prompts(engine, dataset, prompt_settings)
        else:
            from workbench.captions.run import Eta, make_captioner, run_captioning
            from workbench.jobs import current_job

            if kinds[0].startswith("clip-"):
                options = {"caption_model": caption_model, "vocabulary": vocabulary, "data_path": data_path,
                           "max_flavors": max_flavors, "low_vram": low_vram or None, "device": device,
                           "modes": [k.removeprefix("clip-") for k in kinds]}
            else:
                options = {"prefix": prefix, "max_new_tokens": max_new_tokens, "device": device}
            cap = make_captioner(kinds[0], engine=engine, settings=settings, dataset=dataset, model=model,
                                 batch_size=batch_size, options=options)
            job = current_job()
            with progress_hooks(f"captions {','.join(kinds)}", unit="img") as (progress, should_stop):
                if job is not None:
                    eta = Eta()
                    progress = lambda done, total: job.progress(done, total, eta.message(done, total))  # noqa: E731
                result = run_captioning(engine, settings, dataset, cap, progress=progress, should_stop=should_stop,
                                        limit=limit, run_name=f"job-{job.job_id}" if job else "cli")
    except (CaptionerError, ValueError) as exc:
        fail(str(exc))
    if result.processes > 1 and result.process != 0:
        return
    typer.echo(f"{', '.join(result.sources)}: {result.captioned} images captioned"
               + (f" by process {result.process} of {result.processes}" if result.processes > 1 else "")
               + f", {result.skipped} already done, {result.stored} captions stored "
               f"({result.images_per_second:.2f} img/s)")


def _foreground_argv(ctx: typer.Context) -> list[str]:
    """This command's options as given, without ``--background`` (what the job runs)."""
    argv = ["captions", "run"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name == "background" or value is None or value is False or value == param.default:
            continue
        option = param.opts[0]
        if getattr(param, "is_flag", False):
            argv.append(option)
        elif getattr(param, "multiple", False):
            for item in value:
                argv += [option, str(item)]
        else:
            argv += [option, str(value)]
    return argv


@captions_app.command("list")
def list_cmd(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option("--dataset")],
    source: Annotated[Optional[list[str]], typer.Option("--source", help="Only these sources.")] = None,
    status: Annotated[Optional[list[str]], typer.Option("--status", help="pending, accepted, edited, rejected.")] = None,
    word: Annotated[Optional[str], typer.Option("--word", help="Only captions with this word.")] = None,
    min_words: Annotated[Optional[int], typer.Option("--min-words", min=0, max=1_000_000)] = None,
    max_words: Annotated[Optional[int], typer.Option("--max-words", min=0, max=1_000_000)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List captions (image_id, file, source, text, status, version)."""
    from db.engine import session_scope
    from workbench.captions.store import list_captions
    from workbench.datasets import DatasetNotFound

    try:
        with session_scope(engine_of(ctx)) as session:
            rows = list_captions(session, dataset, sources=source, statuses=status, word=word,
                                 min_words=min_words, max_words=max_words)
    except DatasetNotFound as exc:
        fail(str(exc))
    if as_json:
        print_json([{"id": r.id, "image_id": r.image_id, "file_name": r.file_name, "source": r.source,
                     "text": r.text, "status": r.status, "version": r.version, "curator": r.curator,
                     "model": r.model, "random_weights": bool((r.extra or {}).get("random_weights"))} for r in rows])
        return
    for r in rows:
        mark = "\t[random weights (tiny test model)]" if (r.extra or {}).get("random_weights") else ""
        typer.echo(f"{r.image_id}\t{r.source}\t{r.status}\tv{r.version}\t{r.text}{mark}")


@captions_app.command("mix")
def mix_cmd(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option("--dataset")],
    recipe: Annotated[Optional[Path], typer.Option("--recipe", help="Recipe JSON file.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="A saved recipe (newest version unless --version).")] = None,
    version: Annotated[Optional[int], typer.Option("--version", min=1, max=MAX_ID)] = None,
    preview: Annotated[Optional[int], typer.Option("--preview", min=1, max=100_000, help="Show the prompts of N sampled images and the token histogram.")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, max=MAX_ID)] = 0,
    save: Annotated[Optional[str], typer.Option("--save", help="Save the recipe under this name (a new version), for this dataset "
                                                                          "(the Export page's default recipe).")] = None,
    curator: CuratorOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write {image_id: prompt} JSON here.")] = None,
) -> None:
    """Mix the dataset prompt and reviewed captions into training prompts with a recipe."""
    from db.engine import session_scope
    from workbench.captions.mixing import (empty_sources, get_recipe, load_recipe_file, preview_mix, recipe_version,
                                           save_recipe, training_prompts)
    from workbench.datasets import DatasetNotFound

    if out is not None:
        guarded(check_output_file, out, "--out")
    try:
        with session_scope(engine_of(ctx)) as session:
            if recipe is not None:
                file_name, mix = load_recipe_file(recipe)
                ref = mix
                if save or file_name:
                    ref = save_recipe(session, save or file_name, mix, actor_of(ctx, "save_recipe", curator).name,
                                      dataset=dataset)
            elif name is not None:
                ref = get_recipe(session, name, version)
                mix = ref.recipe
            else:
                fail("give --recipe FILE.json or --name of a saved recipe")
            info = recipe_version(session, ref, seed)
            if preview is not None:
                shown = preview_mix(session, dataset, mix, preview, seed)
                print_json({
                    "recipe": {k: info[k] for k in ("name", "version", "seed")},
                    "samples": [{"image_id": p.image_id, "file_name": p.file_name, "prompt": p.prompt, "tokens": p.tokens,
                                 "truncated": p.truncated, "dropped": p.dropped, "sources": p.sources} for p in shown.samples],
                    "token_histogram": shown.histogram(),
                    "truncated": shown.truncated, "dropped": shown.dropped, "images": len(shown.lengths_after),
                    "empty_sources": empty_sources(session, dataset, mix),
                })
            prompts = training_prompts(session, dataset, ref, seed) if (out or preview is None) else None
    except (DatasetNotFound, LookupError, ValueError) as exc:
        fail(str(exc))
    if prompts is not None:
        data = {"recipe": prompts.recipe_version, "prompts": {str(k): v for k, v in prompts.items()}}
        if out:
            out.write_text(json.dumps(data, indent=2))
            typer.echo(f"{len(prompts)} prompts written to {out}")
        else:
            print_json(data)


@captions_app.command("vocabulary")
def vocabulary_cmd(
    ctx: typer.Context,
    add: Annotated[Optional[list[str]], typer.Option("--add", help="Add an extra term.")] = None,
    remove: Annotated[Optional[list[str]], typer.Option("--remove", help="Remove an extra term.")] = None,
) -> None:
    """Show or edit the extra terms of the fashion vocabulary (used with --vocabulary fashion|both)."""
    from workbench.captions.vocabulary import load_extra_vocabulary, save_extra_vocabulary

    settings = settings_of(ctx)
    terms = load_extra_vocabulary(settings)
    if add or remove:
        terms = [t for t in terms if t not in set(remove or [])] + list(add or [])
        save_extra_vocabulary(settings, terms)
    for term in load_extra_vocabulary(settings):
        typer.echo(term)
