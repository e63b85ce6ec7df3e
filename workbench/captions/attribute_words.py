"""Attribute names as a person writes them in a prompt, by the attribute's supercategory.

Label files name attributes with a qualifier in brackets ("hip (length)", "fly (opening)",
"crew (neck)", "pea (jacket)"); dropping it loses the sense ("hip single breasted lining
jacket"). Each supercategory of the iMaterialist 2019 and Fashionpedia taxonomies has its rule:

- length: ``<x>-length`` ("hip-length", "floor-length"); words that are lengths on their own
  stay ("mini", "maxi"), and so do positions ("above-the-knee");
- opening type: a compound before the name ("single-breasted", "zip-up"), a thing after it
  ("with a fly");
- silhouette: a compound before the name ("wide-leg", "fit-and-flare", "tight-fit");
- waistline: ``<x>-waist`` ("high-waist", "empire-waist");
- neckline type: ``<x>-neck`` ("crew-neck"), or after the name ("with a sweetheart neckline");
- textile pattern: before the name ("floral", "striped"); animal: ``<x>-print``;
- leather: before the name ("suede");
- non-textile material, and finishing techniques that are things: after the name ("with fur",
  "with lining", "with pleats"); techniques that are adjectives stay before ("quilted");
- nickname (Fashionpedia): the garment's own name ("pea jacket", "crop top", "jeans").

An attribute without a supercategory (another label file) gets the rule its qualifier points
to ("(length)", "(opening)", ...), or is written before the name without its qualifier.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Place = Literal["before", "after", "noun"]

# Supercategories of the attribute, by the qualifier a name carries when its file gives none.
QUALIFIER_SUPERCATEGORY = {
    "length": "length", "opening": "opening type", "fit": "silhouette", "pattern": "textile pattern",
    "neck": "neckline type", "neckline": "neckline type", "waistline": "waistline", "wasitline": "waistline",
}
LENGTHS_ON_THEIR_OWN = frozenset({"mini", "micro", "midi", "maxi", "short"})
ADJECTIVE_TECHNIQUES = frozenset({"burnout"})  # techniques written before the name, not ending in -ed
# Things counted in the plural ("with pleats") or with an article ("with a slit").
PLURAL_THINGS = frozenset({"pleat", "bead", "rivet", "sequin", "feather", "gem"})
SINGLE_THINGS = frozenset({"slit", "cutout", "fly"})
PATTERN_ADJECTIVES = {"stripe": "striped", "dot": "dotted"}
OPENING_ADJECTIVES = {"wrapping": "wrap"}


@dataclass(frozen=True)
class AttributeWords:
    """How an attribute reads: its text, and whether it goes before the garment's name, after
    it (``"with a fly"``), or is the garment's name itself (a nickname)."""

    text: str
    place: Place


def split_qualifier(name: str) -> tuple[str, str]:
    """``"fly (opening)"`` -> ``("fly", "opening")``; a name without brackets has no qualifier."""
    first = name.split("),")[0] + ")" if ")," in name else name  # "dolman (sleeve), batwing (sleeve)": the first
    match = re.search(r"\(([^)]*)\)", first)
    base = re.sub(r"\s*\([^)]*\)?\s*", " ", first).strip()
    return " ".join(base.split()), (match.group(1).strip().lower() if match else "")


def _hyphenated(text: str) -> str:
    return "-".join(text.split())


def _a(text: str) -> str:
    return f"{'an' if text[:1] in 'aeiou' else 'a'} {text}"


def _thing(text: str) -> str:
    if text in PLURAL_THINGS:
        return f"with {text}s"
    return f"with {_a(text)}" if text in SINGLE_THINGS else f"with {text}"


def attribute_words(name: str, supercategory: str = "") -> AttributeWords:
    """The words of one attribute of a garment, by its supercategory (see the module docstring)."""
    base, qualifier = split_qualifier(name)
    kind = (supercategory or QUALIFIER_SUPERCATEGORY.get(qualifier, "")).strip().lower()
    lower = base.lower()
    if kind == "length":
        if qualifier != "length" or lower in LENGTHS_ON_THEIR_OWN:
            return AttributeWords(_hyphenated(base), "before")
        if "the" in re.split(r"[\s-]+", lower):  # a position: "above-the-knee"
            return AttributeWords(_hyphenated(base), "before")
        return AttributeWords(f"{_hyphenated(base)}-length", "before")
    if kind == "opening type":
        if qualifier and not lower.endswith("ed"):
            return AttributeWords(_thing(lower), "after")
        return AttributeWords(OPENING_ADJECTIVES.get(lower, _hyphenated(base)), "before")
    if kind == "silhouette":
        return AttributeWords(_hyphenated(f"{base} fit" if qualifier == "fit" else base), "before")
    if kind == "waistline":
        stem = re.sub(r"\s*\bwaist(line)?$", "", base).strip() or base
        return AttributeWords(f"{_hyphenated(stem)}-waist", "before")
    if kind == "neckline type":
        if qualifier == "neckline":
            return AttributeWords(f"with {_a(base)} neckline", "after")
        return AttributeWords(_hyphenated(f"{base} neck" if qualifier == "neck" else base), "before")
    if kind == "textile pattern":
        if "," in base:  # "letters, numbers"
            return AttributeWords("with " + " and ".join(p.strip() for p in base.split(",") if p.strip()), "after")
        return AttributeWords(PATTERN_ADJECTIVES.get(lower, base), "before")
    if kind == "animal":
        return AttributeWords(f"{_hyphenated(base)}-print", "before")
    if kind == "non-textile material type":
        return AttributeWords(_thing(lower), "after")
    if kind.startswith("textile finishing"):
        if lower.endswith("ed") or lower in ADJECTIVE_TECHNIQUES:
            return AttributeWords(base, "before")
        return AttributeWords(_thing(lower), "after")
    if kind == "nickname":
        return AttributeWords(f"{base} {qualifier}".strip() if qualifier else base, "noun")
    return AttributeWords(base, "before")


def garment_words(name: str, attributes: list[AttributeWords]) -> tuple[list[str], str, list[str]]:
    """``(words before, the noun, phrases after)`` of a garment: a nickname replaces its name,
    the phrases after it share one "with" ("with a fly and lining")."""
    before = [a.text for a in attributes if a.place == "before"]
    nouns = [a.text for a in attributes if a.place == "noun"]
    after = [a.text for a in attributes if a.place == "after"]
    after = [after[0], *(re.sub(r"^with ", "", a) for a in after[1:])] if after else []
    return before, (nouns[0] if nouns else name), after
