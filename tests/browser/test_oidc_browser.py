"""A real browser with sign-in through an identity provider (``WORKBENCH_SIGN_IN=oidc``): the
whole authorisation-code flow of ``st.login`` against a local OpenID Connect provider, the new
identity a viewer until an admin gives a role, and signing out."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from sqlalchemy import select

from db.engine import dispose_engines, make_engine, session_scope
from db.users import User
from tests.browser.conftest import DEMO_IMAGES, free_port, running_app
from tests.oidc_provider import oidc_provider
from workbench.users import set_role

WAIT_MS = 120_000


def auth_secrets(path: Path, app_port: int, provider, name: str | None) -> Path:
    """The ``[auth]`` section of Streamlit's documentation pointing at ``provider``: the client in
    it, or in an ``[auth.NAME]`` section of its own (how several providers are set up)."""
    client = (f'client_id = "{provider.client_id}"\n'
              f'client_secret = "{provider.client_secret}"\n'
              f'server_metadata_url = "{provider.metadata_url}"\n')
    path.write_text(
        "[auth]\n"
        f'redirect_uri = "http://127.0.0.1:{app_port}/oauth2callback"\n'
        f'cookie_secret = "{secrets.token_hex(16)}"\n'
        + (client if name is None else f"[auth.{name}]\n{client}"),
        encoding="utf-8",
    )
    return path


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", [None, "company"])
def test_a_person_signs_in_at_the_provider_as_a_viewer_until_an_admin_gives_a_role(browser, tmp_path: Path,
                                                                                  name: str | None) -> None:
    button = "Sign in" if name is None else f"Sign in with {name}"
    with oidc_provider() as provider:
        port = free_port()
        config = auth_secrets(tmp_path / "secrets.toml", port, provider, name)
        with running_app(tmp_path, DEMO_IMAGES, {"WORKBENCH_SIGN_IN": "oidc"}, port=port,
                         streamlit_args=["--secrets.files", str(config)]) as app:
            page = browser.new_page()
            page.goto(app.url, wait_until="domcontentloaded")
            page.get_by_role("button", name=button, exact=True).click(timeout=WAIT_MS)
            page.get_by_text(f"Signed in as {provider.email} · viewer").wait_for(timeout=WAIT_MS)
            assert provider.tokens_issued == 1

            engine = make_engine(app.db_url)
            try:
                with session_scope(engine) as session:
                    assert session.scalar(select(User.role).where(User.name == provider.email)) == "viewer"
                    set_role(session, provider.email, "curator", by="boss")
            finally:
                dispose_engines()
            page.reload(wait_until="domcontentloaded")  # the role is read from the store on every run
            page.get_by_text(f"Signed in as {provider.email} · curator").wait_for(timeout=WAIT_MS)

            page.get_by_role("button", name="Sign out").click()
            page.get_by_role("button", name=button, exact=True).wait_for(timeout=WAIT_MS)
            page.reload(wait_until="domcontentloaded")  # the session cookie is gone, not just hidden
            page.get_by_role("button", name=button, exact=True).wait_for(timeout=WAIT_MS)
            assert not page.get_by_text("Signed in as").count()
