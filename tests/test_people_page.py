"""pages/04_People.py through streamlit's AppTest: signed-in curators (sign-in local), one image at a
time, decisions under the signed-in name, skip, undo, conflicts, progress, viewers refused, starting a
detection job."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import AuditLog
from tests.apptest_events import job_error
from tests.job_waits import job_now, wait_job
from tests.signin import add_users, sign_in
from workbench.jobs import list_jobs
from workbench.people.detect import detect_people
from workbench.people.detectors import make_detector
from workbench.people.queue import get_item, list_flags

PAGE = Path(__file__).resolve().parent.parent / "pages" / "04_People.py"


@pytest.fixture
def store(demo_app, monkeypatch):
    """The demo store with every image flagged (annotations detector, threshold 0), sign-in on
    with curators ana, ben and zoe and a viewer vic."""
    monkeypatch.setenv("WORKBENCH_SIGN_IN", "local")
    add_users(demo_app, ana="curator", ben="curator", zoe="curator", vic="viewer")
    detect_people(demo_app, "demo", make_detector("annotations"), threshold=0.0)
    return demo_app


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


# -- repairs --------------------------------------------------------------------------------------
def repair_box(app: AppTest, box) -> None:
    """Type the repair box (x0, y0, x1, y1) into its four number inputs (keys end in the image's id)."""
    for corner, value in zip(("x0", "y0", "x1", "y1"), box):
        next(n for n in app.number_input if n.key and n.key.startswith(f"repair_{corner}_")).set_value(value)
    app.run()


def fill_repair(app: AppTest, box, action: str, **values) -> None:
    """Fill the repair panel: the box, erase or label, then each widget named by its key without
    ``repair_`` (models and the prompt are typed, steps set, the rest chosen), in the order given."""
    repair_box(app, box)
    app.radio(key="repair_action").set_value(action).run()
    for name, value in values.items():
        key = f"repair_{name}"
        if name.endswith("model") or name == "prompt":
            app.text_input(key=key).input(str(value)).run()
        elif name == "steps":
            app.number_input(key=key).set_value(value).run()
        else:
            app.selectbox(key=key).set_value(value).run()


def preview_captions(app: AppTest) -> list[str]:
    return [i.proto.imgs[0].caption for i in app.get("image")]


def wait_for(app: AppTest, done, what: str, timeout: float = 300) -> None:
    """Rerun the page (as its job panel's timer does) until ``done()`` holds; a failure after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not done():
        assert not app.exception, [e.value for e in app.exception]
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout} s: errors {[e.value for e in app.error]}, "
                        f"warnings {[w.value for w in app.warning]}")
        time.sleep(1)
        app.run()


def preview_job(store) -> dict:
    with session_scope(store) as session:
        [job] = list_jobs(session, kind="repair-preview", dataset="demo")
        return job_now(store, job.id)


def test_label_a_person_with_a_manual_box_then_erase_then_remove(store, demo_files):
    from workbench.repair import list_repairs

    app = page()
    name = shown_file(app)
    # the box starts at the proposal the detector thinks most probably unlabelled
    corners = [n.value for n in app.number_input if n.key and n.key.startswith("repair_")]
    assert len(corners) == 4 and corners[2] > corners[0] and corners[3] > corners[1]
    assert app.button(key="repair_save").disabled  # nothing previewed yet
    repair_box(app, (10, 20, 60, 120))
    app.radio(key="repair_action").set_value("label").run()
    app.selectbox(key="repair_source").set_value("manual").run()
    app.selectbox(key="repair_category").set_value("dress").run()
    app.button(key="repair_preview_button").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert "Preview: dress" in [i.proto.imgs[0].caption for i in app.get("image")]
    assert not app.button(key="repair_save").disabled
    app.button(key="repair_save").click().run()
    assert any(f"{name}: repair #" in s.value for s in app.success)
    assert shown_file(app) == name  # the image stays until the curator decides it
    assert any(c.value.endswith("· repaired (1 repair)") for c in app.caption)
    with session_scope(store) as session:
        [label] = list_repairs(session, "demo", name)
    assert (label.action, label.source, label.curator, label.box) == ("label", "manual", "ana", [10, 20, 60, 120])
    assert label.masks[0]["category"] == "dress" and label.masks[0]["area"] == 50 * 100

    app.radio(key="repair_action").set_value("erase").run()
    app.selectbox(key="repair_method").set_value("fill").run()
    app.button(key="repair_preview_button").click().run()
    app.button(key="repair_save").click().run()
    with session_scope(store) as session:
        erase = list_repairs(session, "demo", name)[-1]
    assert (erase.action, erase.source) == ("erase", "fill") and Path(erase.photo_path).is_file()
    app.button(key=f"repair_remove_{label.id}").click().run()
    with session_scope(store) as session:
        assert [r.id for r in list_repairs(session, "demo", name)] == [erase.id]


def test_the_detector_proposal_button_fills_the_box(store):
    app = page()
    repair_box(app, (0, 0, 5, 5))
    app.button(key="repair_proposal").click().run()
    corners = [n.value for n in app.number_input if n.key and n.key.startswith("repair_")]
    assert corners != [0, 0, 5, 5] and corners[2] > corners[0] and corners[3] > corners[1]
    assert any("Box from the annotations" in i.value for i in app.info)


def test_label_with_sam_from_a_model_path_is_marked_as_random_weights(store, tiny_sam_dir):
    from workbench.repair import list_repairs

    app = page()
    name = shown_file(app)
    fill_repair(app, (10, 20, 90, 160), "label", source="sam", category="coat", sam_model=tiny_sam_dir)
    assert any("random weights" in w.value for w in app.warning)  # the picker says what it is
    app.button(key="repair_preview_button").click().run()
    assert not app.error, [e.value for e in app.error]
    wait_for(app, lambda: "Preview: coat" in preview_captions(app), "the SAM preview")  # a background job
    app.button(key="repair_save").click().run()
    with session_scope(store) as session:
        [label] = list_repairs(session, "demo", name)
    assert (label.source, label.model, label.random_weights) == ("sam", str(tiny_sam_dir), True)
    assert any("random weights (tiny test model)" in c.value for c in app.caption)


def test_an_inpaint_preview_runs_as_a_job_and_save_stores_the_photo_it_showed(store, tiny_inpaint_dir):
    from PIL import Image as PILImage

    from workbench.repair import list_repairs

    app = page()
    name = shown_file(app)
    fill_repair(app, (10, 20, 90, 160), "erase", method="inpaint", inpaint_model=tiny_inpaint_dir, steps=2)
    app.button(key="repair_preview_button").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert app.button(key="repair_save").disabled  # nothing to save while the job runs
    wait_for(app, lambda: "Preview: erased" in preview_captions(app), "inpainting preview")
    job = preview_job(store)
    assert job["status"] == "finished" and (job["done"], job["total"]) == (2, 2)  # the inpainting steps
    assert job["argv"][:2] == ["people", "repair"] and "--preview-only" in job["argv"]
    edited = np.asarray(PILImage.open(Path(job["details"]["preview"]) / "edited.png").convert("RGB"))
    shown = np.asarray(app.session_state["repair_preview"]["preview"].edited)
    assert (shown == edited).all()
    assert not app.button(key="repair_save").disabled
    app.button(key="repair_save").click().run()
    assert any(f"{name}: repair #" in s.value for s in app.success)
    with session_scope(store) as session:
        [erase] = list_repairs(session, "demo", name)
    assert (erase.action, erase.source, erase.model, erase.curator) == ("erase", "inpaint", str(tiny_inpaint_dir), "ana")
    assert (np.asarray(PILImage.open(erase.photo_path).convert("RGB")) == edited).all()  # what was shown


def test_a_missing_model_fails_the_preview_job_with_its_fix_and_nothing_is_saved(store, monkeypatch, tmp_path):
    from workbench.repair import list_repairs

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    app = page()
    fill_repair(app, (10, 20, 90, 160), "label", source="sam", category="coat")  # the model stays sam-vit-base
    app.button(key="repair_preview_button").click().run()
    job_id = preview_job(store)["id"]
    error = job_error(app, f"Preview job {job_id}")
    assert error.startswith(f"Preview job {job_id} failed before its first step: SAM (segment anything) "
                            "'sam-vit-base' is missing") and error.endswith("Nothing was saved.")
    assert any(i.value.startswith("Fix: ") and "facebook/sam-vit-base" in i.value for i in app.info)
    assert app.button(key="repair_save").disabled and "Preview: coat" not in preview_captions(app)
    with session_scope(store) as session:
        assert list_repairs(session, "demo") == []


def test_a_cancelled_preview_job_is_said_and_nothing_is_saved(store, tiny_inpaint_dir):
    from workbench.repair import list_repairs

    app = page()
    # 200 steps take minutes at 512 px: cancelled long before
    fill_repair(app, (10, 20, 90, 160), "erase", method="inpaint", inpaint_model=tiny_inpaint_dir, steps=200)
    app.button(key="repair_preview_button").click().run()
    job_id = preview_job(store)["id"]
    wait_job(store, job_id, lambda job: job["message"] == "inpainting", timeout=240)  # cancelled between steps
    app.run().button(key=f"job_cancel_{job_id}").click().run()
    wait_for(app, lambda: any(w.value == f"Preview job {job_id} cancelled. Nothing was saved." for w in app.warning),
             "cancelled preview job", timeout=120)
    assert preview_job(store)["status"] == "cancelled"
    assert app.button(key="repair_save").disabled and "Preview: erased" not in preview_captions(app)
    with session_scope(store) as session:
        assert list_repairs(session, "demo") == []


def test_a_box_the_repair_cannot_use_is_said_at_once_and_starts_no_job(store):
    app = page()
    fill_repair(app, (60, 20, 10, 120), "label", source="sam", category="coat")  # x1 left of x0
    app.button(key="repair_preview_button").click().run()
    assert any("x1 must be greater than x0" in e.value for e in app.error)
    assert app.button(key="repair_save").disabled
    with session_scope(store) as session:
        assert list_jobs(session, kind="repair-preview") == []
