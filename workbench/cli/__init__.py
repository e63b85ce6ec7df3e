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


PROG = "python -m workbench"


def run() -> None:
    """Entry point of ``python -m workbench``.

    Usage errors (a bad option value, an unknown option) end as two lines, ``error: ...``
    naming the value and ``fix: ...``, with exit code 2. The last line of defence: a refused
    input, or a bad value some check let through to a ``ValueError`` or ``OverflowError`` deep
    in a library, ends the same way, not as a traceback. Each command checks its own input
    first; this only catches what slipped past.
    """
    import sys

    try:
        result = app(prog_name=PROG, standalone_mode=False)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        raise SystemExit(1) from None
    except typer.TyperException as exc:  # click's exceptions (typer vendors click)
        if exc.exit_code == 2 and type(exc).__name__ != "NoArgsIsHelpError":
            _exit_usage_error(exc, sys.argv[1:])
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except (ValueError, OverflowError, RecursionError) as exc:
        what = "" if isinstance(exc, InputRefused) else f"{type(exc).__name__}: "
        _exit_failure(f"{what}{str(exc)[:2000]}", None if isinstance(exc, InputRefused) else
                      "check the values given on the command line (`--help` shows each option's range)")
    raise SystemExit(result if isinstance(result, int) else 0)


def _exit_failure(message: str, fix: str | None) -> None:
    try:
        fail(message, fix=fix)
    except typer.Exit as stop:
        raise SystemExit(stop.exit_code) from None


def _exit_usage_error(exc, argv: list[str]) -> None:
    """``error: Invalid value for '--gpu-memory': ... (got '-5')`` and where to read the usage."""
    message = exc.format_message()
    value = _typed_value(getattr(exc, "param", None), argv)
    if value is not None and value not in message:
        message = f"{message} (got {value!r})"
    command = exc.ctx.command_path if exc.ctx is not None else PROG
    _exit_failure(message, f"see `{command} --help`")


def _typed_value(param, argv: list[str]) -> str | None:
    """What the user typed for an option ``param`` (``--opt VALUE`` or ``--opt=VALUE``)."""
    for opt in getattr(param, "opts", None) or []:
        if not opt.startswith("-"):
            continue
        for index, token in enumerate(argv):
            if token == opt and index + 1 < len(argv):
                return argv[index + 1]
            if token.startswith(opt + "="):
                return token.split("=", 1)[1]
    return None
