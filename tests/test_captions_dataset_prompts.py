"""Dataset prompts from the demo's annotations: readable names, area order, parts, styles, trigger."""

from __future__ import annotations

import json
from pathlib import Path

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


# -- attributes as a person writes them, on the real taxonomies' names -------------------------
IMAT2019 = Path(__file__).resolve().parent.parent / "workbench" / "data" / "imat2019_label_descriptions.json"
FASHIONPEDIA = Path(__file__).resolve().parent / "data" / "fashionpedia_category_attributes_descriptions.json"


def supercategories(path: Path) -> dict[str, str]:
    """Attribute name -> supercategory, as the label file gives them."""
    return {a["name"]: a["supercategory"] for a in json.loads(path.read_text(encoding="utf-8"))["attributes"]}


@pytest.mark.parametrize("path, name, text, place", [
    (IMAT2019, "hip (length)", "hip-length", "before"),
    (IMAT2019, "maxi (length)", "maxi", "before"),
    (IMAT2019, "floor (length)", "floor-length", "before"),
    (IMAT2019, "below the knee (length)", "below-the-knee", "before"),
    (IMAT2019, "single breasted", "single-breasted", "before"),
    (IMAT2019, "wrapping", "wrap", "before"),
    (IMAT2019, "fly (opening)", "with a fly", "after"),
    (IMAT2019, "buckled (opening)", "buckled", "before"),
    (IMAT2019, "lining", "with lining", "after"),
    (IMAT2019, "pleat", "with pleats", "after"),
    (IMAT2019, "slit", "with a slit", "after"),
    (IMAT2019, "quilted", "quilted", "before"),
    (IMAT2019, "tight (fit)", "tight-fit", "before"),
    (IMAT2019, "wide leg", "wide-leg", "before"),
    (IMAT2019, "fit and flare", "fit-and-flare", "before"),
    (IMAT2019, "empire waistline", "empire-waist", "before"),
    (IMAT2019, "high waist", "high-waist", "before"),
    (IMAT2019, "basque (wasitline)", "basque-waist", "before"),
    (IMAT2019, "houndstooth (pattern)", "houndstooth", "before"),
    (IMAT2019, "stripe", "striped", "before"),
    (IMAT2019, "letters, numbers", "with letters and numbers", "after"),
    (IMAT2019, "snakeskin (pattern)", "snakeskin-print", "before"),
    (FASHIONPEDIA, "three quarter (length)", "three-quarter-length", "before"),
    (FASHIONPEDIA, "short (length)", "short", "before"),
    (FASHIONPEDIA, "pea (jacket)", "pea jacket", "noun"),
    (FASHIONPEDIA, "jeans", "jeans", "noun"),
    (FASHIONPEDIA, "dolman (sleeve), batwing (sleeve)", "dolman sleeve", "noun"),
    (FASHIONPEDIA, "crew (neck)", "crew-neck", "before"),
    (FASHIONPEDIA, "sweetheart (neckline)", "with a sweetheart neckline", "after"),
    (FASHIONPEDIA, "asymmetric (neckline)", "with an asymmetric neckline", "after"),
    (FASHIONPEDIA, "one shoulder", "one-shoulder", "before"),
    (FASHIONPEDIA, "feather", "with feathers", "after"),
    (FASHIONPEDIA, "fur", "with fur", "after"),
    (FASHIONPEDIA, "suede", "suede", "before"),
    (FASHIONPEDIA, "sequin(a)", "with sequins", "after"),
    (FASHIONPEDIA, "chained (opening)", "chained", "before"),
])
def test_each_supercategory_has_its_rule(path: Path, name: str, text: str, place: str) -> None:
    from workbench.captions.attribute_words import AttributeWords, attribute_words

    assert attribute_words(name, supercategories(path)[name]) == AttributeWords(text, place)


@pytest.mark.parametrize("path", [IMAT2019, FASHIONPEDIA], ids=["imat2019", "fashionpedia"])
def test_every_real_attribute_reads_without_brackets_or_commas(path: Path) -> None:
    from workbench.captions.attribute_words import attribute_words

    for name, supercategory in supercategories(path).items():
        words = attribute_words(name, supercategory)
        assert words.text and not set("(),") & set(words.text), (name, words)
        assert words.text == " ".join(words.text.split()), (name, words)


def real_garment(name: str, attributes: list[str], path: Path = IMAT2019) -> Garment:
    known = supercategories(path)
    return Garment(name, attributes, 100, name, "upperbody", attribute_supercategories={a: known[a] for a in attributes})


def test_prompts_write_the_qualifiers_as_a_person_would() -> None:
    jacket = real_garment("jacket", ["hip (length)", "single breasted", "lining"])
    pants = real_garment("pants", ["maxi (length)", "fly (opening)", "bootcut"])
    assert dataset_prompt([jacket]) == "hip-length single-breasted jacket with lining"
    assert dataset_prompt([pants]) == "maxi bootcut pants with a fly"
    two_after = real_garment("pants", ["fly (opening)", "lining"])
    assert dataset_prompt([two_after]) == "pants with a fly and lining"
    styled = garment_phrases([jacket], DatasetPromptSettings(symbol_style="angle"))
    assert styled == ["hip-length single-breasted <jacket> with lining"]
    phrase = garment_phrases([jacket], DatasetPromptSettings(symbol_style="square", symbol_scope="phrase"))
    assert phrase == ["[hip-length single-breasted jacket with lining]"]
    nicknamed = real_garment("jacket", ["pea (jacket)", "double breasted"], FASHIONPEDIA)
    assert dataset_prompt([nicknamed]) == "double-breasted pea jacket"


def test_without_supercategories_the_qualifier_chooses_the_rule() -> None:
    garment = Garment("pants", ["maxi (length)", "fly (opening)", "bootcut", "hip (length)"], 100, "pants", "lowerbody")
    assert dataset_prompt([garment], DatasetPromptSettings(max_attributes=4)) == \
        "maxi bootcut hip-length pants with a fly"


def test_the_demo_loads_each_attributes_supercategory(demo_engine) -> None:
    with session_scope(demo_engine) as session:
        dataset = get_dataset(session, "demo")
        loaded = load_garments(session, dataset.id)
        prompts = dataset_prompts(session, dataset.id, DatasetPromptSettings(max_attributes=10))
    known = supercategories(IMAT2019)
    with_attributes = [g for item in loaded.values() for g in item.garments if g.attributes]
    assert with_attributes
    for garment in with_attributes:
        assert garment.attribute_supercategories == {a: known[a] for a in garment.attributes}
    assert not any("(" in text for text in prompts.values())
