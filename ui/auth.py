"""Sign-in and roles on every page: ``require_user()`` first, then ``can(action)`` before each write.

Three modes (``WORKBENCH_SIGN_IN``): ``off`` — one local user on 127.0.0.1, an admin, said so in
the sidebar; ``local`` — a sign-in form checked against the store's users (bcrypt), the session
holding only a signed token (:mod:`workbench.signin`); ``oidc`` — Streamlit's ``st.login`` with
the identity provider of ``.streamlit/secrets.toml``, the identity mapped to a user row (new
identities are viewers until an admin gives them a role).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from db.engine import session_scope
from ui.common import open_store
from workbench.settings import Settings, get_settings
from workbench.signin import issue_token, token_name
from workbench.users import Actor, authenticate, find_actor, identity_user, local_name, needed_role

TOKEN_KEY = "auth_token"
ACTION_WORDS = {
    "decide": "deciding", "import": "importing", "export": "exporting", "run_jobs": "starting jobs",
    "save_recipe": "saving recipes", "train": "launching training", "edit_scheme": "editing mask schemes",
    "delete_dataset": "deleting datasets", "manage_users": "managing users",
}


def _oidc_name() -> str | None:
    if not st.user.is_logged_in:
        return None
    return st.user.get("email") or st.user.get("sub")


def current_user(settings: Settings | None = None) -> Actor | None:
    """The signed-in user with their role as the store has it now, or ``None``."""
    settings = settings or get_settings()
    if settings.sign_in == "off":
        return Actor(local_name(settings), "admin")
    name = _oidc_name() if settings.sign_in == "oidc" else token_name(settings, st.session_state.get(TOKEN_KEY))
    if name is None:
        return None
    with session_scope(open_store(settings)) as session:
        return identity_user(session, name) if settings.sign_in == "oidc" else find_actor(session, name)


def can(action: str) -> bool:
    """Whether the signed-in user's role may do ``action`` (a key of ``workbench.users.ACTIONS``)."""
    user = current_user()
    return user is not None and user.can(action)


def refusal(action: str) -> str:
    """Why the signed-in user may not do ``action``, and how that changes."""
    user = current_user()
    who = f"{user.name} ({user.role})" if user else "nobody (not signed in)"
    role = needed_role(action)
    return (f"Signed in as {who}: {ACTION_WORDS.get(action, action)} needs the {role} role. An admin can "
            f"give it with `python -m workbench users set-role {user.name if user else 'NAME'} {role}`.")


def allowed(action: str, where=None) -> bool:
    """``can(action)``, with the reason shown (in ``where``, default the page) when not."""
    if can(action):
        return True
    (where or st).caption(f"🔒 {refusal(action)}")
    return False


def _sign_in_form(settings: Settings) -> None:
    st.title("Sign in")
    message = st.session_state.pop("auth_message", None)
    if message:
        st.error(message)
    with st.form("sign_in"):
        name = st.text_input("User name", key="sign_in_name")
        password = st.text_input("Password", type="password", key="sign_in_password")
        submitted = st.form_submit_button("Sign in", type="primary", key="sign_in_submit")
    st.caption("No account? An admin adds users with `python -m workbench users add NAME --role curator`.")
    if submitted:
        with session_scope(open_store(settings)) as session:
            user = authenticate(session, name, password)
        if user is None:
            st.session_state["auth_message"] = "Wrong user name or password (or the user was removed)."
        else:
            st.session_state[TOKEN_KEY] = issue_token(settings, user.name)
        st.rerun()


def auth_secrets() -> Mapping[str, Any] | None:
    """The ``[auth]`` section ``st.login`` reads, from wherever Streamlit finds its secrets
    (``.streamlit/secrets.toml`` of the project or the home folder, ``--secrets.files``); ``None``
    when there is none."""
    try:
        section = st.secrets.get("auth")
    except FileNotFoundError:  # no secrets file at all
        return None
    return section if isinstance(section, Mapping) else None


def _oidc_sign_in(auth: Mapping[str, Any]) -> None:
    st.title("Sign in")
    providers = [key for key, value in auth.items() if isinstance(value, Mapping)]
    if not providers:
        st.button("Sign in", type="primary", on_click=st.login)
    for provider in providers:
        st.button(f"Sign in with {provider}", type="primary", on_click=st.login, args=(provider,))


def _sign_out(settings: Settings) -> None:
    if settings.sign_in == "oidc":
        st.logout()
    st.session_state.pop(TOKEN_KEY, None)


def require_user() -> Actor:
    """The signed-in user, shown in the sidebar with a way to sign out; otherwise the sign-in
    form (or the provider's button) and the page stops. Every page calls this first."""
    try:
        settings = get_settings()
    except Exception as exc:  # shown, not raised
        st.error(f"The workbench settings are invalid: {exc}")
        st.stop()
    auth = auth_secrets() if settings.sign_in == "oidc" else None
    if settings.sign_in == "oidc" and auth is None:
        st.error("Sign-in is set to oidc (WORKBENCH_SIGN_IN) but Streamlit's secrets (`.streamlit/secrets.toml`) "
                 "have no [auth] section: add one (see Streamlit's st.login documentation) or set "
                 "WORKBENCH_SIGN_IN=local.")
        st.stop()
    user = current_user(settings)
    if user is None and settings.sign_in == "oidc" and st.user.is_logged_in:
        st.error(f"{_oidc_name()} was removed from the workbench's users: an admin can add them again "
                 "(`python -m workbench users add NAME --no-password --role viewer`).")
        st.button("Sign out", key="auth_sign_out", on_click=_sign_out, args=(settings,))
        st.stop()
    if user is None:
        _oidc_sign_in(auth) if auth is not None else _sign_in_form(settings)
        st.stop()
    box = st.sidebar.container(key="auth_box")
    if settings.sign_in == "off":
        box.info(f"👤 **{user.name}** · admin — sign-in is off: the single local user is an admin "
                 "(set WORKBENCH_SIGN_IN=local for named users and roles).")
    else:
        box.info(f"👤 Signed in as **{user.name}** · {user.role}")
        box.button("Sign out", key="auth_sign_out", on_click=_sign_out, args=(settings,))
    return user
