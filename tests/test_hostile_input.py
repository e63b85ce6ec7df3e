"""Bad input never crashes, hangs, exhausts memory or escapes (workbench/guard.py and its callers).

Each class of bad input is tried through the CLI as a user would type it: the command ends with
exit code 2 and one ``error:`` line naming the value, and nothing is written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from db.engine import make_engine, session_scope
from workbench import guard
from workbench.cli import app
from workbench.datasets import list_datasets
from workbench.formats.imat2019_rows import RowParser
from tests.test_cli import db_url, source  # noqa: F401  (fixtures: a store of its own, a tiny dataset)

PAGES = Path(__file__).resolve().parent.parent / "pages"
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def shop(source) -> dict[str, Path]:
    """test_cli's image and train.csv with its good row only (rows a test adds start on line 3)."""
    header, good = source["csv"].read_text(encoding="utf-8").splitlines()[:2]
    source["csv"].write_text(f"{header}\n{good}\n", encoding="utf-8")
    return {**source, "rle": good.split(",")[1]}


def cli(db_url: str, *args: str):
    return CliRunner().invoke(app, ["--db", db_url, *args])


def usage_error(result, *named: str) -> str:
    """The command was refused as a usage error: exit 2, no traceback, the message names ``named``."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for text in named:
        assert text in result.output, (text, result.output)
    return result.output


def datasets(db_url: str) -> list[str]:
    with session_scope(make_engine(db_url)) as session:
        return list_datasets(session)


def import_imat(db_url: str, shop: dict, *extra: str, name: str = "shop", csv: Path | None = None,
                labels: Path | None = None):
    return cli(db_url, "import", "imat2019", "--csv", str(csv or shop["csv"]), "--labels",
               str(labels or shop["labels"]), "--images", str(shop["images"]), "--name", name, *extra)


# -- names ------------------------------------------------------------------------------------------
@FAST
@given(st.text(max_size=300))
def test_a_name_is_refused_exactly_when_it_breaks_a_rule(name: str) -> None:
    breaks = (not name.strip() or name != name.strip() or len(name) > guard.MAX_NAME_LENGTH
              or any(c in name for c in "/\\") or ".." in name
              or any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in name))
    try:
        assert guard.check_name(name) == name
        refused = False
    except guard.InputRefused as exc:
        refused = True
        assert "dataset name" in str(exc) and "\n" not in str(exc)
        assert len(str(exc)) < 400  # a 100k-character name is cut in the message
    if breaks:
        assert refused


@pytest.mark.parametrize("name", ["", "   ", "../etc", "a/b", "a\\b", "a\x01b", "x" * 100_000, " padded"])
def test_import_refuses_a_bad_dataset_name_and_writes_nothing(db_url, shop, name) -> None:
    report = shop["csv"].parent / "report.json"
    out = usage_error(import_imat(db_url, shop, "--report", str(report), name=name), "dataset name")
    assert len(out.strip().splitlines()) == 1
    assert datasets(db_url) == []
    assert not report.exists()


# -- numbers in a CSV ---------------------------------------------------------------------------------
@FAST
@given(st.integers(min_value=-(10**40), max_value=10**40) | st.text(alphabet="0123456789-+e. ", min_size=1, max_size=60))
def test_any_height_is_parsed_or_rejected_with_its_line(value) -> None:
    parser = RowParser(columns={"ImageId": 0, "EncodedPixels": 1, "Height": 2, "Width": 3, "ClassId": 4},
                       variant_2020=False, categories=frozenset({10}), attributes=frozenset())
    lines, rows, rejected = parser.parse_chunk(f"a.jpg,1 2,{value},40,10\n".encode())
    assert lines == 1 and len(rows) + len(rejected) == 1
    if rejected:
        assert rejected[0].line == 0 and "Height" in rejected[0].reason


def test_numbers_past_64_bits_reject_their_rows_and_the_import_goes_on(db_url, shop) -> None:
    with shop["csv"].open("a", encoding="utf-8") as f:
        f.write(f"a.jpg,{shop['rle']},{'9' * 30},40,10\n")
        f.write(f"a.jpg,{shop['rle']},30,-5,10\n")
        f.write(f"a.jpg,{shop['rle']},30,{2**40},10\n")
    report = shop["csv"].parent / "report.json"
    result = import_imat(db_url, shop, "--report", str(report))
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["annotations"] == 1
    assert [r["line"] for r in data["rejected"]] == [3, 4, 5]
    assert "Height" in data["rejected"][0]["reason"] and "Width" in data["rejected"][1]["reason"]


# -- files that are not text, JSON built to exhaust memory ----------------------------------------------
def test_a_binary_file_where_a_csv_or_json_is_expected_is_one_clear_error(db_url, shop, tmp_path) -> None:
    binary = tmp_path / "photo.jpg"
    binary.write_bytes(bytes(range(256)) * 64)
    usage_error(import_imat(db_url, shop, csv=binary), str(binary), "not a text file")
    usage_error(import_imat(db_url, shop, labels=binary), str(binary), "not a text file")
    usage_error(cli(db_url, "import", "coco", "--annotations", str(binary), "--images", str(shop["images"]),
                    "--name", "c"), str(binary))
    usage_error(cli(db_url, "schemes", "save", str(binary)), str(binary))
    assert datasets(db_url) == []


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deeply_nested_json_is_refused_quickly(db_url, shop, tmp_path, depth) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"categories": [], "info": ' + "[" * depth + "]" * depth + "}")
    start = time.monotonic()
    usage_error(import_imat(db_url, shop, labels=deep), "nested", "limit of 64")
    usage_error(cli(db_url, "import", "coco", "--annotations", str(deep), "--images", str(shop["images"]),
                    "--name", "c"), "nested")
    assert time.monotonic() - start < 30
    assert datasets(db_url) == []


@FAST
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=40))
def test_user_json_is_read_as_json_reads_it_within_the_limits(value) -> None:
    text = json.dumps(value)
    assert guard.loads_json(text, "file") == json.loads(text)


@FAST
@given(st.recursive(st.none() | st.integers() | st.text(alphabet='ab"\\[]{}', max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='k"\\[', max_size=4),
                                                                              inner, max_size=3),
                    max_leaves=30),
       st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=6))
def test_the_streaming_nesting_check_counts_depth_as_a_parser_does(value, cuts) -> None:
    import ijson

    data = json.dumps(value).encode()
    depth = deepest = 0
    for event, _ in ijson.basic_parse(data):
        depth += {"start_map": 1, "start_array": 1, "end_map": -1, "end_array": -1}.get(event, 0)
        deepest = max(deepest, depth)
    checker = guard.JsonNesting("file", max_depth=deepest)
    start = 0
    for cut in cuts * (len(data) // sum(cuts) + 1):  # chunks of varied sizes, cutting anywhere
        checker.feed(data[start:start + cut])
        start += cut
    assert checker.depth == 0 and not checker.in_string
    if deepest:
        with pytest.raises(guard.InputRefused, match=f"nested {deepest} levels"):
            tight = guard.JsonNesting("file", max_depth=deepest - 1)
            tight.feed(data)


def test_a_10mb_string_in_a_recipe_is_refused_within_seconds(db_url, tmp_path) -> None:
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"trigger_word": "a " * 5_000_000}))
    start = time.monotonic()
    usage_error(cli(db_url, "captions", "mix", "--dataset", "demo", "--recipe", str(recipe)), str(recipe), "limit")
    assert time.monotonic() - start < 10
    from workbench.captions.mixing import MixRecipe

    start = time.monotonic()
    with pytest.raises(ValueError, match="trigger_word"):
        MixRecipe(trigger_word="a" * 10_000_000)  # what a page's text box would pass
    assert time.monotonic() - start < 2


# -- unknown keys ------------------------------------------------------------------------------------------
def test_a_misspelt_recipe_key_is_refused_naming_the_known_ones(db_url, tmp_path) -> None:
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"trigger": "sks"}))
    usage_error(cli(db_url, "captions", "mix", "--dataset", "demo", "--recipe", str(recipe)),
                "trigger: not a known key", "did you mean trigger_word?", "known keys:", "separator")


def test_a_misspelt_training_config_key_is_refused_naming_the_known_ones(db_url, tmp_path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(f"pretrained_model_name_or_path: x\ntrain_data_dir: {tmp_path}\n"
                      f"output_dir: {tmp_path / 'run'}\nlearning_rat: 1e-4\n")
    usage_error(cli(db_url, "train", "run", "--config", str(config)),
                "learning_rat", "did you mean learning_rate?", "known keys:")
    assert not (tmp_path / "run").exists()


def test_a_misspelt_scheme_key_is_refused_naming_the_known_ones(db_url, tmp_path) -> None:
    scheme = tmp_path / "scheme.json"
    scheme.write_text(json.dumps({"name": "mine", "classes": [], "mapping": {}, "draw_ordre": []}))
    usage_error(cli(db_url, "schemes", "save", str(scheme)), "draw_ordre", "did you mean draw_order?")


# -- file names and symlinks in an image folder ----------------------------------------------------------------
def test_a_symlink_out_of_the_image_folder_is_a_rejected_row_not_an_import(db_url, tmp_path) -> None:
    images, outside = tmp_path / "photos", tmp_path / "private"
    images.mkdir()
    outside.mkdir()
    Image.new("RGB", (8, 8), "red").save(images / "inside.jpg")
    Image.new("RGB", (8, 8), "blue").save(outside / "secret.jpg")
    (images / "escape.jpg").symlink_to(outside / "secret.jpg")
    report = tmp_path / "report.json"
    result = cli(db_url, "import", "folder", "--images", str(images), "--name", "photos", "--report", str(report))
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["images"] == 1
    assert [r["image_id"] for r in data["rejected"]] == ["escape.jpg"]
    assert "outside the images folder" in data["rejected"][0]["reason"]
    from workbench.formats.images import image_file

    assert image_file(images, "escape.jpg") is None  # what exports, thumbnails and captioners read through
    assert image_file(images, "inside.jpg") == images / "inside.jpg"


def test_a_csv_row_naming_a_symlink_out_of_the_folder_is_rejected(db_url, shop, tmp_path) -> None:
    Image.new("RGB", (40, 30), "blue").save(tmp_path / "secret.jpg")
    (shop["images"] / "b.jpg").symlink_to(tmp_path / "secret.jpg")
    with shop["csv"].open("a", encoding="utf-8") as f:
        f.write(f"b.jpg,{shop['rle']},30,40,10\n")
    report = tmp_path / "report.json"
    assert import_imat(db_url, shop, "--report", str(report)).exit_code == 0
    rejected = json.loads(report.read_text())["rejected"]
    assert [(r["line"], r["image_id"]) for r in rejected] == [(3, "b.jpg")]


@pytest.mark.skipif(os.name != "posix", reason="file names of raw bytes are a POSIX thing")
def test_file_names_too_long_or_not_utf8_are_rejected_rows_and_the_import_goes_on(db_url, shop, tmp_path) -> None:
    bad = os.fsdecode(b"caf\xe9.jpg")
    shutil.copy(shop["images"] / "a.jpg", shop["images"] / bad)
    with shop["csv"].open("a", encoding="utf-8") as f:
        f.write(f"{'x' * 300}.jpg,{shop['rle']},30,40,10\n")
    report = tmp_path / "report.json"
    result = import_imat(db_url, shop, "--report", str(report))
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["annotations"] == 1 and data["rejected"][0]["line"] == 3
    assert "255" in data["rejected"][0]["reason"]
    folder_report = tmp_path / "folder.json"
    result = cli(db_url, "import", "folder", "--images", str(shop["images"]), "--name", "photos",
                 "--report", str(folder_report))
    assert result.exit_code == 0, result.output
    data = json.loads(folder_report.read_text())
    assert data["images"] == 1
    assert "not valid UTF-8" in data["rejected"][0]["reason"]


# -- output paths --------------------------------------------------------------------------------------------------------
def test_output_paths_under_a_file_into_proc_or_onto_a_folder_are_refused(db_url, shop, tmp_path) -> None:
    assert import_imat(db_url, shop).exit_code == 0
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    for out, why in [(a_file / "mask.png", "which is a file"), (Path("/proc/mask.png"), "system folder"),
                     (tmp_path, "is a folder")]:
        usage_error(cli(db_url, "masks", "render", "--dataset", "shop", "--image-id", "a.jpg", "--scheme", "fine",
                        "--out", str(out)), str(out), why)
    usage_error(cli(db_url, "export", "--dataset", "shop", "--out", str(a_file / "e")), "which is a file")
    usage_error(cli(db_url, "export", "--dataset", "shop", "--out", "/proc/e"), "system folder")
    usage_error(cli(db_url, "captions", "mix", "--dataset", "shop", "--name", "x", "--out", str(tmp_path)),
                "is a folder")
    usage_error(import_imat(db_url, shop, "--report", "/sys/report.json", name="again"), "system folder")
    assert a_file.read_text() == "keep me"
    assert datasets(db_url) == ["shop"]


def test_a_render_size_has_an_upper_bound(db_url, shop, tmp_path) -> None:
    assert import_imat(db_url, shop).exit_code == 0
    out = tmp_path / "mask.png"
    usage_error(cli(db_url, "masks", "render", "--dataset", "shop", "--image-id", "a.jpg", "--scheme", "fine",
                    "--out", str(out), "--size", "100000x100000"), "100000x100000", "8192")
    assert not out.exists()


# -- numeric options -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["train", "suggest", "--gpu-memory", "-5"],
    ["train", "suggest", "--target-batch", "0"],
    ["train", "suggest", "--resolution", "12"],
    ["train", "suggest", "--processes", "-1"],
    ["jobs", "status", "99999999999999999999999"],
    ["jobs", "log", "1", "--lines", "-5"],
    ["export", "--dataset", "d", "--out", "OUT", "--workers", "-1"],
    ["eda", "--dataset", "d", "--min-width", "-5"],
    ["captions", "list", "--dataset", "d", "--min-words", "-3"],
    ["generate", "list", "--limit", "-5"],
    ["demo", "--images", "100000000"],
])
def test_negative_or_absurd_numbers_are_usage_errors(db_url, tmp_path, args) -> None:
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    result = cli(db_url, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, option, typed", [
    (["train", "suggest", "--gpu-memory", "-5"], "--gpu-memory", "-5"),
    (["eda", "--dataset", "d", "--min-width=wide"], "--min-width", "wide"),
])
def test_a_bad_option_value_is_one_error_line_naming_it_and_one_fix_line(tmp_path, args, option, typed) -> None:
    """What a user at a shell sees (the real entry point, not typer's test runner)."""
    env = {**os.environ, "WORKBENCH_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run([sys.executable, "-m", "workbench", *args], cwd=Path(__file__).resolve().parent.parent,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    error, fix = result.stderr.splitlines()
    assert error.startswith("error: ") and option in error and repr(typed) in error
    assert fix == f"fix: see `python -m workbench {args[0]}{' ' + args[1] if args[0] == 'train' else ''} --help`"
    assert not (tmp_path / "data").exists()


def test_the_cli_turns_a_stray_value_error_into_a_usage_error(monkeypatch, capsys) -> None:
    import workbench.cli as cli_module

    def broken(**kwargs):
        raise OverflowError("Python int too large to convert to C long")

    monkeypatch.setattr(cli_module, "app", broken)
    with pytest.raises(SystemExit) as stop:
        cli_module.run()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: OverflowError: Python int too large") and "Traceback" not in err


# -- server paths typed into pages ----------------------------------------------------------------------------------------
def test_server_paths_stay_inside_the_data_folder_and_the_allowed_roots(tmp_path, monkeypatch) -> None:
    from workbench.settings import get_settings

    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_ALLOWED_ROOTS", f"{tmp_path / 'shared'}{os.pathsep}{tmp_path / 'more'}")
    settings = get_settings()
    assert guard.check_server_path(tmp_path / "data" / "exports" / "e", settings, "export folder")
    assert guard.check_server_path(tmp_path / "more" / "e", settings, "export folder")
    for outside in (tmp_path / "elsewhere", tmp_path / "data" / ".." / "elsewhere", Path("/etc/x")):
        with pytest.raises(guard.InputRefused, match="outside the allowed folders.*WORKBENCH_ALLOWED_ROOTS"):
            guard.check_server_path(outside, settings, "export folder")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(guard.InputRefused, match="outside"):
        guard.check_server_path(tmp_path / "data" / "link" / "e", settings, "export folder")
    assert guard.check_server_model("runwayml/stable-diffusion-v1-5", settings, "base model")
    assert guard.check_server_model("sd15", settings, "base model")
    with pytest.raises(guard.InputRefused, match="base model"):
        guard.check_server_model("/etc", settings, "base model")


def test_the_import_page_refuses_a_bad_dataset_name(app_store, shop) -> None:
    from streamlit.testing.v1 import AppTest

    page = AppTest.from_file(str(PAGES / "01_Import.py"), default_timeout=60).run()
    page.radio(key="import_format").set_value("iMaterialist 2019/2020 CSV")
    page.text_input(key="import_name").input("../escape")
    page.text_input(key="import_csv").input(str(shop["csv"]))
    page.text_input(key="import_images").input(str(shop["images"]))
    page.button[0].click().run()
    assert not page.exception, [e.value for e in page.exception]
    assert any("dataset name '../escape'" in e.value for e in page.error), [e.value for e in page.error]
    assert "import_job" not in page.session_state


def test_the_export_page_refuses_a_folder_outside_the_allowed_roots(demo_files, app_store, tmp_path,
                                                                    monkeypatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.delenv("WORKBENCH_ALLOWED_ROOTS")  # only the data folder

    from workbench.formats import import_imat2019
    from workbench.settings import get_settings

    engine = make_engine(get_settings().database_url)
    import_imat2019(engine, csv_path=demo_files.csv, labels_path=demo_files.labels,
                    images_dir=demo_files.images_dir, name="demo", image_check="none")
    page = AppTest.from_file(str(PAGES / "07_Export.py"), default_timeout=90).run()
    assert not page.exception, [e.value for e in page.exception]
    outside = tmp_path / "not-allowed" / "export"
    page.text_input(key="export_out").input(str(outside))
    next(b for b in page.button if b.label == "Export").click().run()
    assert any("outside the allowed folders" in e.value for e in page.error), [e.value for e in page.error]
    assert "export_job" not in page.session_state
    assert not outside.parent.exists()
