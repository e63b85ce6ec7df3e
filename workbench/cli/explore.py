"""Explore commands: EDA aggregates (``eda``) and mask-scheme management (``schemes``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from workbench.cli.common import MAX_ID, CuratorOpt, actor_of, engine_of, fail, guarded, print_json, settings_of
from workbench.guard import decode_text, loads_json, read_json

app = typer.Typer()
# A scheme is a few hundred classes at most; far larger input is not one.
SCHEME_MAX_BYTES = 4 * 2**20
schemes_app = typer.Typer(help="Mask schemes: list, show and save (JSON in, JSON out).",
                          no_args_is_help=True)
app.add_typer(schemes_app, name="schemes")


@app.command()
def eda(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print every aggregate as JSON.")] = False,
    category: Annotated[Optional[list[str]], typer.Option(
        "--category", help="Keep images with a mask of this category (repeatable: any of them).")] = None,
    attribute: Annotated[Optional[list[str]], typer.Option(
        "--attribute", help="Keep images with a mask carrying this attribute (repeatable).")] = None,
    min_width: Annotated[Optional[int], typer.Option(min=0, max=MAX_ID, help="Smallest image width kept.")] = None,
    max_width: Annotated[Optional[int], typer.Option(min=0, max=MAX_ID, help="Largest image width kept.")] = None,
    min_height: Annotated[Optional[int], typer.Option(min=0, max=MAX_ID, help="Smallest image height kept.")] = None,
    max_height: Annotated[Optional[int], typer.Option(min=0, max=MAX_ID, help="Largest image height kept.")] = None,
    facet: Annotated[Optional[list[str]], typer.Option(
        "--facet", help="NAME=VALUE: keep images whose facet (people, caption ...) has VALUE "
                        "(repeatable).")] = None,
) -> None:
    """The aggregates behind the EDA charts (the Explore page's numbers)."""
    from workbench.datasets import DatasetNotFound
    from workbench.eda import EdaFilter, FilterError, dataset_eda

    flt = EdaFilter(categories=tuple(category or ()), attributes=tuple(attribute or ()),
                    min_width=min_width, max_width=max_width, min_height=min_height,
                    max_height=max_height)
    for item in facet or ():
        name, sep, value = item.partition("=")
        if not sep:
            fail(f"--facet {item!r}: write NAME=VALUE, e.g. --facet people=flagged")
        previous = dict(flt.facets).get(name, ())
        flt = flt.with_facet(name, (*previous, value))
    settings = settings_of(ctx)
    try:
        result = dataset_eda(engine_of(ctx), dataset, flt, cache_dir=Path(settings.data_dir) / "cache")
    except (DatasetNotFound, FilterError) as exc:
        fail(str(exc).strip("'\""))
    if as_json:
        print_json(result.to_dict())
        return
    typer.echo(f"{result.dataset}: {result.images} of {result.total_images} images, "
               f"{result.masks} masks, {result.images_with_masks} images with masks")
    if result.masks == 0:
        typer.echo("note: no masks among these images (a folder of photos, or filters that "
                   "keep nothing); --json still lists sizes and splits", err=True)
    top = result.categories.sort_values("masks", ascending=False).head(15)
    for row in top.itertuples():
        if row.masks:
            typer.echo(f"  {row.masks:8d} masks {row.images:8d} images  {row.category}")


@schemes_app.command("list")
def schemes_list(
    ctx: typer.Context,
    all_versions: Annotated[bool, typer.Option("--all-versions", help="Every version, not just the latest.")] = False,
) -> None:
    """The stored schemes (latest versions) as JSON: name, version, curator, classes."""
    from db.engine import session_scope
    from workbench.schemes import list_schemes

    with session_scope(engine_of(ctx)) as session:
        rows = [{"name": s.name, "version": s.version, "curator": s.curator,
                 "created_at": s.created_at, "classes": len(s.definition.classes),
                 "description": s.definition.description}
                for s in list_schemes(session, all_versions=all_versions)]
    print_json(rows)


@schemes_app.command("show")
def schemes_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Scheme name.")],
    version: Annotated[Optional[int], typer.Option("--version", min=1, max=MAX_ID, help="A version (default: the latest).")] = None,
) -> None:
    """One scheme's definition as JSON (the input ``schemes save`` takes)."""
    from db.engine import session_scope
    from workbench.schemes import SchemeNotFound, get_scheme

    try:
        with session_scope(engine_of(ctx)) as session:
            stored = get_scheme(session, name, version)
    except SchemeNotFound as exc:
        fail(str(exc).strip("'\""))
    print_json({"name": stored.name, "version": stored.version, "curator": stored.curator,
                "created_at": stored.created_at, "definition": stored.definition.to_dict()})


@schemes_app.command("save")
def schemes_save(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="A JSON file with the definition, or - for stdin. "
                                               "The output of `schemes show` works as is.")],
    name: Annotated[Optional[str], typer.Option("--name", help="Save under this name instead.")] = None,
    curator: CuratorOpt = None,
    based_on: Annotated[Optional[int], typer.Option(
        "--based-on", min=1, max=MAX_ID, help="The version this edit started from: refuse if a newer one was saved.")] = None,
) -> None:
    """Save a scheme definition as a new version (nothing is overwritten; admins only); prints name + version."""
    from db.engine import session_scope
    from workbench.schemes import SchemeConflict, SchemeError, save_scheme

    if source == "-":
        raw = guarded(decode_text, sys.stdin.buffer.read(SCHEME_MAX_BYTES + 1), "stdin")
        if len(raw) > SCHEME_MAX_BYTES:
            fail(f"stdin holds more than {SCHEME_MAX_BYTES} bytes: a scheme is far smaller; is it the right input?")
        data = guarded(loads_json, raw, "stdin")
    else:
        data = guarded(read_json, source, "scheme file", max_bytes=SCHEME_MAX_BYTES)
    if isinstance(data, dict) and isinstance(data.get("definition"), dict):
        data = data["definition"]  # the output of `schemes show`
    if not isinstance(data, dict):
        fail(f"{source}: expected a JSON object with name, classes, mapping, draw_order")
    if name:
        data = {**data, "name": name}
    curator = actor_of(ctx, "edit_scheme", curator).name
    try:
        with session_scope(engine_of(ctx)) as session:
            stored = save_scheme(session, data, curator=curator, based_on=based_on)
    except SchemeError as exc:
        fail(str(exc))
    except SchemeConflict as exc:
        fail(str(exc), code=1)
    print_json({"name": stored.name, "version": stored.version, "curator": stored.curator})
