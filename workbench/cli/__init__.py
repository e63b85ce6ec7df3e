"""``python -m workbench``: every page action, scriptable (typer).

The root command holds the global options; each area of the workbench keeps its commands in
its own module here and is merged into the root.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from workbench.cli import (captions, data, db, embeddings, evaluate, explore, export, generate, jobs, models, people,
                           segment, train, users)
from workbench.cli.common import fail
from workbench.guard import InputRefused
from workbench.settings import get_settings

app = typer.Typer(
    help="Fashion ControlNet Workbench: curate fashion segmentation data for ControlNet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    db: Annotated[
        Optional[str],
        typer.Option("--db", help="SQLAlchemy database URL (default: WORKBENCH_DB_URL or data/workbench.db)."),
    ] = None,
) -> None:
    """Global options."""
    ctx.obj = {"settings": get_settings(db_url=db)}


for area in (data, explore, embeddings, people, captions, export, train, segment, generate, evaluate, jobs, models, db,
             users):
    app.add_typer(area.app)


def run() -> None:
    """Entry point of ``python -m workbench``.

    The last line of defence: a refused input, or a bad value some check let through to a
    ``ValueError`` or ``OverflowError`` deep in a library, ends as a usage error (exit 2) with
    one line, not a traceback. Each command checks its own input first; this only catches
    what slipped past.
    """
    try:
        app(prog_name="python -m workbench", standalone_mode=True)
    except (ValueError, OverflowError, RecursionError) as exc:
        what = "" if isinstance(exc, InputRefused) else f"{type(exc).__name__}: "
        try:
            fail(f"{what}{str(exc)[:2000]}", fix=None if isinstance(exc, InputRefused) else
                 "check the values given on the command line (`--help` shows each option's range)")
        except typer.Exit as stop:
            raise SystemExit(stop.exit_code) from None
