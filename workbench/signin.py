"""Signed sign-in tokens of the app (WORKBENCH_SIGN_IN=local).

A successful sign-in gives a JWT (HS256) naming the user and when it expires, signed with a
secret kept beside the store (``data_dir/auth_secret``, created on first use, readable by its
owner only). The app keeps only that token in the browser session and checks its signature and
the user's current role on every run, so a removed or demoted user loses access at once.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import jwt

from db.models import utcnow
from workbench.settings import Settings

ALGORITHM = "HS256"


def secret_path(settings: Settings) -> Path:
    """Where the signing secret lives."""
    return Path(settings.data_dir) / "auth_secret"


def _secret(settings: Settings) -> str:
    path = secret_path(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two sessions starting together keep the one secret written first.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
        except FileExistsError:
            pass
    return path.read_text().strip()


def issue_token(settings: Settings, name: str) -> str:
    """A signed token saying ``name`` signed in now, valid for ``settings.session_hours``."""
    now = utcnow()
    claims = {"sub": name, "iat": now, "exp": now + timedelta(hours=settings.session_hours)}
    return jwt.encode(claims, _secret(settings), algorithm=ALGORITHM)


def token_name(settings: Settings, token: str | None) -> str | None:
    """The user a token names, or ``None`` when it is missing, forged or expired."""
    if not token:
        return None
    try:
        return jwt.decode(token, _secret(settings), algorithms=[ALGORITHM])["sub"]
    except jwt.PyJWTError:
        return None
