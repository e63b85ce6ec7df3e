"""Mixing recipes over the demo: every option, seeded and deterministic, the token cap with the
real CLIPTokenizer format keeping garment names, saved versions, training_prompts, the CLI."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from typer.testing import CliRunner

from db.engine import session_scope
from workbench.tiny.captioners import save_tiny_clip_tokenizer
from workbench.captions.dataset_prompts import DatasetPromptSettings, load_garments
from workbench.captions.mixing import (MixRecipe, get_recipe, mix_prompts, preview_mix, recipe_version, save_recipe,
                                       token_counter, training_prompts, truncate_segments, _Segment)
from workbench.captions.review import accept, edit, reject
from workbench.captions.store import list_captions, save_captions
from workbench.cli import app
from workbench.datasets import get_dataset


@pytest.fixture
def mixed(demo_engine):
    """Accepted BLIP and CLIP captions for every demo image (one CLIP caption left pending)."""
    with session_scope(demo_engine) as session:
        dataset = get_dataset(session, "demo")
        image_ids = sorted(load_garments(session, dataset.id))
        rows = []
        for n, image_id in enumerate(image_ids):
            rows.append({"image_id": image_id, "source": "blip", "settings_key": "b", "text": f"blip words {n}"})
            rows.append({"image_id": image_id, "source": "clip-fast", "settings_key": "c", "text": f"clip words {n}, soft light"})
        save_captions(session, dataset.id, rows)
        for caption in list_captions(session, "demo")[:-1]:
            accept(session, caption.id, caption.version, "ana")
    return demo_engine


def prompts(engine, recipe: MixRecipe, seed: int = 0) -> dict[int, str]:
    with session_scope(engine) as session:
        return {p.image_id: p.prompt for p in mix_prompts(session, "demo", recipe, seed)}


def garments_of(engine) -> dict[int, list[str]]:
    with session_scope(engine) as session:
        loaded = load_garments(session, get_dataset(session, "demo").id)
    return {i: [g.name for g in item.garments if not g.is_part] for i, item in loaded.items()}


def test_concatenation_order_trigger_and_symbols(mixed) -> None:
    recipe = MixRecipe(parts=["blip", "dataset", "trigger"], trigger_word="fshn", symbol_style="square",
                       garments=DatasetPromptSettings(include_attributes=False), max_tokens=None)
    names = garments_of(mixed)
    for image_id, text in prompts(mixed, recipe).items():
        parts = text.split(", ")
        assert parts[0].startswith("blip words") and parts[-1] == "fshn"
        assert parts[1:-1] == list(dict.fromkeys(f"[{n}]" for n in names[image_id]))


def test_weighted_choice_is_seeded_and_follows_the_weights(mixed) -> None:
    recipe = MixRecipe(parts=["caption"], weights={"blip": 3.0, "clip-fast": 1.0}, max_tokens=None)
    first, again, other = prompts(mixed, recipe, 1), prompts(mixed, recipe, 1), prompts(mixed, recipe, 2)
    assert first == again and first != other
    only_blip = prompts(mixed, MixRecipe(parts=["caption"], weights={"blip": 1.0, "clip-fast": 0.0}, max_tokens=None))
    assert all(t.startswith("blip") for t in only_blip.values())
    picks = Counter()
    for seed in range(20):
        picks.update(t.split()[0] for t in prompts(mixed, recipe, seed).values())
    assert picks["blip"] > 2 * picks["clip"] > 0
    # The pending caption is never used: the image falls back to the other source.
    with session_scope(mixed) as session:
        pending = [c for c in list_captions(session, "demo") if c.status == "pending"][0]
    only_pending_source = prompts(mixed, MixRecipe(parts=["caption"], weights={pending.source: 1.0}, max_tokens=None))
    assert only_pending_source[pending.image_id] == ""


def test_garment_shuffle_keeps_the_first_k_and_is_deterministic(mixed) -> None:
    base = MixRecipe(parts=["dataset"], garments=DatasetPromptSettings(include_attributes=False, include_parts=True),
                     max_tokens=None)
    shuffled = base.model_copy(update={"shuffle_garments": True, "keep_first": 2})
    plain = prompts(mixed, base)
    runs = [prompts(mixed, shuffled, seed) for seed in range(6)]
    assert runs[0] == prompts(mixed, shuffled, 0)
    moved = False
    for image_id, text in plain.items():
        tags = text.split(", ")
        for run in runs:
            other = run[image_id].split(", ")
            assert other[:2] == tags[:2] and sorted(other) == sorted(tags)
            moved |= other != tags
    assert moved


def test_caption_dropout_empties_about_that_share(mixed) -> None:
    recipe = MixRecipe(parts=["dataset", "caption"], caption_dropout=0.5, max_tokens=None)
    empties = sum(text == "" for seed in range(10) for text in prompts(mixed, recipe, seed).values())
    assert 35 <= empties <= 85  # 120 prompts at one half
    assert prompts(mixed, recipe, 3) == prompts(mixed, recipe, 3)
    assert all(prompts(mixed, recipe.model_copy(update={"caption_dropout": 1.0})).values()) is False
    assert all(prompts(mixed, recipe.model_copy(update={"caption_dropout": 0.0})).values())


def test_reviewed_dataset_prompt_overrides_the_composed_one(mixed) -> None:
    from workbench.captions.run import store_dataset_prompts

    store_dataset_prompts(mixed, "demo")
    with session_scope(mixed) as session:
        first, second = list_captions(session, "demo", sources=["dataset"])[:2]
        edit(session, first.id, first.version, "curated garments", "ana")
        reject(session, second.id, second.version, "ana")
    out = prompts(mixed, MixRecipe(parts=["dataset"], max_tokens=None))
    assert out[first.image_id] == "curated garments" and out[second.image_id] == ""


def test_token_cap_keeps_garment_names_with_the_real_clip_tokenizer_format(mixed, tmp_path) -> None:
    folder = save_tiny_clip_tokenizer(tmp_path / "tok")  # one token per character: long prompts
    count = token_counter(str(folder))
    assert count("ab") == 4  # start, a, b</w>, end
    long_caption = " ".join(["word"] * 60)
    segments = [_Segment("fshn", "trigger"), _Segment("floral a-line dress", "garment", "dress"),
                _Segment("printed top", "garment", "top"), _Segment(long_caption + ", soft light", "caption")]
    cut, lost = truncate_segments(segments, ", ", 40, count)
    text = ", ".join(s.text for s in cut if s.text)
    assert count(text) <= 40 and lost == 0
    assert "dress" in text and "top" in text and text.startswith("fshn, floral a-line dress, printed top")
    tighter, lost = truncate_segments(segments, ", ", 16, count)
    assert [s.text for s in tighter if s.text] == ["dress", "top"] and lost == 0
    recipe = MixRecipe(parts=["dataset", "blip", "clip-fast"], max_tokens=30, tokenizer=str(folder))
    with session_scope(mixed) as session:
        results = mix_prompts(session, "demo", recipe)
    names = garments_of(mixed)
    assert any(p.truncated for p in results)
    for p in results:
        assert p.tokens <= 30 and p.tokens == count(p.prompt)
        if p.garments_cut == 0:
            assert all(n in p.prompt for n in names[p.image_id])


def test_default_counter_is_clips_own_bpe() -> None:
    count = token_counter(None)
    assert count("a red dress") == 5


def test_preview_histogram_and_saved_versions(mixed) -> None:
    recipe = MixRecipe(parts=["dataset", "caption"], weights={"blip": 1, "clip-fast": 1})
    with session_scope(mixed) as session:
        shown = preview_mix(session, "demo", recipe, n=5, seed=7)
        assert len(shown.samples) == 5 and sum(shown.histogram().values()) == 12
        assert [p.prompt for p in shown.samples] == [p.prompt for p in preview_mix(session, "demo", recipe, 5, 7).samples]
        v1 = save_recipe(session, "mine", recipe, "ana")
        same = save_recipe(session, "mine", recipe, "ana")
        v2 = save_recipe(session, "mine", recipe.model_copy(update={"trigger_word": "fshn"}), "bo")
        assert (v1.version, same.version, v2.version) == (1, 1, 2)
        assert get_recipe(session, "mine", 1).recipe == recipe and get_recipe(session, "mine").version == 2
        with pytest.raises(LookupError, match="recipes: mine"):
            get_recipe(session, "other")


def test_training_prompts_default_to_the_dataset_prompt_and_record_the_recipe(mixed) -> None:
    from workbench.captions.dataset_prompts import dataset_prompts

    with session_scope(mixed) as session:
        dataset = get_dataset(session, "demo")
        default = training_prompts(session, "demo")
        assert dict(default) == dataset_prompts(session, dataset.id)
        assert default.recipe_version["version"] is None and default.recipe_version["seed"] == 0
        stored = save_recipe(session, "blend", MixRecipe(parts=["dataset", "blip"]), "ana")
        by_name = training_prompts(session, "demo", "blend", seed=3)
        assert by_name.recipe_version["name"] == "blend" and by_name.recipe_version["version"] == stored.version
        assert dict(by_name) == dict(training_prompts(session, "demo", ("blend", 1), seed=3))
        assert all("blip words" in text for text in by_name.values())
        assert recipe_version(session, stored, 3) == by_name.recipe_version


def test_cli_mix_preview_and_save(mixed, tmp_path) -> None:
    recipe_file = tmp_path / "recipe.json"
    recipe_file.write_text(json.dumps({"parts": ["trigger", "dataset", "caption"], "trigger_word": "fshn",
                                       "weights": {"blip": 1}, "symbol_style": "angle"}))
    runner = CliRunner()
    db = str(mixed.url)
    result = runner.invoke(app, ["--db", db, "captions", "mix", "--dataset", "demo", "--recipe", str(recipe_file),
                                 "--preview", "4", "--seed", "1", "--save", "cli-recipe"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert len(shown["samples"]) == 4 and shown["recipe"] == {"name": "cli-recipe", "version": 1, "seed": 1}
    assert all(s["prompt"].startswith("fshn, ") and re.search(r"<[a-z -]+>", s["prompt"]) for s in shown["samples"])
    assert sum(shown["token_histogram"].values()) == 12
    out = tmp_path / "prompts.json"
    written = runner.invoke(app, ["--db", db, "captions", "mix", "--dataset", "demo", "--name", "cli-recipe", "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert len(json.loads(out.read_text())["prompts"]) == 12
    bad = runner.invoke(app, ["--db", db, "captions", "mix", "--dataset", "demo", "--name", "missing", "--preview", "2"])
    assert bad.exit_code == 2 and "no recipe 'missing'" in bad.output
    assert shown["empty_sources"] == {}
    recipe_file.write_text(json.dumps({"parts": ["dataset", "caption"], "weights": {"blip": 1, "kosmos2": 1}}))
    result = runner.invoke(app, ["--db", db, "captions", "mix", "--dataset", "demo", "--recipe", str(recipe_file),
                                 "--preview", "2"])
    assert json.loads(result.stdout)["empty_sources"] == {"kosmos2": "no kosmos2 captions in demo"}


def test_a_new_recipe_weighs_the_sources_the_dataset_has(demo_engine, mixed) -> None:
    from workbench.captions.mixing import caption_counts, empty_sources, new_recipe

    with session_scope(mixed) as session:
        assert caption_counts(session, "demo", ["accepted"]) == {"blip": (12, 12), "clip-fast": (12, 11)}
        recipe = new_recipe(session, "demo")
        assert recipe.weights == {"blip": 1.0, "clip-fast": 1.0}
        assert empty_sources(session, "demo", recipe) == {}
        # BLIP at 1.0 (the model's default) and a named part, on sources this dataset lacks.
        assert empty_sources(session, "demo", MixRecipe(parts=["dataset", "kosmos2", "caption"],
                                                        weights={"blip": 1.0, "git": 2.0, "clip-fast": 0})) == {
            "kosmos2": "no kosmos2 captions in demo", "git": "no git captions in demo"}
        pending = MixRecipe(statuses=["rejected"], weights={"blip": 1.0})
        assert empty_sources(session, "demo", pending) == {
            "blip": "12 blip caption(s) in demo, none rejected yet (review them on the Captions page)"}
        assert {p.image_id: p.prompt for p in mix_prompts(session, "demo", pending)} == \
            {p.image_id: p.prompt for p in mix_prompts(session, "demo", MixRecipe(parts=["trigger", "dataset"]))}


def test_a_new_recipe_on_a_dataset_without_captions_has_no_weights(demo_engine) -> None:
    from workbench.captions.mixing import empty_sources, new_recipe

    with session_scope(demo_engine) as session:
        assert new_recipe(session, "demo").weights == {}
        assert empty_sources(session, "demo", MixRecipe()) == {"blip": "no blip captions in demo"}
