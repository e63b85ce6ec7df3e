"""A fashion vocabulary for interrogation: the dataset's own garment and attribute names plus an
editable extra list, as CLIP label tables ranked against each image.

The CLIP Interrogator ships art-site flavours ("trending on artstation"); for fashion photos
the garment names, their attributes and a few photo terms describe more of what matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Attribute, Category
from workbench.captions.dataset_prompts import readable_attribute
from workbench.datasets import get_dataset
from workbench.settings import Settings

DEFAULT_EXTRA = [
    "fashion photography", "studio photo", "street style photo", "runway photo", "catalogue photo",
    "full body shot", "half body shot", "close-up", "standing", "walking", "sitting", "posing",
    "white background", "plain background", "outdoors", "indoors", "natural light", "soft light",
    "a woman", "a man", "a model", "two people", "a group of people", "smiling", "looking at the camera",
]


@dataclass
class FashionVocabulary:
    """Label lists for interrogation: garments, attributes and extra terms."""

    garments: list[str]
    attributes: list[str]
    extras: list[str]

    def tables(self) -> dict[str, list[str]]:
        """``{table name: labels}`` (empty tables left out)."""
        named = {"garments": self.garments, "attributes": self.attributes, "extras": self.extras}
        return {name: labels for name, labels in named.items() if labels}

    @property
    def all_labels(self) -> list[str]:
        """Every label once, in table order."""
        return list(dict.fromkeys([*self.garments, *self.attributes, *self.extras]))


def extra_vocabulary_path(settings: Settings) -> Path:
    """Where the editable extra list lives (one term a line)."""
    return Path(settings.data_dir) / "captions" / "fashion_extra.txt"


def load_extra_vocabulary(settings: Settings) -> list[str]:
    """The editable extra terms (the built-in list until someone saves their own)."""
    path = extra_vocabulary_path(settings)
    if not path.is_file():
        return list(DEFAULT_EXTRA)
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def save_extra_vocabulary(settings: Settings, labels: list[str]) -> Path:
    """Save the extra terms (blank lines and duplicates dropped); returns the file."""
    path = extra_vocabulary_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = list(dict.fromkeys(label.strip() for label in labels if label.strip()))
    path.write_text("\n".join(clean) + "\n", encoding="utf-8")
    return path


def fashion_vocabulary(session: Session, dataset_name: str, extras: list[str] | None = None) -> FashionVocabulary:
    """The dataset's garment names (each alternative of "top, t-shirt, sweatshirt"), its readable
    attribute names, and the extra terms."""
    dataset = get_dataset(session, dataset_name)
    garments: list[str] = []
    for name in session.scalars(select(Category.name).where(Category.dataset_id == dataset.id).order_by(Category.source_id)):
        garments.extend(part.strip() for part in name.split(",") if part.strip())
    attributes = [readable_attribute(name) for name in session.scalars(
        select(Attribute.name).where(Attribute.dataset_id == dataset.id).order_by(Attribute.source_id))]
    return FashionVocabulary(
        garments=list(dict.fromkeys(garments)),
        attributes=list(dict.fromkeys(a for a in attributes if a and not a.lower().startswith("no "))),
        extras=list(dict.fromkeys(extras if extras is not None else DEFAULT_EXTRA)),
    )


def rank_labels(image_features, embeds, labels: list[str], top: int, reverse: bool = False) -> list[list[str]]:
    """The ``top`` labels per image (rows of ``image_features``) by CLIP similarity, best first."""
    top = min(top, len(labels))
    if top == 0:
        return [[] for _ in range(len(image_features))]
    similarity = image_features.float() @ embeds.float().T
    if reverse:
        similarity = -similarity
    order = similarity.topk(top, dim=-1).indices.cpu().tolist()
    return [[labels[i] for i in row] for row in order]
