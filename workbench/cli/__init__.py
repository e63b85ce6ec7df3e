"""``python -m workbench``: every page action, scriptable (typer).

The root command holds the global options; each area of the workbench keeps its commands in
its own module here and is merged into the root.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from workbench.cli import captions, data, evaluate, explore, export, generate, jobs, models, people, segment, train, users
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


for area in (data, explore, people, captions, export, train, segment, generate, evaluate, jobs, models, users):
    app.add_typer(area.app)


def run() -> None:
    """Entry point of ``python -m workbench``."""
    app(prog_name="python -m workbench")
