"""pages/04_People.py through streamlit's AppTest: signed-in curators (sign-in local), one image at a
time, decisions under the signed-in name, skip, undo, conflicts, progress, viewers refused, starting a
detection job."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.engine import dispose_engines, session_scope
from db.models import AuditLog
from tests.apptest_events import job_error
from tests.signin import add_users, sign_in
from workbench.jobs import list_jobs
from workbench.people.detect import detect_people
from workbench.people.detectors import make_detector
from workbench.people.queue import get_item, list_flags

PAGE = Path(__file__).resolve().parent.parent / "pages" / "04_People.py"


@pytest.fixture
def store(demo_engine, tmp_path, monkeypatch):
    """The demo store with every image flagged (annotations detector, threshold 0), sign-in on
    with curators ana, ben and zoe and a viewer vic."""
    monkeypatch.setenv("WORKBENCH_DB_URL", demo_engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("WORKBENCH_SIGN_IN", "local")
    add_users(demo_engine, ana="curator", ben="curator", zoe="curator", vic="viewer")
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DEMO_IMAGES", "0")
    st.cache_resource.clear()
    detect_people(demo_engine, "demo", make_detector("annotations"), threshold=0.0)
    yield demo_engine
    st.cache_resource.clear()
    dispose_engines()


def page(curator: str | None = "ana") -> AppTest:
    """The page, signed in as ``curator`` (``None``: not signed in)."""
    app = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not app.exception, [e.value for e in app.exception]
    return sign_in(app, curator) if curator else app


def shown_file(app: AppTest) -> str:
    return app.subheader[0].value.split(" · ")[0]


def extra_regions(app: AppTest):
    return next(t for t in app.text_input if t.label.startswith("More regions"))


def flags(engine):
    with session_scope(engine) as session:
        return {i.file_name: i for i in list_flags(session, "demo")}


def test_nothing_but_the_sign_in_form_until_signed_in(store):
    app = page(curator=None)
    assert [t.key for t in app.text_input] == ["sign_in_name", "sign_in_password"]
    assert not app.subheader and not app.get("progress")
    sign_in(app, "ana", "wrong password")
    assert "Wrong user name or password" in app.error[0].value and not app.get("progress")


def test_the_signed_in_curator_decides_under_their_name(store):
    app = page("zoe")
    assert any("Signed in as **zoe** · curator" in i.value for i in app.sidebar.info)
    assert any("Deciding as **zoe**" in m.value for m in app.markdown)
    assert not [t for t in app.text_input if t.label in ("Curator", "Your name")]  # no name to type
    name = shown_file(app)
    app.button(key="people_ok").click().run()
    assert flags(store)[name].curator == "zoe"
    with session_scope(store) as session:
        row = session.scalars(select(AuditLog).where(AuditLog.action == "people.decide")).one()
    assert (row.curator, row.dataset) == ("zoe", "demo")


def test_a_viewer_sees_the_progress_but_cannot_decide_or_detect(store):
    app = page("vic")
    assert "0 of 12 flagged images decided" in app.get("progress")[0].proto.text
    assert not app.subheader and not [b for b in app.button if b.key == "people_ok"]  # no image claimed
    assert any("deciding needs the curator role" in c.value for c in app.caption)
    assert app.button(key="people_start_detection").disabled
    with session_scope(store) as session:
        assert not [f for f in list_flags(session, "demo") if f.status != "pending"]


def test_the_worst_image_is_shown_with_its_proposals_and_decided_with_a_button(store):
    app = page()
    worst = list(flags(store).values())[0]
    assert shown_file(app) == worst.file_name
    assert app.get("image") and app.dataframe and not app.error  # the photo and its proposals
    app.button(key="people_ok").click().run()
    decided = flags(store)[worst.file_name]
    assert (decided.status, decided.decision, decided.curator) == ("decided", "ok", "ana")
    assert shown_file(app) != worst.file_name  # the next image
    assert any(worst.file_name in s.value for s in app.success)
    assert "1 of 12 flagged images decided" in app.get("progress")[-1].proto.text


def test_exclude_skip_and_undo(store):
    app = page()
    first = shown_file(app)
    app.button(key="people_exclude").click().run()
    second = shown_file(app)
    app.button(key="people_skip").click().run()
    assert flags(store)[second].status == "skipped"
    app.button(key="people_undo").click().run()  # takes back the skip: the image is shown again
    assert shown_file(app) == second and flags(store)[second].status == "pending"
    app.button(key="people_undo").click().run()  # and the exclusion
    assert shown_file(app) == first and flags(store)[first].decision is None
    with session_scope(store) as session:
        actions = list(session.scalars(select(AuditLog.action).where(AuditLog.curator == "ana").order_by(AuditLog.id)))
    assert actions == ["people.decide", "people.skip", "people.undo", "people.undo"]


def test_mask_region_takes_the_chosen_proposal_boxes(store):
    app = page()
    name = shown_file(app)
    app.multiselect[0].set_value([]).run()
    assert app.button(key="people_mask").disabled  # nothing marked yet
    extra_regions(app).input("10,20,30,40").run()
    app.button(key="people_mask").click().run()
    decided = flags(store)[name]
    assert (decided.decision, decided.regions) == ("mask-region", [[10.0, 20.0, 30.0, 40.0]])


def test_a_bad_region_is_an_error_not_a_traceback(store):
    app = page()
    extra_regions(app).input("10,20,oops").run()
    assert not app.exception
    assert "must be x,y,w,h" in app.error[0].value
    assert app.button(key="people_mask").disabled


def test_two_curators_get_different_images_and_a_conflict_is_shown(store):
    ana, ben = page("ana"), page("ben")
    assert shown_file(ana) != shown_file(ben)
    # ben decides ana's image from the CLI while she looks at it; her contrary decision is a conflict
    name = shown_file(ana)
    with session_scope(store) as session:
        from workbench.people.queue import decide

        decide(session, flags(store)[name].flag_id, "ben", "exclude")
    ana.button(key="people_ok").click().run()
    assert any("both decisions are kept" in w.value for w in ana.warning)
    assert shown_file(ana) == name  # conflicts come first: back to ana, with both decisions shown
    disagreement = next(w.value for w in ana.warning if "Curators disagreed" in w.value)
    assert "ben: **exclude**" in disagreement and "ana: **ok** (conflict" in disagreement
    with session_scope(store) as session:
        assert get_item(session, flags(store)[name].flag_id).conflict


def test_start_detection_launches_a_background_job(store):
    app = page()
    app.selectbox(key="people_detector").set_value("annotations").run()
    app.button(key="people_start_detection").click().run()
    assert not app.exception
    assert any("Detection started as job" in s.value for s in app.success)
    with session_scope(store) as session:
        [job] = list_jobs(session, kind="people-detect", dataset="demo")
        assert job.argv[:6] == ["people", "detect", "--dataset", "demo", "--detector", "annotations"]
    from workbench.jobs import cancel_job

    cancel_job(store, job.id, grace_seconds=10)


def test_an_empty_queue_says_so(store):
    app = page()
    for _ in range(12):
        app.button(key="people_ok").click().run()
    assert any("Nothing left for you" in s.value for s in app.success)
    assert "12 of 12 flagged images decided" in app.get("progress")[-1].proto.text


def test_a_detection_that_fails_shows_its_reason_on_the_page(store, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the job cannot reach the hub, nor has it the weights
    app = page()
    app.selectbox(key="people_detector").set_value("grounding-dino").run()
    app.button(key="people_start_detection").click().run()
    with session_scope(store) as session:
        [job] = list_jobs(session, kind="people-detect", dataset="demo")
        job_id = job.id
    error = job_error(app, f"Detection job {job_id}")
    # the registry's reason and fix, rather than "exit code 2"
    assert error.startswith(f"Detection job {job_id} failed before its first step: Grounding DINO "
                            "'IDEA-Research/grounding-dino-base' is missing")
    assert "models add grounding-dino-base PATH" in error
    assert app.code[0].proto.wrap_lines and "Grounding DINO" in app.code[0].value
    assert not [b for b in app.button if b.label == "Resume"]  # nothing was done that a rerun would keep
    assert [b.label for b in app.button if b.label == "Run again"] == ["Run again"]
