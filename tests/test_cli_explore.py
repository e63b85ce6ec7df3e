"""CLI twins of the Explore pages: ``eda`` aggregates and ``schemes list|show|save``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from db.engine import session_scope
from db.models import Annotation, Category, Image
from workbench.cli import app


@pytest.fixture
def cli(demo_engine, tmp_path, monkeypatch):
    """Run ``python -m workbench --db <demo copy> ...`` in-process; returns the result."""
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    url = demo_engine.url.render_as_string(hide_password=False)
    runner = CliRunner()

    def run(*args: str, input: str | None = None):
        return runner.invoke(app, ["--db", url, *args], input=input)

    return run


def test_eda_json_prints_the_aggregates_behind_the_charts(cli, demo_engine) -> None:
    result = cli("eda", "--dataset", "demo", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    with session_scope(demo_engine) as session:
        images = session.scalar(select(func.count(Image.id)))
        masks = session.scalar(select(func.count(Annotation.id)))
        shoes = session.scalar(select(func.count(Annotation.id)).join(Category)
                               .where(Category.name == "shoe"))
    assert (data["images"], data["masks"]) == (images, masks)
    assert {r["category"]: r["masks"] for r in data["categories"]}["shoe"] == shoes
    assert sum(r["images"] for r in data["masks_per_image"]) == images
    assert {"attributes", "cooccurrence", "image_sizes", "aspect_ratios", "area_fraction",
            "splits", "supercategories", "attribute_supercategories", "facets"} <= set(data)


def test_eda_filters_match_the_page_filters(cli, demo_engine) -> None:
    result = cli("eda", "--dataset", "demo", "--json", "--category", "dress")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    with session_scope(demo_engine) as session:
        with_dress = session.scalar(
            select(func.count(func.distinct(Annotation.image_id))).join(Category)
            .where(Category.name == "dress"))
    assert data["images"] == with_dress
    assert data["filter"]["categories"] == ["dress"]


def test_eda_errors_name_the_problem(cli) -> None:
    missing = cli("eda", "--dataset", "nope")
    assert missing.exit_code == 2 and "no dataset named 'nope'" in missing.stderr
    typo = cli("eda", "--dataset", "demo", "--category", "dresss")
    assert typo.exit_code == 2 and "no category 'dresss'" in typo.stderr
    facet = cli("eda", "--dataset", "demo", "--facet", "people")
    assert facet.exit_code == 2 and "NAME=VALUE" in facet.stderr


def test_schemes_list_show_save_round_trip(cli, tmp_path: Path) -> None:
    listed = json.loads(cli("schemes", "list").stdout)
    assert {"fine", "body-parts", "cloth-seg", "cloth-seg-compat"} <= {s["name"] for s in listed}
    shown = json.loads(cli("schemes", "show", "body-parts").stdout)
    assert shown["version"] == 1 and shown["definition"]["name"] == "body-parts"

    definition = shown["definition"]
    definition["mapping"]["dress"] = "upper body"
    path = tmp_path / "scheme.json"
    path.write_text(json.dumps(shown))  # `show` output is accepted as is
    saved = cli("schemes", "save", str(path), "--curator", "ana", "--based-on", "1")
    assert saved.exit_code == 0, saved.output
    assert json.loads(saved.stdout) == {"name": "body-parts", "version": 2, "curator": "ana"}
    again = json.loads(cli("schemes", "show", "body-parts").stdout)
    assert again["definition"]["mapping"]["dress"] == "upper body"
    old = json.loads(cli("schemes", "show", "body-parts", "--version", "1").stdout)
    assert old["definition"]["mapping"]["dress"] == "full body"

    stale = cli("schemes", "save", str(path), "--based-on", "1")
    assert stale.exit_code == 1 and "started from version 1" in stale.stderr

    piped = cli("schemes", "save", "-", "--name", "my-parts", input=json.dumps(definition))
    assert json.loads(piped.stdout)["name"] == "my-parts"
    everything = json.loads(cli("schemes", "list", "--all-versions").stdout)
    assert [s["version"] for s in everything if s["name"] == "body-parts"] == [1, 2]


def test_schemes_save_rejects_bad_definitions_with_the_reason(cli, tmp_path: Path) -> None:
    bad = cli("schemes", "save", "-", input=json.dumps(
        {"name": "x", "classes": [{"value": 0, "name": "background", "colour": [0, 0, 0]}],
         "mapping": {"dress": "full body"}}))
    assert bad.exit_code == 2 and "unknown class 'full body'" in bad.stderr
    not_json = cli("schemes", "save", "-", input="{nope")
    assert not_json.exit_code == 2 and "not JSON" in not_json.stderr
    unknown = cli("schemes", "show", "nope")
    assert unknown.exit_code == 2 and "no mask scheme named 'nope'" in unknown.stderr
