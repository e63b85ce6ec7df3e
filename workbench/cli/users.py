"""User commands: add, list, set-role and remove the people who sign in (admins only)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from workbench.cli.common import actor_of, engine_of, fail, print_json, settings_of

app = typer.Typer()
users_app = typer.Typer(help="Users who sign in and their roles (viewer, curator, admin).", no_args_is_help=True)
app.add_typer(users_app, name="users")

NameArg = Annotated[str, typer.Argument(help="The user's name (what they type to sign in, or their OIDC e-mail).")]


def _change(ctx: typer.Context, change, *args, **kwargs) -> None:
    """Run a user change as the acting admin (anyone while the store has no user yet: the first
    admin), print the user, exit 2 with the reason when it is refused."""
    from db.engine import session_scope
    from workbench.users import UserError, list_users, local_name

    with session_scope(engine_of(ctx)) as session:
        first = not list_users(session, include_removed=True)
    by = local_name(settings_of(ctx)) if first else actor_of(ctx, "manage_users").name
    try:
        with session_scope(engine_of(ctx)) as session:
            print_json(change(session, *args, by=by, **kwargs))
    except UserError as exc:
        fail(str(exc))


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@users_app.command("add")
def add_cmd(
    ctx: typer.Context,
    name: NameArg,
    role: Annotated[str, typer.Option("--role", help="viewer, curator or admin.")] = "curator",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from the first "
                                                 "line of stdin instead of a prompt.")] = False,
    no_password: Annotated[bool, typer.Option("--no-password", help="No password: the user signs in through "
                                              "OIDC only.")] = False,
) -> None:
    """Add a user (the first one must be an admin). The password is asked for, never echoed."""
    from db.engine import session_scope
    from workbench.users import UserError, add_user, check_role, list_users

    try:
        check_role(role)
    except UserError as exc:
        fail(str(exc))
    with session_scope(engine_of(ctx)) as session:
        if not list_users(session, include_removed=True) and role != "admin":
            fail(f"{name!r} would be the first user: the first user must be an admin (--role admin), "
                 "who then adds the others")
    password = None if no_password else _read_password(password_stdin)
    _change(ctx, add_user, name, password, role)


@users_app.command("list")
def list_cmd(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Removed users too.")] = False,
) -> None:
    """The users as JSON: name, role, created, removed (never their password hashes)."""
    from db.engine import session_scope
    from workbench.users import list_users

    with session_scope(engine_of(ctx)) as session:
        print_json(list_users(session, include_removed=all_))


@users_app.command("set-role")
def set_role_cmd(
    ctx: typer.Context,
    name: NameArg,
    role: Annotated[str, typer.Argument(help="viewer, curator or admin.")],
) -> None:
    """Give a user another role (the last admin stays an admin)."""
    from workbench.users import set_role

    _change(ctx, set_role, name, role)


@users_app.command("remove")
def remove_cmd(ctx: typer.Context, name: NameArg) -> None:
    """Remove a user: they can no longer sign in; the audit log keeps their name."""
    from workbench.users import remove_user

    _change(ctx, remove_user, name)


@app.command("audit")
def audit_cmd(
    ctx: typer.Context,
    user: Annotated[Optional[str], typer.Option("--user", help="Only this user's writes.")] = None,
    action: Annotated[Optional[str], typer.Option("--action", help="An action (people.decide) or its group "
                                                  "(people).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Only writes on this dataset.")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="From this date or ISO time (UTC).")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="Up to this date (its whole day) or ISO time.")] = None,
    csv: Annotated[Optional[str], typer.Option("--csv", help="Write the rows as CSV to this file ('-': stdout).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="At most this many rows, newest first.")] = None,
) -> None:
    """The audit log (every write: who, what, dataset, before, after, when), newest first, as JSON or CSV."""
    from pathlib import Path

    from db.engine import session_scope
    from workbench.audit import parse_time, query, to_csv

    try:
        bounds = {"since": parse_time(since) if since else None,
                  "until": parse_time(until, end=True) if until else None}
    except ValueError as exc:
        fail(f"--since/--until: {exc}")
    with session_scope(engine_of(ctx)) as session:
        rows = query(session, user=user, action=action, dataset=dataset, limit=limit, **bounds)
    if csv is None:
        print_json(rows)
    elif csv == "-":
        typer.echo(to_csv(rows), nl=False)
    else:
        try:
            Path(csv).write_text(to_csv(rows), encoding="utf-8", newline="")
        except OSError as exc:
            fail(f"--csv {csv}: cannot write it ({exc.strerror}); give a file in a folder you can write to")
        typer.echo(f"{len(rows)} audit rows written to {csv}", err=True)
