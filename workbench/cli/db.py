"""Store commands: copy to another database, back up, restore (``db ...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from workbench.cli.common import fail, print_json, settings_of

app = typer.Typer()
db_app = typer.Typer(help="The store: copy it to another database, back it up, restore it.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("copy")
def copy_cmd(
    ctx: typer.Context,
    to: Annotated[Optional[str], typer.Option("--to", help="URL of the target store (default: --db / WORKBENCH_DB_URL).")] = None,
    source: Annotated[Optional[str], typer.Option("--from", help="URL of the source store (default: --db / WORKBENCH_DB_URL).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Delete the rows a non-empty target holds first.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the per-table counts as JSON.")] = False,
) -> None:
    """Copy every table of one store into another (e.g. SQLite to PostgreSQL), counts checked.

    Name the other side with --to or --from; the store of --db / WORKBENCH_DB_URL is the one
    not named.
    """
    from db.transfer import CopyError, copy_store

    current = settings_of(ctx).database_url
    if (to is None) == (source is None):
        fail("name exactly one other store: --to URL (copy this store there) or --from URL (copy it here)"
             if to is None else "give --to or --from, not both; the other side is --db / WORKBENCH_DB_URL")
    src, dst = (current, to) if to is not None else (source, current)
    try:
        counts = copy_store(src, dst, replace=replace)
    except CopyError as exc:
        fail(str(exc), 1)
    except Exception as exc:  # an unreachable server, a bad URL: one line, not a traceback
        fail(f"cannot copy {src} -> {dst}: {str(exc).strip().splitlines()[0]}", 1,
             fix="check both URLs and that the server is running")
    if as_json:
        print_json([vars(c) for c in counts])
        return
    for c in counts:
        typer.echo(f"{c.table:28s} {c.target:10d}")
    typer.echo(f"copied {sum(c.target for c in counts)} rows in {len(counts)} tables; counts match")


@db_app.command("backup")
def backup_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="Backup file, or a folder for timestamped backups.")],
    keep: Annotated[Optional[int], typer.Option("--keep", min=1, help="Rotate: OUT is a folder; keep its newest N backups.")] = None,
) -> None:
    """Back up the store: SQLite's online backup (safe while the app runs) or pg_dump."""
    from db.backup import BackupError, backup_store

    try:
        written = backup_store(settings_of(ctx).database_url, out, keep=keep)
    except BackupError as exc:
        fail(str(exc), 1)
    typer.echo(f"backup written: {written}")


@db_app.command("restore")
def restore_cmd(
    ctx: typer.Context,
    backup: Annotated[Path, typer.Argument(help="A file written by `db backup`.")],
    force: Annotated[bool, typer.Option("--force", help="Replace a store that holds rows.")] = False,
) -> None:
    """Restore the store from a backup (refuses a non-empty store without --force)."""
    from db.backup import BackupError, restore_store

    url = settings_of(ctx).database_url
    try:
        restore_store(url, backup, force=force)
    except BackupError as exc:
        fail(str(exc), 1)
    typer.echo(f"restored {backup} into the store")
