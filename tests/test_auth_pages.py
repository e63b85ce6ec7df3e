"""Sign-in and roles on the pages (AppTest): sign-in off says who the local admin is; with local
sign-in a viewer cannot write, a curator's decision carries their name, admin-only actions
(schemes, training, dataset deletion) are refused for a curator; the Audit page filters and
downloads CSV."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.engine import dispose_engines, session_scope
from db.models import AuditLog, Dataset
from tests.signin import add_users, sign_in
from workbench.audit import record
from workbench.captions.run import store_dataset_prompts
from workbench.users import remove_user, set_role

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(demo_engine, tmp_path, monkeypatch):
    """The demo store, sign-in local, with an admin, a curator and a viewer."""
    monkeypatch.setenv("WORKBENCH_DB_URL", demo_engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DEMO_IMAGES", "0")
    monkeypatch.setenv("WORKBENCH_SIGN_IN", "local")
    monkeypatch.delenv("WORKBENCH_USER", raising=False)
    st.cache_resource.clear()
    add_users(demo_engine, boss="admin", ana="curator", vic="viewer")
    yield demo_engine
    st.cache_resource.clear()
    dispose_engines()


def page(path: str, user: str | None, query: dict | None = None) -> AppTest:
    """A page (``Home.py`` or ``pages/NN_Name.py``), signed in as ``user``."""
    app = AppTest.from_file(str(ROOT / path), default_timeout=90)
    for key, value in (query or {}).items():
        app.query_params[key] = value
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return sign_in(app, user) if user else app


def audit_actions(engine) -> list[tuple[str, str]]:
    with session_scope(engine) as session:
        return [(r.curator, r.action) for r in session.scalars(select(AuditLog).order_by(AuditLog.id))
                if r.action.split(".")[0] != "user"]


def test_with_sign_in_off_the_local_user_is_an_admin_and_the_sidebar_says_so(store, monkeypatch):
    monkeypatch.setenv("WORKBENCH_SIGN_IN", "off")
    monkeypatch.setenv("WORKBENCH_USER", "kim")
    app = page("pages/06_Mixing.py", None)
    assert not [t for t in app.text_input if t.key == "sign_in_name"]
    assert any("**kim** · admin — sign-in is off" in i.value for i in app.sidebar.info)
    assert not app.button(key="mix_save").disabled


def test_every_page_asks_for_sign_in_before_showing_anything(store):
    for path in ["Home.py", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "pages").glob("*.py"))]:
        app = page(path, None)
        keys = [t.key for t in app.text_input]
        assert keys == ["sign_in_name", "sign_in_password"], (path, keys)
        assert not [b for b in app.button if b.key != "sign_in_submit"], path  # nothing to press but Sign in


def test_a_viewer_can_look_but_every_write_control_is_disabled(store):
    store_dataset_prompts(store, "demo")
    captions = page("pages/05_Captions.py", "vic")
    accepts = [b for b in captions.button if b.key and b.key.startswith("accept_")]
    assert accepts and all(b.disabled for b in accepts)
    assert captions.text_area  # the captions are shown
    assert any("deciding needs the curator role" in c.value for c in captions.sidebar.caption)
    mixing = page("pages/06_Mixing.py", "vic")
    assert mixing.button(key="mix_save").disabled and mixing.dataframe
    export = page("pages/07_Export.py", "vic")
    assert next(b for b in export.button if b.label == "Export").disabled
    home = page("Home.py", "vic")
    assert home.button(key="home_delete").disabled
    assert audit_actions(store) == []


def test_a_curator_decides_under_their_name_and_admin_only_actions_are_refused(store):
    store_dataset_prompts(store, "demo")
    captions = page("pages/05_Captions.py", "ana")
    first = next(b for b in captions.button if b.key and b.key.startswith("accept_"))
    first.click().run()
    assert audit_actions(store) == [("ana", "caption.accept")]

    inspect = page("pages/03_Inspect.py", "ana", {"dataset": "demo"})
    assert inspect.button(key="editor_save").disabled
    assert any("editing mask schemes needs the admin role" in c.value for c in inspect.caption)
    assert not inspect.button(key="inspect_flag").disabled  # flagging is a curator's decision

    train = page("pages/08_Train.py", "ana")
    assert train.button(key="train_start").disabled
    home = page("Home.py", "ana")
    assert home.button(key="home_delete").disabled
    assert audit_actions(store) == [("ana", "caption.accept")]  # nothing else was written


def test_an_admin_deletes_a_dataset_from_home_and_the_audit_page_shows_it(store):
    home = page("Home.py", "boss")
    home.text_input(key="home_delete_confirm").input("demo").run()
    home.button(key="home_delete").click().run()
    assert not home.exception
    with session_scope(store) as session:
        assert session.scalar(select(Dataset.id).where(Dataset.name == "demo")) is None
    audit = page("pages/13_Audit.py", "vic")  # viewers can read the log
    newest = audit.dataframe[0].value[["user", "action", "dataset"]].values.tolist()[0]
    assert newest == ["boss", "dataset.delete", "demo"]


def test_the_audit_page_filters_by_user_action_and_dataset_and_downloads_csv(store):
    with session_scope(store) as session:
        record(session, "ana", "people.decide", "people_flag", 1, dataset="demo")
        record(session, "ben", "recipe.save", "mix_recipe", "r@1", dataset="other")
    app = page("pages/13_Audit.py", "boss")
    shown = lambda: app.dataframe[0].value[["user", "action"]].values.tolist()  # noqa: E731
    assert ["ana", "people.decide"] in shown() and ["ben", "recipe.save"] in shown()
    app.sidebar.selectbox(key="audit_user").set_value("ana").run()
    assert shown() == [["ana", "people.decide"]]
    app.sidebar.selectbox(key="audit_user").set_value(None).run()
    app.sidebar.selectbox(key="audit_action").set_value("recipe").run()
    assert shown() == [["ben", "recipe.save"]]
    app.sidebar.selectbox(key="audit_action").set_value(None).run()
    app.sidebar.selectbox(key="audit_dataset").set_value("demo").run()
    assert shown() == [["ana", "people.decide"]]
    # The CSV travels to the browser by URL (AppTest cannot fetch it): the browser test and
    # tests/test_audit.py check its content.
    assert app.get("download_button")[0].proto.label == "Download CSV"


def test_a_removed_user_is_signed_out_at_once_and_sign_out_works(store):
    app = page("pages/06_Mixing.py", "ana")
    assert not app.button(key="mix_save").disabled
    app.sidebar.button(key="auth_sign_out").click().run()
    assert [t.key for t in app.text_input] == ["sign_in_name", "sign_in_password"]
    sign_in(app, "ana")
    with session_scope(store) as session:
        remove_user(session, "ana", by="boss")
    app.run()
    assert [t.key for t in app.text_input] == ["sign_in_name", "sign_in_password"]


# -- sign-in through an identity provider (st.login; the full flow runs in tests/browser/test_oidc_browser.py)
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "not-a-secret",
        "google": {"client_id": "g", "client_secret": "g", "server_metadata_url": "https://g.example/.well-known"},
        "okta": {"client_id": "o", "client_secret": "o", "server_metadata_url": "https://o.example/.well-known"}}


def oidc_page(path: str, user: dict, auth: dict | None = AUTH) -> AppTest:
    """A page with sign-in through OIDC, ``user`` as ``st.user``, ``auth`` as the secrets' [auth]."""
    app = AppTest.from_file(str(ROOT / path), default_timeout=90)
    if auth is not None:
        app.secrets["auth"] = auth
    app.user = user
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_with_oidc_each_provider_of_the_secrets_gets_a_sign_in_button(store, monkeypatch):
    monkeypatch.setenv("WORKBENCH_SIGN_IN", "oidc")
    app = oidc_page("pages/06_Mixing.py", {"is_logged_in": False})
    assert [b.label for b in app.button] == ["Sign in with google", "Sign in with okta"]
    assert not app.text_input  # no password form
    single = {"redirect_uri": AUTH["redirect_uri"], "cookie_secret": "not-a-secret", "client_id": "c",
              "client_secret": "s", "server_metadata_url": "https://c.example/.well-known"}
    assert [b.label for b in oidc_page("Home.py", {"is_logged_in": False}, single).button] == ["Sign in"]


def test_with_oidc_but_no_auth_section_the_page_says_what_to_add(store, monkeypatch):
    monkeypatch.setenv("WORKBENCH_SIGN_IN", "oidc")
    app = oidc_page("pages/06_Mixing.py", {"is_logged_in": False}, auth=None)
    assert any("have no [auth] section" in e.value and "WORKBENCH_SIGN_IN=local" in e.value for e in app.error), \
        [e.value for e in app.error]
    assert not app.button


def test_an_oidc_identity_is_a_viewer_until_promoted_and_a_removed_one_is_told_so(store, monkeypatch):
    monkeypatch.setenv("WORKBENCH_SIGN_IN", "oidc")
    app = oidc_page("pages/06_Mixing.py", {"is_logged_in": True, "email": "ada@example.org", "sub": "a1"})
    assert any("Signed in as **ada@example.org** · viewer" in i.value for i in app.sidebar.info)
    assert app.button(key="mix_save").disabled
    with session_scope(store) as session:
        set_role(session, "ada@example.org", "curator", by="boss")
    app.run()
    assert any("· curator" in i.value for i in app.sidebar.info)
    assert not app.button(key="mix_save").disabled
    with session_scope(store) as session:
        remove_user(session, "ada@example.org", by="boss")
    app.run()
    assert any("ada@example.org was removed" in e.value for e in app.error), [e.value for e in app.error]
    assert [b.key for b in app.button] == ["auth_sign_out"]
