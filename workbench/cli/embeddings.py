"""Similarity commands: ``embed``, ``similar``, ``duplicates``, ``outliers``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from workbench.cli.common import (
    BackgroundOpt, CuratorOpt, actor_of, engine_of, fail, fail_with_fix, print_json, progress_hooks, settings_of,
)

app = typer.Typer()
EMBED_JOB_KIND = "embed"

DatasetOpt = Annotated[str, typer.Option("--dataset", help="Dataset name.")]
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", help="CLIP model: registry name (`models list --kind clip`), ARCH/TAG or folder "
                    "(default: clip-vit-l-14).")]


def _model(model: Optional[str]) -> str:
    from workbench.embeddings.compute import DEFAULT_MODEL

    return model or DEFAULT_MODEL


def _message(exc: Exception) -> str:
    return str(exc.args[0]) if exc.args else str(exc)


def embed_argv(dataset: str, model: str, crops: bool = False, batch_size: int = 32,
               device: Optional[str] = None, map_method: str = "auto") -> list[str]:
    """The foreground ``embed`` command line for these options (what a job runs)."""
    argv = ["embed", "--dataset", dataset, "--model", model, "--batch-size", str(batch_size), "--map", map_method]
    argv += ["--crops"] if crops else []
    argv += ["--device", device] if device else []
    return argv


@app.command("embed")
def embed_cmd(
    ctx: typer.Context,
    dataset: DatasetOpt,
    model: ModelOpt = None,
    crops: Annotated[bool, typer.Option("--crops", help="Also embed every garment's box (for label checks).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=4096, help="Images per model call.")] = 32,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda.")] = None,
    map_method: Annotated[str, typer.Option("--map", help="The 2-D map made at the end: auto (UMAP when "
                                            "umap-learn is installed, else PCA), umap, pca or none.")] = "auto",
    background: BackgroundOpt = False,
) -> None:
    """Embed a dataset's images with CLIP (resumable: stored images are skipped, also after a re-import)."""
    from workbench.embeddings.projection import METHODS

    from workbench.captions.base import CaptionerError
    from workbench.datasets import DatasetNotFound
    from workbench.embeddings.compute import EmbedSettings, embed_dataset

    if batch_size < 1:
        fail("--batch-size must be at least 1")
    if map_method not in (*METHODS, "none"):
        fail(f"--map must be one of {', '.join((*METHODS, 'none'))}, not {map_method!r}")
    model = _model(model)
    engine, settings = engine_of(ctx), settings_of(ctx)
    if background:
        from workbench.jobs import start_job

        typer.echo(start_job(engine, settings, kind=EMBED_JOB_KIND, argv=embed_argv(dataset, model, crops, batch_size,
                                                                                   device, map_method),
                             dataset=dataset, details={"model": model, "crops": crops}))
        return
    options = EmbedSettings(model=model, batch_size=batch_size, crops=crops, device=device or "auto",
                            map=map_method)
    typer.echo(f"embed settings {options}", err=True)
    try:
        with progress_hooks(f"embed ({model})", unit="img") as (progress, should_stop):
            result = embed_dataset(engine, dataset, settings.data_dir, options, progress=progress,
                                   should_stop=should_stop)
    except DatasetNotFound as exc:
        fail(_message(exc))
    except CaptionerError as exc:
        fail_with_fix(exc)
    print_json(result.to_dict())


@app.command("similar")
def similar_cmd(
    ctx: typer.Context,
    image: Annotated[Optional[str], typer.Option("--image", help="Image id (a number) or file name (with --dataset).")] = None,
    text: Annotated[Optional[str], typer.Option("--text", help="Words to search for: 'red sequin dress'.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Dataset name (needed with --text or a file name).")] = None,
    k: Annotated[int, typer.Option("--k", min=1, max=10_000, help="How many images.")] = 10,
    model: ModelOpt = None,
) -> None:
    """Images most like an image ("more like this"), or most like words (CLIP text tower)."""
    from sqlalchemy import select

    from db.engine import session_scope
    from db.models import Dataset, Image
    from workbench.captions.base import CaptionerError
    from workbench.datasets import DatasetNotFound, get_dataset, get_image
    from workbench.embeddings.search import more_like, text_search
    from workbench.embeddings.vectors import NotEmbedded

    if (image is None) == (text is None):
        fail("give --image ID (more like this) or --text WORDS (text search), one of them")
    if k < 1:
        fail("--k must be at least 1")
    model = _model(model)
    data_dir = settings_of(ctx).data_dir
    try:
        with session_scope(engine_of(ctx)) as session:
            if image is not None:
                if image.isdigit():
                    row = session.execute(select(Image.id, Dataset.name).join(Dataset, Dataset.id == Image.dataset_id)
                                          .where(Image.id == int(image))).first()
                    if row is None:
                        fail(f"no image with id {image}; `python -m workbench eda --dataset NAME --json` lists them, "
                             "or give a file name with --dataset")
                    image_id, dataset = row
                elif dataset is None:
                    fail(f"--image {image!r} is a file name: say which dataset with --dataset")
                else:
                    image_id = get_image(session, get_dataset(session, dataset), image).id
                matches = more_like(session, dataset, image_id, model, data_dir, k)
            else:
                if dataset is None:
                    fail("--text searches one dataset: give --dataset")
                matches = text_search(session, dataset, text, model, data_dir, k)
            data = [m.to_dict() for m in matches]
    except (DatasetNotFound, NotEmbedded, LookupError, ValueError, CaptionerError) as exc:
        fail(_message(exc))
    print_json(data)


@app.command("duplicates")
def duplicates_cmd(
    ctx: typer.Context,
    dataset: DatasetOpt,
    threshold: Annotated[float, typer.Option(min=-1.0, max=1.0, help="Cosine similarity from which two images count as duplicates.")] = 0.95,
    hash_distance: Annotated[int, typer.Option("--hash-distance", min=0, max=256, help="Difference-hash bits (of 256) within "
                                               "which two photos are the same picture.")] = 16,
    cosine: Annotated[bool, typer.Option("--cosine/--no-cosine", help="Use embedding similarity as evidence "
                                         "(off: checksums and picture hashes only).")] = True,
    model: ModelOpt = None,
    keep_first: Annotated[bool, typer.Option("--keep-first/--list", help="With --apply: keep the first image of "
                                             "each group (train split first, then by name), exclude the rest.")] = True,
    apply: Annotated[bool, typer.Option("--apply", help="Record the decisions (as --curator); "
                                        "groups already reviewed are left as they are.")] = False,
    curator: CuratorOpt = None,
) -> None:
    """Duplicate groups: same file (checksum), same picture (hash), look-alikes (cosine); leakage across splits first."""
    from db.engine import session_scope
    from workbench.datasets import DatasetNotFound
    from workbench.embeddings.decisions import DecisionError
    from workbench.embeddings.duplicates import find_duplicates, keep_one

    if apply:
        curator = actor_of(ctx, "decide", curator).name
    if apply and not keep_first:
        fail("--apply needs --keep-first (the only automatic choice); review groups one by one on the Similarity page")
    data_dir = settings_of(ctx).data_dir
    try:
        with session_scope(engine_of(ctx)) as session:
            options = dict(model=_model(model), threshold=threshold if cosine else None, hash_distance=hash_distance)
            report = find_duplicates(session, dataset, data_dir, **options)
            applied = 0
            if apply:
                for group in report.groups:
                    if not group.decided:
                        applied += keep_one(session, dataset, group, group.default_keep().image_id, curator,
                                            note="duplicates --apply --keep-first")
                report = find_duplicates(session, dataset, data_dir, **options)
            data = {**report.to_dict(), "decisions_recorded": applied}
    except (DatasetNotFound, DecisionError, ValueError) as exc:
        fail(_message(exc))
    print_json(data)


@app.command("outliers")
def outliers_cmd(
    ctx: typer.Context,
    dataset: DatasetOpt,
    kind: Annotated[str, typer.Option(help="outlier (far from its category) or label (a crop that looks like "
                                      "another category; needs `embed --crops`).")] = "outlier",
    min_z: Annotated[float, typer.Option("--min-z", min=-1e6, max=1e6, help="outlier: standard deviations above the usual distance.")] = 2.0,
    margin: Annotated[float, typer.Option(min=-2.0, max=2.0, help="label: how much closer to the other category.")] = 0.0,
    model: ModelOpt = None,
    decide: Annotated[Optional[list[str]], typer.Option(
        "--decide", help="FILE=keep or FILE=exclude: record a decision (repeatable; as --curator).")] = None,
    all_items: Annotated[bool, typer.Option("--all", help="List decided images too.")] = False,
    curator: CuratorOpt = None,
) -> None:
    """The review queue of outliers or likely label problems (undecided first, worst first); --decide records decisions."""
    from db.engine import session_scope
    from workbench.captions.base import CaptionerError
    from workbench.datasets import DatasetNotFound, get_dataset, get_image
    from workbench.embeddings.decisions import DecisionError, record_decision
    from workbench.embeddings.outliers import review_queue
    from workbench.embeddings.vectors import NotEmbedded

    if kind not in ("outlier", "label"):
        fail(f"--kind must be outlier or label, not {kind!r}")
    choices = []
    for item in decide or []:
        file_name, _, decision = item.rpartition("=")
        if not file_name or decision not in ("keep", "exclude"):
            fail(f"--decide takes FILE=keep or FILE=exclude, not {item!r}")
        choices.append((file_name, decision))
    if choices:
        curator = actor_of(ctx, "decide", curator).name
    data_dir = settings_of(ctx).data_dir
    try:
        with session_scope(engine_of(ctx)) as session:
            for file_name, decision in choices:
                image = get_image(session, get_dataset(session, dataset), file_name)
                record_decision(session, dataset, image.id, kind, decision, curator, details={"via": "cli"})
            items = review_queue(session, dataset, _model(model), data_dir, kind, min_z=min_z, margin=margin,
                                 include_decided=all_items)
            data = [i.to_dict() for i in items]
    except (DatasetNotFound, NotEmbedded, DecisionError, LookupError, CaptionerError) as exc:
        fail(_message(exc))
    print_json(data)
