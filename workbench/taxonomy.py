"""Label files: the categories and attributes a dataset defines (never a hard-coded list)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUNDLED_IMAT2019_LABELS = Path(__file__).resolve().parent / "data" / "imat2019_label_descriptions.json"


@dataclass(frozen=True)
class Label:
    """A category or attribute as a label file defines it."""

    id: int
    name: str
    supercategory: str = ""
    level: int | None = None


@dataclass
class Taxonomy:
    """The categories and attributes of a dataset, with the label file's ``info`` block."""

    categories: list[Label]
    attributes: list[Label] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def category_by_id(self) -> dict[int, Label]:
        """Categories keyed by their id in the label file."""
        return {c.id: c for c in self.categories}

    def attribute_by_id(self) -> dict[int, Label]:
        """Attributes keyed by their id in the label file."""
        return {a.id: a for a in self.attributes}


class TaxonomyError(ValueError):
    """A label file that is not in the expected shape."""


def _labels(entries: Any, what: str, source: str) -> list[Label]:
    if not isinstance(entries, list):
        raise TaxonomyError(f"{source}: '{what}' must be a list of objects with id and name")
    labels = []
    for i, entry in enumerate(entries):
        try:
            labels.append(
                Label(
                    id=int(entry["id"]),
                    name=str(entry["name"]),
                    supercategory=str(entry.get("supercategory") or ""),
                    level=int(entry["level"]) if entry.get("level") is not None else None,
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TaxonomyError(f"{source}: {what}[{i}] needs an integer id and a name ({exc})") from exc
    ids = [label.id for label in labels]
    if len(set(ids)) != len(ids):
        raise TaxonomyError(f"{source}: duplicate ids in '{what}'")
    return labels


def taxonomy_from_dict(data: dict[str, Any], source: str = "label file") -> Taxonomy:
    """A taxonomy from a parsed label file (iMaterialist or Fashionpedia/COCO layout)."""
    if not isinstance(data, dict) or "categories" not in data:
        raise TaxonomyError(f"{source}: no 'categories' list found")
    return Taxonomy(
        categories=_labels(data["categories"], "categories", source),
        attributes=_labels(data.get("attributes", []), "attributes", source),
        info=dict(data.get("info") or {}),
    )


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Read a ``label_descriptions.json``-style file."""
    from workbench.guard import InputRefused, read_json

    path = Path(path)
    try:
        data = read_json(path, "label file")
    except InputRefused as exc:
        raise TaxonomyError(str(exc)) from None
    return taxonomy_from_dict(data, str(path))


def imat2019_taxonomy() -> Taxonomy:
    """The real iMaterialist Fashion 2019 taxonomy shipped with the workbench (46 categories)."""
    return load_taxonomy(BUNDLED_IMAT2019_LABELS)


def short_name(name: str) -> str:
    """The readable head of a category name: ``"top, t-shirt, sweatshirt"`` -> ``"top"``."""
    return name.split(",")[0].strip()
