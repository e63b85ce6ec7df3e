"""Dataset prompts from the demo's annotations: readable names, area order, parts, styles, trigger."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from db.engine import session_scope
from workbench.captions.dataset_prompts import (DatasetPromptSettings, Garment, dataset_prompt, dataset_prompts,
                                                garment_phrases, load_garments, readable_attribute, render_prompt)
from workbench.datasets import get_dataset


def garments() -> list[Garment]:
    return [
        Garment("shoe", [], 50, "shoe", "legs and feet"),
        Garment("dress", ["a-line", "above-the-knee (length)", "no waistline", "symmetrical"], 900, "dress", "wholebody"),
        Garment("top", ["printed"], 400, "top, t-shirt, sweatshirt", "upperbody"),
        Garment("sleeve", [], 100, "sleeve", "garment parts"),
    ]


def sorted_garments() -> list[Garment]:
    return sorted(garments(), key=lambda g: -g.area)


def test_names_are_readable_and_largest_first_without_parts() -> None:
    text = dataset_prompt(sorted_garments())
    assert text == "a-line above-the-knee dress, printed top, shoe"
    with_parts = dataset_prompt(sorted_garments(), DatasetPromptSettings(include_parts=True))
    assert with_parts.split(", ")[-1] == "shoe" and "sleeve" in with_parts
    assert readable_attribute("below the knee (length)") == "below the knee"


@pytest.mark.parametrize("style, expected", [
    ("angle", "<dress>"), ("square", "[dress]"), ("weight", "(dress:1.2)"), ("plain", "dress")])
def test_symbol_styles_set_garment_names_off(style: str, expected: str) -> None:
    phrases = garment_phrases(sorted_garments(), DatasetPromptSettings(symbol_style=style, include_attributes=False))
    assert phrases[0] == expected


def test_weight_scope_phrase_and_trigger_and_template() -> None:
    s = DatasetPromptSettings(symbol_style="weight", symbol_weight=1.4, symbol_scope="phrase", max_attributes=1,
                              trigger_word="fshn", template="a photo of {first} with {rest}")
    assert dataset_prompt(sorted_garments(), s) == "fshn, a photo of (a-line dress:1.4) with (printed top:1.4), (shoe:1.4)"
    assert render_prompt([], DatasetPromptSettings(trigger_word="fshn")) == "fshn"


def test_unknown_template_placeholder_is_refused_with_the_allowed_ones() -> None:
    with pytest.raises(ValidationError, match=r"unknown placeholder.*garmnts.*\{garments\}"):
        DatasetPromptSettings(template="{garmnts}")


def test_prompts_of_the_demo_follow_its_annotations(demo_engine) -> None:
    with session_scope(demo_engine) as session:
        dataset = get_dataset(session, "demo")
        loaded = load_garments(session, dataset.id)
        prompts = dataset_prompts(session, dataset.id, DatasetPromptSettings(include_attributes=False, include_parts=True))
    assert len(prompts) == 12
    for image_id, item in loaded.items():
        areas = [g.area for g in item.garments]
        assert areas == sorted(areas, reverse=True)
        names = list(dict.fromkeys(g.name for g in item.garments))
        assert prompts[image_id] == ", ".join(names)
        assert all("," not in g.name for g in item.garments)
