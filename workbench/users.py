"""Users and roles: who may sign in, with which password hash, and what each role may do.

Passwords are hashed with bcrypt (the hasher streamlit-authenticator uses too). Roles are
ordered viewer < curator < admin; :data:`ACTIONS` names the least role each action needs. The
store always keeps one enabled admin: removing or demoting the last one is refused.
"""

from __future__ import annotations

import getpass
import unicodedata
from dataclasses import dataclass
from typing import Any

import bcrypt
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import utcnow
from db.users import User
from workbench.audit import record
from workbench.settings import Settings

ROLES = ("viewer", "curator", "admin")
# The least role each action needs. Viewers look; curators decide and run data work; only admins
# launch training, edit mask schemes, delete datasets and manage users.
ACTIONS: dict[str, str] = {
    "look": "viewer",
    "decide": "curator",  # people decisions and flags, caption reviews
    "import": "curator",
    "export": "curator",
    "run_jobs": "curator",  # detection, captioning, prediction, generation, model checks
    "save_recipe": "curator",
    "train": "admin",
    "edit_scheme": "admin",
    "delete_dataset": "admin",
    "manage_users": "admin",
}
MIN_PASSWORD = 8
MAX_PASSWORD_BYTES = 72  # bcrypt reads no further
# Checked when the name is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY_HASH = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(rounds=4))


class UserError(ValueError):
    """A user change that cannot be made; the message names the user and the fix."""


@dataclass(frozen=True)
class Actor:
    """Who is acting (signed in on the app, or running the CLI) and their role."""

    name: str
    role: str

    def can(self, action: str) -> bool:
        """Whether this role may do ``action`` (a key of :data:`ACTIONS`)."""
        return role_allows(self.role, action)


def role_allows(role: str, action: str) -> bool:
    """Whether ``role`` may do ``action``."""
    if action not in ACTIONS:
        raise KeyError(f"unknown action {action!r} (actions: {', '.join(ACTIONS)})")
    return ROLES.index(role) >= ROLES.index(ACTIONS[action])


def needed_role(action: str) -> str:
    """The least role that may do ``action``."""
    return ACTIONS[action]


def check_role(role: str) -> str:
    """``role`` if it is one of :data:`ROLES`, else :class:`UserError` naming them."""
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def check_name(name: str) -> str:
    """A user name, stripped: 1-200 characters, no control characters."""
    clean = (name or "").strip()
    if not clean or len(clean) > 200 or any(unicodedata.category(c).startswith("C") for c in clean):
        raise UserError(f"user name {name[:40]!r} is not usable: give 1-200 printable characters")
    return clean


def hash_password(password: str) -> str:
    """The bcrypt hash of ``password`` (at least 8 characters, at most 72 bytes)."""
    data = password.encode("utf-8")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    if len(data) > MAX_PASSWORD_BYTES:
        raise UserError(f"the password is too long: bcrypt reads at most {MAX_PASSWORD_BYTES} bytes")
    return bcrypt.hashpw(data, bcrypt.gensalt()).decode("ascii")


def verify_password(password: str, hashed: str | None) -> bool:
    """Whether ``password`` matches the bcrypt hash ``hashed`` (never for a user without one)."""
    data = password.encode("utf-8")[:MAX_PASSWORD_BYTES]
    if not hashed:
        bcrypt.checkpw(data, _DUMMY_HASH)
        return False
    try:
        return bcrypt.checkpw(data, hashed.encode("ascii"))
    except ValueError:  # not a bcrypt hash
        return False


def _row(session: Session, name: str, *, enabled_only: bool = True) -> User:
    row = session.scalar(select(User).where(User.name == name))
    if row is None or (enabled_only and row.disabled_at is not None):
        known = ", ".join(u["name"] for u in list_users(session)) or "none yet"
        raise UserError(f"no user named {name!r} (users: {known}); add one with "
                        "`python -m workbench users add NAME --role ROLE`")
    return row


def _view(row: User) -> dict[str, Any]:
    return {"name": row.name, "role": row.role, "created_at": row.created_at, "disabled_at": row.disabled_at,
            "password": row.password_hash is not None}


def list_users(session: Session, *, include_removed: bool = False) -> list[dict[str, Any]]:
    """Users in the order they were added (removed ones too with ``include_removed``)."""
    stmt = select(User).order_by(User.id)
    if not include_removed:
        stmt = stmt.where(User.disabled_at.is_(None))
    return [_view(row) for row in session.scalars(stmt)]


def _admins(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)
                          .where(User.role == "admin", User.disabled_at.is_(None))) or 0


def add_user(session: Session, name: str, password: str | None, role: str, *, by: str | None) -> dict[str, Any]:
    """Add a user (or bring back a removed one) with a password (``None``: signs in through OIDC only)."""
    name, role = check_name(name), check_role(role)
    hashed = hash_password(password) if password is not None else None
    row = session.scalar(select(User).where(User.name == name))
    if row is not None and row.disabled_at is None:
        raise UserError(f"user {name!r} already exists ({row.role}); change the role with "
                        f"`python -m workbench users set-role {name} ROLE`")
    before = None if row is None else _audited(row)
    if row is None:
        row = User(name=name, password_hash=hashed, role=role)
        session.add(row)
    else:
        row.password_hash, row.role, row.disabled_at = hashed, role, None
    session.flush()
    record(session, by, "user.add", "user", name, before=before, after=_audited(row))
    return _view(row)


def _audited(row: User) -> dict[str, Any]:
    # Never the hash: the audit log is readable by every signed-in user.
    return {"role": row.role, "removed": row.disabled_at is not None, "password": row.password_hash is not None}


def set_role(session: Session, name: str, role: str, *, by: str | None) -> dict[str, Any]:
    """Give ``name`` another role (demoting the last admin is refused)."""
    role = check_role(role)
    row = _row(session, name)
    if row.role == "admin" and role != "admin" and _admins(session) <= 1:
        raise UserError(f"{name!r} is the last admin: make another user admin first "
                        "(`python -m workbench users set-role OTHER admin`)")
    before = _audited(row)
    row.role = role
    session.flush()
    record(session, by, "user.set-role", "user", name, before=before, after=_audited(row))
    return _view(row)


def remove_user(session: Session, name: str, *, by: str | None) -> dict[str, Any]:
    """Remove ``name``: they can no longer sign in; their row stays for the audit log."""
    row = _row(session, name)
    if row.role == "admin" and _admins(session) <= 1:
        raise UserError(f"{name!r} is the last admin: make another user admin before removing them")
    before = _audited(row)
    row.disabled_at = utcnow()
    session.flush()
    record(session, by, "user.remove", "user", name, before=before, after=_audited(row))
    return _view(row)


def find_actor(session: Session, name: str) -> Actor | None:
    """The enabled user called ``name`` as an :class:`Actor`, or ``None``."""
    row = session.scalar(select(User).where(User.name == name, User.disabled_at.is_(None)))
    return Actor(row.name, row.role) if row is not None else None


def authenticate(session: Session, name: str, password: str) -> Actor | None:
    """The user if ``password`` is theirs (and they are not removed), else ``None``."""
    row = session.scalar(select(User).where(User.name == (name or "").strip(), User.disabled_at.is_(None)))
    if not verify_password(password, row.password_hash if row is not None else None) or row is None:
        return None
    return Actor(row.name, row.role)


def identity_user(session: Session, name: str) -> Actor | None:
    """The user an identity provider signed in (``name``: their e-mail or subject).

    Someone seen for the first time is added as a viewer (an admin gives them a role with
    ``users set-role``); a removed user gets ``None``.
    """
    name = check_name(name)
    row = session.scalar(select(User).where(User.name == name))
    if row is None:
        add_user(session, name, None, "viewer", by=name)
        return Actor(name, "viewer")
    return None if row.disabled_at is not None else Actor(row.name, row.role)


def local_name(settings: Settings) -> str:
    """The name of the single local user when sign-in is off: ``WORKBENCH_USER`` or the OS login."""
    if settings.user and settings.user.strip():
        return settings.user.strip()
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return "local"


def acting_user(session: Session, settings: Settings, name: str | None = None) -> Actor:
    """Who a command acts as: ``name`` (e.g. ``--curator``), else ``WORKBENCH_USER``, else the OS
    login. With sign-in off everyone is the local admin; with it on the name must be a user."""
    chosen = (name or "").strip() or local_name(settings)
    if settings.sign_in == "off":
        return Actor(chosen, "admin")
    actor = find_actor(session, chosen)
    if actor is None:
        raise UserError(f"{chosen!r} is not a user of this store (sign-in is {settings.sign_in}): set "
                        "WORKBENCH_USER to your user name, or ask an admin to run "
                        f"`python -m workbench users add {chosen} --role curator`")
    return actor


def require(actor: Actor, action: str) -> None:
    """:class:`UserError` unless ``actor`` may do ``action``, naming the role it needs."""
    if not actor.can(action):
        raise UserError(f"{actor.name} is a {actor.role}: {action.replace('_', ' ')} needs the "
                        f"{needed_role(action)} role (an admin runs `python -m workbench users set-role "
                        f"{actor.name} {needed_role(action)}`)")
