"""Dataset look-ups and the pipeline status Home shows."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.engine import session_scope
from db.models import Image
from workbench.datasets import DatasetNotFound, ensure_demo_dataset, get_dataset
from workbench.pipeline import pipeline_status


def _steps(engine) -> dict[str, tuple[int, int]]:
    with session_scope(engine) as session:
        return {s.step: (s.done, s.total) for s in pipeline_status(session, "demo")}


def test_pipeline_status_follows_each_step_of_the_road(demo_engine):
    from workbench.people.queue import decide, flag_image

    steps = _steps(demo_engine)
    assert steps["imported"] == (12, 12)
    assert steps["mask schemes"] == (4, 4)  # the built-ins
    assert steps["people flags reviewed"] == (0, 0)
    assert steps["captions reviewed"] == (0, 12)
    assert steps["exports"] == steps["training jobs"] == (0, 0)
    with session_scope(demo_engine) as session:
        first, second = session.scalars(select(Image.id).order_by(Image.id).limit(2)).all()
        flag_image(session, first, "ana")
        flag_id = flag_image(session, second, "ana")
    with session_scope(demo_engine) as session:
        decide(session, flag_id, "ana", "exclude")
    assert _steps(demo_engine)["people flags reviewed"] == (1, 2)


def test_unknown_dataset_names_the_ones_there_are(demo_engine):
    with session_scope(demo_engine) as session, pytest.raises(DatasetNotFound, match=r"datasets: demo\)"):
        get_dataset(session, "nope")


def test_the_demo_build_counts_images_drawn_then_rows_stored(engine, tmp_path, monkeypatch):
    from workbench.settings import Settings

    monkeypatch.setenv("WORKBENCH_IMAGE_CHECK", "header")
    settings = Settings(data_dir=tmp_path / "data")
    calls: dict[tuple[str, str], list[tuple[int, int | None]]] = {}

    def stage(what: str, unit: str):
        calls[(what, unit)] = []
        return lambda done, total: calls[(what, unit)].append((done, total))

    report = ensure_demo_dataset(engine, settings, n_images=6, stage=stage)
    assert list(calls) == [("drawing images", "images"), ("importing rows", "rows")]
    images, rows = calls.values()
    assert images[0] == (0, 6) and images[-1] == (6, 6)
    rows_total = report.annotations + len(report.rejected)
    assert rows[0] == (0, rows_total) and rows[-1] == (rows_total, rows_total)
    for counts in (images, rows):
        assert [d for d, _ in counts] == sorted(d for d, _ in counts)
    # The rows are reported as they are stored, in many steps, not all at the end.
    assert len({d for d, _ in rows if 0 < d < rows_total}) >= 10
