"""pages/04_People.py through streamlit's AppTest: curator picker, one image at a time, decisions,
skip, undo, conflicts, progress, starting a detection job."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import AuditLog
from tests.apptest_events import job_error
from workbench.jobs import list_jobs
from workbench.people.detect import detect_people
from workbench.people.detectors import make_detector
from workbench.people.queue import get_item, list_flags

PAGE = Path(__file__).resolve().parent.parent / "pages" / "04_People.py"


@pytest.fixture
def store(demo_app):
    """The demo store with every image flagged (annotations detector, threshold 0)."""
    detect_people(demo_app, "demo", make_detector("annotations"), threshold=0.0)
    return demo_app


def page(curator: str | None = "ana") -> AppTest:
    app = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not app.exception, [e.value for e in app.exception]
    if curator:
        app.selectbox(key="people_curator").set_value("New curator…").run()
        app.text_input(key="people_curator_new").input(curator).run()
        assert not app.exception, [e.value for e in app.exception]
    return app


def shown_file(app: AppTest) -> str:
    return app.subheader[0].value.split(" · ")[0]


def extra_regions(app: AppTest):
    return next(t for t in app.text_input if t.label.startswith("More regions"))


def flags(engine):
    with session_scope(engine) as session:
        return {i.file_name: i for i in list_flags(session, "demo")}


def test_without_a_curator_the_page_asks_for_one(store):
    app = page(curator=None)
    assert any("Pick who is reviewing" in i.value for i in app.info)
    assert not app.subheader and "0 of 12 flagged images decided" in app.get("progress")[0].proto.text


def test_a_new_curator_s_name_becomes_the_picked_curator(store):
    app = page("zoe")
    picker = app.selectbox(key="people_curator")
    assert picker.value == "zoe" and "zoe" in picker.options
    assert "people_curator_new" not in [t.key for t in app.text_input]  # the name box has done its job
    assert app.subheader  # the queue is open for zoe
    app.button(key="people_ok").click().run()
    assert app.selectbox(key="people_curator").value == "zoe"
    assert app.selectbox(key="people_curator").options.count("zoe") == 1  # stored now, listed once


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
        actions = list(session.scalars(select(AuditLog.action).order_by(AuditLog.id)))
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
    app = page(curator=None)
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
    app = page(curator=None)
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
