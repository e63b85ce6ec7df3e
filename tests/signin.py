"""Sign-in helpers for page tests: users with known passwords, and signing in through the form."""

from __future__ import annotations

from sqlalchemy import Engine
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from workbench.users import add_user


def password_of(name: str) -> str:
    """The password the test users get (long enough for the store's rule)."""
    return f"pw-of-{name}-123"


def add_users(engine: Engine, **roles: str) -> None:
    """Add users ``name=role`` with :func:`password_of` passwords."""
    with session_scope(engine) as session:
        for name, role in roles.items():
            add_user(session, name, password_of(name), role, by="test")


def sign_in(app: AppTest, name: str, password: str | None = None) -> AppTest:
    """Fill the sign-in form of a page and submit it (the page then shows itself)."""
    app.text_input(key="sign_in_name").input(name)
    app.text_input(key="sign_in_password").input(password if password is not None else password_of(name))
    app.button(key="sign_in_submit").click().run()
    assert not app.exception, [e.value for e in app.exception]
    return app
