"""Dataset prompts: each image's garments and attributes, as the annotations name them.

"top, t-shirt, sweatshirt" reads as "top"; attributes read as a person writes them, by their
supercategory (:mod:`workbench.captions.attribute_words`): "hip (length)", "single breasted"
and "lining" on a jacket give "hip-length single-breasted jacket with lining".
Garments come largest first (by mask area); garment parts, closures and decorations (sleeve,
zipper, sequin ...) are left out unless asked for. A template places the garments; a symbol
style sets garment names off (``<dress>``, ``[dress]``, ``(dress:1.2)``), and a trigger word
can lead the prompt.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Annotation, AnnotationAttribute, Attribute, Category, Image
from workbench.captions.attribute_words import attribute_words, garment_words
from workbench.taxonomy import short_name

SymbolStyle = Literal["plain", "angle", "square", "weight"]
PART_SUPERCATEGORIES = frozenset({"garment parts", "closures", "decorations"})
TEMPLATE_FIELDS = ("trigger", "garments", "first", "rest", "count")


class DatasetPromptSettings(BaseModel):
    """How a dataset prompt is written from the annotations."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key would silently do nothing

    template: str = Field("{garments}", max_length=1000, description="Placeholders: {trigger}, {garments}, {first}, {rest}, {count}.")
    include_attributes: bool = True
    max_attributes: int = Field(3, ge=0, description="Attributes per garment, at most.")
    skip_attributes: list[str] = Field(
        default_factory=lambda: ["symmetrical", "regular (fit)"],
        description="Attribute names (as in the label file) never written.")
    drop_negative_attributes: bool = Field(True, description="Leave out 'no waistline', 'no opening' ...")
    include_parts: bool = Field(False, description="Also garment parts, closures and decorations.")
    symbol_style: SymbolStyle = "plain"
    symbol_weight: float = Field(1.2, gt=0)
    symbol_scope: Literal["name", "phrase"] = Field("name", description="Set off the name or the whole phrase.")
    trigger_word: str = Field("", max_length=1000)
    separator: str = Field(", ", max_length=1000)

    @field_validator("template")
    @classmethod
    def _known_fields(cls, template: str) -> str:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        unknown = names - set(TEMPLATE_FIELDS)
        if unknown:
            raise ValueError(f"template {template!r}: unknown placeholder(s) {sorted(unknown)}; "
                             f"use {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}")
        return template


@dataclass
class Garment:
    """One garment of an image: readable name, readable attributes, mask area, box, category."""

    name: str
    attributes: list[str]
    area: int
    category: str
    supercategory: str
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # x, y, w, h in pixels
    annotation_id: int = 0
    attribute_supercategories: dict[str, str] = field(default_factory=dict)  # name -> supercategory

    @property
    def is_part(self) -> bool:
        """Whether this is a garment part, closure or decoration rather than a garment."""
        return self.supercategory in PART_SUPERCATEGORIES


@dataclass
class ImageGarments:
    """The garments of one image, largest first."""

    image_id: int
    file_name: str
    width: int
    height: int
    garments: list[Garment] = field(default_factory=list)


def readable_attribute(name: str) -> str:
    """``"above-the-knee (length)"`` -> ``"above-the-knee"``."""
    return re.sub(r"\s*\([^)]*\)\s*", " ", name).strip()


def load_garments(session: Session, dataset_id: int, image_ids: Iterable[int] | None = None) -> dict[int, ImageGarments]:
    """Every image of the dataset (or of ``image_ids``) with its garments, largest first."""
    images = select(Image.id, Image.file_name, Image.width, Image.height).where(Image.dataset_id == dataset_id)
    wanted = None if image_ids is None else list(image_ids)
    if wanted is not None:
        images = images.where(Image.id.in_(wanted))
    out = {row.id: ImageGarments(row.id, row.file_name, row.width, row.height)
           for row in session.execute(images.order_by(Image.id))}
    if not out:
        return out
    attrs: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
    attr_query = (select(AnnotationAttribute.annotation_id, Attribute.source_id, Attribute.name,
                         Attribute.supercategory)
                  .join(Attribute, Attribute.id == AnnotationAttribute.attribute_id)
                  .join(Annotation, Annotation.id == AnnotationAttribute.annotation_id)
                  .where(Annotation.dataset_id == dataset_id))
    if wanted is not None:
        attr_query = attr_query.where(Annotation.image_id.in_(wanted))
    for ann_id, source_id, name, supercategory in session.execute(attr_query):
        attrs[ann_id].append((source_id, name, supercategory or ""))
    ann_query = (select(Annotation.id, Annotation.image_id, Annotation.area, Annotation.bbox_x,
                        Annotation.bbox_y, Annotation.bbox_w, Annotation.bbox_h,
                        Category.name, Category.supercategory)
                 .join(Category, Category.id == Annotation.category_id)
                 .where(Annotation.dataset_id == dataset_id))
    if wanted is not None:
        ann_query = ann_query.where(Annotation.image_id.in_(wanted))
    for row in session.execute(ann_query):
        own = sorted(attrs.get(row.id, []))
        out[row.image_id].garments.append(Garment(
            name=short_name(row.name), attributes=[name for _, name, _ in own], area=row.area, category=row.name,
            supercategory=row.supercategory or "", box=(row.bbox_x, row.bbox_y, row.bbox_w, row.bbox_h),
            annotation_id=row.id, attribute_supercategories={name: sc for _, name, sc in own if sc}))
    for item in out.values():
        item.garments.sort(key=lambda g: (-g.area, g.annotation_id))
    return out


def styled_name(name: str, style: SymbolStyle, weight: float = 1.2) -> str:
    """A garment name set off in ``style``: ``dress``, ``<dress>``, ``[dress]``, ``(dress:1.2)``."""
    if style == "angle":
        return f"<{name}>"
    if style == "square":
        return f"[{name}]"
    if style == "weight":
        return f"({name}:{weight:g})"
    return name


def garment_phrases(garments: list[Garment], settings: DatasetPromptSettings) -> list[str]:
    """One phrase per garment ("floral a-line <dress>"), largest first, duplicates merged."""
    skip = {s.lower() for s in settings.skip_attributes}
    phrases: list[str] = []
    for garment in garments:
        if garment.is_part and not settings.include_parts:
            continue
        words = []
        if settings.include_attributes:
            for attribute in garment.attributes:
                if attribute.lower() in skip:
                    continue
                if settings.drop_negative_attributes and attribute.lower().startswith("no "):
                    continue
                read = attribute_words(attribute, garment.attribute_supercategories.get(attribute, ""))
                if read.text and read not in words:
                    words.append(read)
            words = words[: settings.max_attributes]
        before, noun, after = garment_words(garment.name, words)
        if settings.symbol_scope == "phrase" and settings.symbol_style != "plain":
            phrase = styled_name(" ".join([*before, noun, " and ".join(after)]).strip(), settings.symbol_style,
                                 settings.symbol_weight)
        else:
            phrase = " ".join([*before, styled_name(noun, settings.symbol_style, settings.symbol_weight),
                               " and ".join(after)]).strip()
        if phrase not in phrases:
            phrases.append(phrase)
    return phrases


def render_prompt(phrases: list[str], settings: DatasetPromptSettings) -> str:
    """The template filled with the garment phrases (and the trigger word)."""
    trigger = settings.trigger_word.strip()
    values = {
        "trigger": trigger,
        "garments": settings.separator.join(phrases),
        "first": phrases[0] if phrases else "",
        "rest": settings.separator.join(phrases[1:]),
        "count": str(len(phrases)),
    }
    text = settings.template.format(**values)
    if trigger and "{trigger}" not in settings.template:
        text = f"{trigger}{settings.separator}{text}" if text.strip() else trigger
    # An empty placeholder leaves a dangling separator ("dress, " with no rest): tidy it.
    mark = settings.separator.strip()
    if mark:
        return settings.separator.join(p for p in (part.strip() for part in text.split(mark)) if p)
    return " ".join(text.split())


def dataset_prompt(garments: list[Garment], settings: DatasetPromptSettings | None = None) -> str:
    """The dataset prompt of one image's garments."""
    settings = settings or DatasetPromptSettings()
    return render_prompt(garment_phrases(garments, settings), settings)


def dataset_prompts(session: Session, dataset_id: int, settings: DatasetPromptSettings | None = None,
                    image_ids: Iterable[int] | None = None) -> dict[int, str]:
    """``{image id: dataset prompt}`` for the dataset (or the given images)."""
    settings = settings or DatasetPromptSettings()
    return {image_id: dataset_prompt(item.garments, settings)
            for image_id, item in load_garments(session, dataset_id, image_ids).items()}
