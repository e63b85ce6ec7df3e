"""Load through the app: 8 Captions page sessions (AppTest) editing the same caption, on SQLite
and PostgreSQL: every save is stored or shown as "Not saved" with the other version, the audit
log holds every stored one, no exception reaches a page."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.captions import Caption
from db.engine import session_scope
from db.models import AuditLog
from tests.signin import add_users, sign_in
from workbench.load import prepare

pytestmark = pytest.mark.both_databases

PAGE = Path(__file__).resolve().parent.parent / "pages" / "05_Captions.py"
SESSIONS = 8


@pytest.fixture
def store(demo_app, monkeypatch):
    """The app's demo store with a caption on its first image and sign-in on, with one curator
    per session; returns its engine and the caption id."""
    monkeypatch.setenv("WORKBENCH_SIGN_IN", "local")
    add_users(demo_app, **{f"curator{n + 1}": "curator" for n in range(SESSIONS)})
    return demo_app, prepare(demo_app, "demo", 1).caption_ids[0]


def session(curator: str) -> AppTest:
    app = sign_in(AppTest.from_file(str(PAGE), default_timeout=90).run(), curator)
    app.sidebar.multiselect(key="captions_sources").set_value(["load"]).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def refused(app: AppTest) -> bool:
    return any(w.value.startswith("Not saved") for w in app.warning)


def test_eight_page_sessions_editing_one_caption_store_or_refuse_every_save(store):
    engine, caption_id = store
    apps = {f"curator{n + 1}": session(f"curator{n + 1}") for n in range(SESSIONS)}
    stored: list[str] = []
    # Round 1: everyone saves an edit of the version they all loaded; round 2: those refused
    # apply theirs on top of the version they were shown, the others edit again.
    for round_ in (1, 2):
        for curator, app in apps.items():
            if round_ == 2 and refused(app):
                app.button(key="conflict_mine").click().run()
            else:
                app.text_area(key=f"caption_text_{caption_id}").set_value(f"{curator} edit {round_}")
                app.button(key=f"save_{caption_id}").click().run()
            assert not app.exception, [e.value for e in app.exception]
            assert not app.error, [e.value for e in app.error]
            if not refused(app):
                stored.append(curator)
        if round_ == 1:
            assert len(stored) == 1, "all sessions saved against the same version: only the first may win"

    with session_scope(engine) as s:
        caption = s.get(Caption, caption_id)
        audited = [a.curator for a in s.scalars(select(AuditLog).where(AuditLog.entity == "caption",
                                                                      AuditLog.entity_id == str(caption_id))
                                                .order_by(AuditLog.id))]
    assert caption.version == 1 + len(stored)
    assert audited == stored
    assert caption.text.startswith(f"{stored[-1]} edit ")
