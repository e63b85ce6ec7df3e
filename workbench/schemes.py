"""Mask schemes as data: which conditioning class (value, name, colour) each category becomes.

A scheme maps categories by NAME, so one scheme serves iMaterialist 2019 and Fashionpedia,
which share their 46 category names. A category whose name the scheme does not list falls back
to its supercategory; one that matches neither is *unmapped* (reported by the renderer, never
drawn). Mapping a category to the value-0 class says explicitly "leave it out of the mask".

``draw_order`` lists layers of class names, bottom layer first: classes in later layers are
painted on top. Within one layer, masks are ordered by :func:`garment_layer` (what a garment is
worn over or under), then larger first, then by annotation id (see ``workbench/masks.py``).

Built-in schemes (seeded into the ``mask_scheme`` table as version 1 the first time schemes are
read): ``fine``, ``body-parts``, ``cloth-seg`` and ``cloth-seg-compat``. Saving a scheme always
adds a new version row and an audit row; nothing is overwritten.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_validator
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Category, MaskScheme
from workbench.audit import record
from workbench.guard import InputRefused, check_name, validation_problem
from workbench.palette import (
    BODY_PARTS_COLOURS,
    CLOTH_SEG_COLOURS,
    Colour,
    fine_colour,
    flat_palette,
)
from workbench.taxonomy import Label, imat2019_taxonomy

BUILTIN_CURATOR = "builtin"


class SchemeError(ValueError):
    """A scheme definition that cannot be used, with every problem named."""


class SchemeNotFound(LookupError):
    """No stored scheme of that name (or version)."""


class SchemeConflict(RuntimeError):
    """A save based on a version that is no longer the latest."""


def _key(name: str) -> str:
    """Lookup form of a category, supercategory or class name (case and spacing ignored)."""
    return " ".join(name.split()).casefold()


# ---------------------------------------------------------------------------------------------
# Garment layers: what is worn over what. Used to order masks inside one draw-order layer and
# to build the draw order of ``fine``.

GARMENT_LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("legwear", ("tights, stockings", "sock", "leg warmer")),
    ("lower body", ("pants", "shorts", "skirt")),
    ("whole body, inner", ("dress", "jumpsuit")),
    ("shirts and tops", ("shirt, blouse", "top, t-shirt, sweatshirt")),
    ("sweaters", ("sweater",)),
    ("cardigans", ("cardigan",)),
    ("vests", ("vest",)),
    ("jackets", ("jacket",)),
    ("coats and capes", ("coat", "cape")),
    ("shoes", ("shoe",)),
    ("accessories", ("bag, wallet", "belt", "scarf", "tie", "glove", "watch", "umbrella")),
    ("head", ("glasses", "hat", "headband, head covering, hair accessory")),
    ("garment parts", ("hood", "collar", "lapel", "epaulette", "sleeve", "pocket", "neckline")),
    ("closures and decorations", (
        "buckle", "zipper", "applique", "bead", "bow", "flower", "fringe", "ribbon", "rivet",
        "ruffle", "sequin", "tassel",
    )),
)

# For category names the table does not know (another taxonomy), the supercategory decides.
SUPERCATEGORY_GARMENT_LAYER: dict[str, str] = {
    "legs and feet": "legwear",
    "lowerbody": "lower body",
    "wholebody": "whole body, inner",
    "upperbody": "shirts and tops",
    "neck": "accessories",
    "arms and hands": "accessories",
    "waist": "accessories",
    "others": "accessories",
    "head": "head",
    "garment parts": "garment parts",
    "closures": "closures and decorations",
    "decorations": "closures and decorations",
}

_LAYER_RANK = {layer: rank for rank, (layer, _) in enumerate(GARMENT_LAYERS)}
_NAME_RANK = {_key(n): rank for rank, (_, names) in enumerate(GARMENT_LAYERS) for n in names}
_SUPER_RANK = {_key(s): _LAYER_RANK[layer] for s, layer in SUPERCATEGORY_GARMENT_LAYER.items()}


def garment_layer(name: str, supercategory: str = "") -> int:
    """Rank of a category in the wearing order (higher is worn on top); -1 when unknown."""
    rank = _NAME_RANK.get(_key(name))
    if rank is None:
        rank = _SUPER_RANK.get(_key(supercategory), -1)
    return rank


# ---------------------------------------------------------------------------------------------
# The definition


class SchemeClass(BaseModel):
    """One conditioning class: its pixel value, its name (the legend) and its colour."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: int
    name: str
    colour: tuple[int, int, int]


class SchemeDefinition(BaseModel):
    """A mask scheme: classes, category-name and supercategory mappings, and a draw order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    classes: list[SchemeClass]
    mapping: dict[str, str] = {}
    fallback: dict[str, str] = {}
    draw_order: list[list[str]] = []

    _by_name: dict[str, SchemeClass] = PrivateAttr(default_factory=dict)
    _mapping: dict[str, SchemeClass] = PrivateAttr(default_factory=dict)
    _fallback: dict[str, SchemeClass] = PrivateAttr(default_factory=dict)
    _layer: dict[int, int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _single_names_are_layers(cls, data: Any) -> Any:
        # A bare class name in draw_order is a layer of its own; hand-written JSON reads better.
        if isinstance(data, dict) and isinstance(data.get("draw_order"), list):
            data = dict(data)
            data["draw_order"] = [[x] if isinstance(x, str) else x for x in data["draw_order"]]
        return data

    @model_validator(mode="after")
    def _check(self) -> SchemeDefinition:
        problems: list[str] = []
        if not self.name.strip():
            problems.append("name: a scheme needs a name")
        by_name: dict[str, SchemeClass] = {}
        by_value: dict[int, SchemeClass] = {}
        for c in self.classes:
            if not 0 <= c.value <= 255:
                problems.append(
                    f"classes: class {c.name!r} has value {c.value}; values must be 0..255 "
                    "(a mask pixel is one byte)"
                )
            if any(not 0 <= v <= 255 for v in c.colour):
                problems.append(f"classes: class {c.name!r} has colour {list(c.colour)}; "
                                "each of r, g, b must be 0..255")
            if not c.name.strip():
                problems.append(f"classes: the class with value {c.value} has no name")
            if c.value in by_value:
                problems.append(
                    f"classes: duplicate value {c.value} "
                    f"({by_value[c.value].name!r} and {c.name!r}); each class needs its own value"
                )
            by_value.setdefault(c.value, c)
            if _key(c.name) in by_name:
                problems.append(f"classes: duplicate class name {c.name!r}")
            by_name.setdefault(_key(c.name), c)
        if 0 not in by_value:
            problems.append(
                'classes: no class has value 0; add {"value": 0, "name": "background", '
                '"colour": [0, 0, 0]}'
            )
        known = ", ".join(repr(c.name) for c in self.classes)

        def resolve(table: Mapping[str, str], what: str, field: str) -> dict[str, SchemeClass]:
            out: dict[str, SchemeClass] = {}
            for source, target in table.items():
                cls_ = by_name.get(_key(target))
                if cls_ is None:
                    problems.append(
                        f"{field}: {what} {source!r} maps to unknown class {target!r} "
                        f"(classes are {known})"
                    )
                    continue
                if _key(source) in out:
                    problems.append(f"{field}: {what} {source!r} is listed twice")
                out[_key(source)] = cls_
            return out

        mapping = resolve(self.mapping, "category", "mapping")
        fallback = resolve(self.fallback, "supercategory", "fallback")

        layer_of: dict[int, int] = {}
        for i, layer in enumerate(self.draw_order):
            for target in layer:
                cls_ = by_name.get(_key(target))
                if cls_ is None:
                    problems.append(f"draw_order: unknown class {target!r} (classes are {known})")
                elif cls_.value == 0:
                    problems.append(
                        f"draw_order: {cls_.name!r} has value 0, which is never drawn; remove it"
                    )
                elif cls_.value in layer_of:
                    problems.append(f"draw_order: class {cls_.name!r} is listed twice")
                else:
                    layer_of[cls_.value] = i
        for c in self.classes:
            if c.value != 0 and c.value not in layer_of and 0 <= c.value <= 255:
                problems.append(
                    f"draw_order: class {c.name!r} is missing; add it to a layer "
                    "(later layers are drawn on top)"
                )
        if problems:
            raise SchemeError(f"mask scheme {self.name!r}: " + "; ".join(problems))
        self._by_name, self._mapping, self._fallback, self._layer = (
            by_name, mapping, fallback, layer_of
        )
        return self

    def class_for(self, category: str, supercategory: str = "") -> SchemeClass | None:
        """The class a category becomes (by name, else by supercategory); None when unmapped."""
        found = self._mapping.get(_key(category))
        if found is None:
            found = self._fallback.get(_key(supercategory))
        return found

    def layer_of(self, value: int) -> int:
        """Index of a class's draw-order layer (later layers are drawn on top)."""
        return self._layer[value]

    def colours(self) -> dict[int, Colour]:
        """Colour of every class value."""
        return {c.value: c.colour for c in self.classes}

    def palette(self) -> list[int]:
        """The 768-entry flat palette of this scheme (unused values black)."""
        return flat_palette(self.colours())

    def legend(self) -> dict[str, str]:
        """``{"<value>": "<class name>"}`` of every class, background included."""
        return {str(c.value): c.name for c in sorted(self.classes, key=lambda c: c.value)}

    def edited(self, **changes: Any) -> SchemeDefinition:
        """A checked copy with some fields replaced (``model_copy`` would skip the checks)."""
        return parse_scheme({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form stored in ``mask_scheme.definition``."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        """The definition as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)


def parse_scheme(data: Mapping[str, Any] | str) -> SchemeDefinition:
    """A definition from a dict or JSON text; raises :class:`SchemeError` naming each problem."""
    try:
        if isinstance(data, str):
            return SchemeDefinition.model_validate_json(data)
        return SchemeDefinition.model_validate(data)
    except ValidationError as exc:
        name = data.get("name", "?") if isinstance(data, Mapping) else "?"
        messages = [validation_problem(err, SchemeDefinition) for err in exc.errors()]
        raise SchemeError(
            messages[0] if len(messages) == 1 and messages[0].startswith("mask scheme")
            else f"mask scheme {name!r}: " + "; ".join(messages)
        ) from None


# ---------------------------------------------------------------------------------------------
# Editing as two tables (the Inspect page's scheme editor): category -> part rows, and class
# rows with a #rrggbb colour and a draw layer. Rows are plain dicts, so any table widget or a
# CSV reader can produce them; blank cells are None, NaN or empty text.

MAPPING_COLUMNS = ("category", "supercategory", "part")
CLASS_COLUMNS = ("value", "name", "colour", "layer")
NOT_IN_DATASET = "(not in this dataset)"


def hex_colour(colour: Iterable[int]) -> str:
    """``#rrggbb`` of an RGB triple."""
    r, g, b = colour
    return f"#{r:02x}{g:02x}{b:02x}"


def colour_of_hex(text: str) -> Colour:
    """An RGB triple from ``#rrggbb`` (the ``#`` optional); ValueError naming the text otherwise."""
    digits = str(text).strip().removeprefix("#")
    if len(digits) != 6 or any(d not in "0123456789abcdefABCDEF" for d in digits):
        raise ValueError(f"colour {text!r} is not #rrggbb; write six hex digits, e.g. #ff8800")
    return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))


def _blank(cell: Any) -> bool:
    return (cell is None or (isinstance(cell, float) and math.isnan(cell))
            or (isinstance(cell, str) and not cell.strip()))


def _text(cell: Any) -> str:
    return "" if _blank(cell) else str(cell).strip()


def _whole(cell: Any) -> int | None:
    """A whole number from a table cell (``3``, ``3.0``, ``"3"``); None when it is not one."""
    try:
        number = float(cell)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def scheme_tables(
    definition: SchemeDefinition,
    categories: Iterable[tuple[str, str]] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The editor's tables of a scheme: ``(mapping rows, class rows)``; see :data:`CLASS_COLUMNS`.

    With ``categories`` (a dataset's ``(name, supercategory)`` pairs) each gets a mapping row,
    its part empty where the mapping does not list it (the supercategory fallback decides), and
    mapped names the dataset lacks follow with supercategory :data:`NOT_IN_DATASET`. Without it
    the rows are the mapping as it is. Draw layers are numbered from 1 (bottom); the background
    is layer 0.
    """
    if categories is None:
        mapping_rows = [{"category": n, "supercategory": "", "part": p}
                        for n, p in definition.mapping.items()]
    else:
        cats = list(categories)
        names = {n for n, _ in cats}
        mapping_rows = [{"category": n, "supercategory": s, "part": definition.mapping.get(n, "")}
                        for n, s in cats]
        mapping_rows += [{"category": n, "supercategory": NOT_IN_DATASET, "part": p}
                         for n, p in definition.mapping.items() if n not in names]
    layer_of = {_key(n): i + 1 for i, layer in enumerate(definition.draw_order) for n in layer}
    class_rows = [{"value": c.value, "name": c.name, "colour": hex_colour(c.colour),
                   "layer": layer_of.get(_key(c.name), 0)} for c in definition.classes]
    return mapping_rows, class_rows


def scheme_from_tables(
    base: SchemeDefinition,
    mapping_rows: Iterable[Mapping[str, Any]],
    class_rows: Iterable[Mapping[str, Any]],
) -> SchemeDefinition:
    """The definition two edited tables describe (name, description, fallback from ``base``).

    A class row whose cells are all blank is skipped; a class with no layer goes to layer 1.
    A mapping row with no part is left to the supercategory fallback. Raises
    :class:`SchemeError` naming every problem in the rows (counted from 1), else every problem
    the definition has.
    """
    problems: list[str] = []
    classes: list[dict[str, Any]] = []
    layers: dict[int, list[str]] = {}
    for i, row in enumerate(class_rows, start=1):
        if all(_blank(row.get(column)) for column in CLASS_COLUMNS):
            continue
        name = _text(row.get("name"))
        where = f"classes row {i}" + (f" ({name!r})" if name else "")
        if not name:
            problems.append(f"{where}: the class has no name; name it or delete the row")
        value = _whole(row.get("value"))
        if value is None:
            problems.append(f"{where}: value {row.get('value')!r} is not a whole number; give "
                            "the class its pixel value 0..255")
        colour = (0, 0, 0)
        if _blank(row.get("colour")):
            problems.append(f"{where}: no colour; write it as #rrggbb, e.g. #ff8800")
        else:
            try:
                colour = colour_of_hex(str(row["colour"]))
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
        layer = 1 if _blank(row.get("layer")) else _whole(row.get("layer"))
        if layer is None:
            problems.append(f"{where}: layer {row.get('layer')!r} is not a whole number; higher "
                            "layers are drawn on top")
        if not name or value is None or layer is None:
            continue
        classes.append({"value": value, "name": name, "colour": list(colour)})
        if value != 0:  # the background is never drawn, so it has no layer
            layers.setdefault(layer, []).append(name)

    mapping: dict[str, str] = {}
    row_of: dict[str, int] = {}
    for i, row in enumerate(mapping_rows, start=1):
        category, part = _text(row.get("category")), _text(row.get("part"))
        if not part:
            continue
        if not category:
            problems.append(f"mapping row {i}: part {part!r} has no category; name the category "
                            "or clear the part")
        elif _key(category) in row_of:
            problems.append(f"mapping: category {category!r} is listed twice (rows "
                            f"{row_of[_key(category)]} and {i}); keep one of them")
        else:
            row_of[_key(category)] = i
            mapping[category] = part
    if problems:
        raise SchemeError(f"mask scheme {base.name!r}: " + "; ".join(problems))
    # Order inside a layer does not change the drawing; keeping base's makes a round trip exact.
    position = {_key(n): i for i, n in enumerate(n for layer in base.draw_order for n in layer)}
    for names in layers.values():
        names.sort(key=lambda n: position.get(_key(n), len(position)))
    return parse_scheme({
        "name": base.name, "description": base.description, "classes": classes,
        "mapping": mapping, "fallback": dict(base.fallback),
        "draw_order": [layers[k] for k in sorted(layers)],
    })


# ---------------------------------------------------------------------------------------------
# Built-in schemes


def _taxonomy_names(categories: Iterable[Label] | None) -> list[Label]:
    return sorted(categories if categories is not None else imat2019_taxonomy().categories,
                  key=lambda c: c.id)


def fine_scheme(categories: Iterable[Label] | None = None, name: str = "fine") -> SchemeDefinition:
    """Every category its own class: value = rank of its source id + 1, colour from the palette.

    Defaults to the iMaterialist 2019 taxonomy, whose ids 0..45 give values 1..46 (Fashionpedia
    shares the names and ids). Pass another dataset's categories to build its own ``fine``.
    """
    cats = _taxonomy_names(categories)
    if len(cats) > 255:
        raise SchemeError(f"{len(cats)} categories do not fit in 255 one-byte class values")
    classes = [SchemeClass(value=0, name="background", colour=fine_colour(0))]
    classes += [SchemeClass(value=i + 1, name=c.name, colour=fine_colour(i + 1))
                for i, c in enumerate(cats)]
    layers: dict[int, list[str]] = {}
    for c in cats:
        layers.setdefault(garment_layer(c.name, c.supercategory), []).append(c.name)
    return SchemeDefinition(
        name=name,
        description="One class per category (value = rank of the category id + 1), drawn in "
                    "wearing order: legwear, lower body, dresses, tops, outerwear, shoes, "
                    "accessories, head, garment parts, closures and decorations.",
        classes=classes,
        mapping={c.name: c.name for c in cats},
        draw_order=[layers[k] for k in sorted(layers)],
    )


BODY_PART_OF_SUPERCATEGORY: dict[str, str] = {
    "head": "head",
    "upperbody": "upper body",
    "lowerbody": "lower body",
    "wholebody": "full body",
    "legs and feet": "legs and feet",
    "neck": "accessories",
    "arms and hands": "accessories",
    "waist": "accessories",
    "others": "accessories",
    "garment parts": "garment parts",
    "closures": "garment parts",
    "decorations": "garment parts",
}


def body_parts_scheme() -> SchemeDefinition:
    """Head / upper body / lower body / full body / legs and feet / accessories / garment parts."""
    names = ["head", "upper body", "lower body", "full body", "legs and feet", "accessories",
             "garment parts"]
    classes = [SchemeClass(value=0, name="background", colour=BODY_PARTS_COLOURS["background"])]
    classes += [SchemeClass(value=i + 1, name=n, colour=BODY_PARTS_COLOURS[n])
                for i, n in enumerate(names)]
    cats = _taxonomy_names(None)
    return SchemeDefinition(
        name="body-parts",
        description="Where the body is dressed: head (hat, headband, glasses), upper body, "
                    "lower body, full body, legs and feet (shoes, socks, tights, leg warmers), "
                    "accessories (bag, belt, scarf, tie, glove, watch, umbrella) and garment "
                    "parts (sleeves, collars, pockets ..., closures and decorations) on top.",
        classes=classes,
        mapping={c.name: BODY_PART_OF_SUPERCATEGORY[c.supercategory] for c in cats},
        fallback=dict(BODY_PART_OF_SUPERCATEGORY),
        # Garments share one layer so that wearing order (a jacket over a dress) decides there.
        draw_order=[["legs and feet", "lower body", "full body", "upper body"],
                    ["accessories"], ["head"], ["garment parts"]],
    )


def _cloth_seg(name: str, ranges: Mapping[str, range], description: str,
               garment_fallback: bool) -> SchemeDefinition:
    by_id = {c.id: c for c in imat2019_taxonomy().categories}
    classes = [SchemeClass(value=v, name=n, colour=CLOTH_SEG_COLOURS[n])
               for v, n in enumerate(["background", "upper body", "lower body", "full body"])]
    mapping = {c.name: "background" for c in by_id.values()}
    for cls_name, ids in ranges.items():
        for i in ids:
            mapping[by_id[i].name] = cls_name
    fallback = {s: "background" for s in BODY_PART_OF_SUPERCATEGORY
                if s not in ("upperbody", "lowerbody", "wholebody")}
    if garment_fallback:
        fallback |= {"upperbody": "upper body", "lowerbody": "lower body",
                     "wholebody": "full body"}
    return SchemeDefinition(
        name=name,
        description=description,
        classes=classes,
        mapping=mapping,
        fallback=fallback,
        draw_order=[["upper body", "lower body", "full body"]],
    )


def cloth_seg_scheme() -> SchemeDefinition:
    """The public cloth-segmentation project's 4 classes as it intended them (ids 0-5/6-8/9-12)."""
    return _cloth_seg(
        "cloth-seg",
        {"upper body": range(0, 6), "lower body": range(6, 9), "full body": range(9, 13)},
        "Background / upper body (category ids 0-5: shirt ... vest) / lower body (6-8: pants, "
        "shorts, skirt) / full body (9-12: coat, dress, jumpsuit, cape), as the public "
        "levindabhi/cloth-segmentation project describes its classes.",
        garment_fallback=True,
    )


def cloth_seg_compat_scheme() -> SchemeDefinition:
    """The mapping cloth-segmentation's released weights were trained on (ids 0-4/5-7/8-11)."""
    return _cloth_seg(
        "cloth-seg-compat",
        {"upper body": range(0, 5), "lower body": range(5, 8), "full body": range(8, 12)},
        "What the released cloth-segmentation weights actually learnt: its training code "
        "shifts category ids by one, so upper body = ids 0-4 (shirt ... jacket), lower body = "
        "5-7 (vest, pants, shorts), full body = 8-11 (skirt, coat, dress, jumpsuit) and a "
        "cape is background. Use it to compare with or fine-tune those weights.",
        garment_fallback=False,
    )


BUILTIN_SCHEMES: dict[str, Callable[[], SchemeDefinition]] = {
    "fine": fine_scheme,
    "body-parts": body_parts_scheme,
    "cloth-seg": cloth_seg_scheme,
    "cloth-seg-compat": cloth_seg_compat_scheme,
}


def builtin_scheme(name: str) -> SchemeDefinition:
    """The built-in definition of ``name`` (not what is stored; see :func:`get_scheme`)."""
    try:
        return BUILTIN_SCHEMES[name]()
    except KeyError:
        raise SchemeNotFound(
            f"no built-in mask scheme {name!r}; built-ins are {', '.join(BUILTIN_SCHEMES)}"
        ) from None


# ---------------------------------------------------------------------------------------------
# The store


@dataclass(frozen=True)
class StoredScheme:
    """One stored version of a scheme."""

    name: str
    version: int
    definition: SchemeDefinition
    curator: str | None
    created_at: datetime


def _stored(row: MaskScheme) -> StoredScheme:
    return StoredScheme(row.name, row.version, parse_scheme(row.definition), row.curator,
                        row.created_at)


def ensure_builtin_schemes(session: Session) -> None:
    """Store each built-in scheme as version 1 unless a scheme of that name exists."""
    existing = set(session.scalars(select(MaskScheme.name).distinct()))
    for name, factory in BUILTIN_SCHEMES.items():
        if name in existing:
            continue
        try:
            with session.begin_nested():
                session.add(MaskScheme(name=name, version=1, definition=factory().to_dict(),
                                       curator=BUILTIN_CURATOR))
        except IntegrityError:
            pass  # another session seeded it at the same moment; its row is the same


def list_schemes(session: Session, all_versions: bool = False) -> list[StoredScheme]:
    """The latest version of every scheme (or every version), by name then version."""
    ensure_builtin_schemes(session)
    query = select(MaskScheme).order_by(MaskScheme.name, MaskScheme.version)
    if not all_versions:
        latest = (select(MaskScheme.name, func.max(MaskScheme.version).label("v"))
                  .group_by(MaskScheme.name).subquery())
        query = query.join(latest, (MaskScheme.name == latest.c.name)
                           & (MaskScheme.version == latest.c.v))
    return [_stored(row) for row in session.scalars(query)]


def _latest_row(session: Session, name: str) -> MaskScheme | None:
    return session.scalars(select(MaskScheme).where(MaskScheme.name == name)
                           .order_by(MaskScheme.version.desc()).limit(1)).first()


def get_scheme(session: Session, name: str, version: int | None = None) -> StoredScheme:
    """A stored scheme: the latest version unless ``version`` is given."""
    ensure_builtin_schemes(session)
    if version is None:
        row = _latest_row(session, name)
    else:
        row = session.scalars(select(MaskScheme).where(
            MaskScheme.name == name, MaskScheme.version == version)).first()
    if row is None:
        names = sorted(set(session.scalars(select(MaskScheme.name))))
        if name in names:
            versions = list(session.scalars(select(MaskScheme.version)
                                            .where(MaskScheme.name == name)
                                            .order_by(MaskScheme.version)))
            raise SchemeNotFound(f"mask scheme {name!r} has no version {version}; "
                                 f"versions are {versions}")
        raise SchemeNotFound(f"no mask scheme named {name!r}; schemes are {', '.join(names)}")
    return _stored(row)


def scheme_for_dataset(session: Session, stored: StoredScheme, dataset_id: int) -> StoredScheme:
    """The scheme to draw a dataset's masks with: ``stored`` itself, except that ``fine`` (one
    class per category) is built from the dataset's own categories when its stored classes
    leave some of them out (a COCO file with names other than iMaterialist's), so that every
    category still gets its own value and colour. Same name and version; the legend says which
    value is which category."""
    if stored.name != "fine":
        return stored
    categories = [Label(source_id, name, supercategory or "") for source_id, name, supercategory in session.execute(
        select(Category.source_id, Category.name, Category.supercategory).where(Category.dataset_id == dataset_id))]
    if all(stored.definition.class_for(c.name, c.supercategory) is not None for c in categories):
        return stored
    return replace(stored, definition=fine_scheme(categories))


def save_scheme(
    session: Session,
    definition: SchemeDefinition | Mapping[str, Any],
    curator: str | None = None,
    based_on: int | None = None,
) -> StoredScheme:
    """Store ``definition`` as a NEW version of its scheme and audit it; nothing is overwritten.

    ``based_on`` is the version the edit started from: if someone saved a newer one meanwhile,
    :class:`SchemeConflict` is raised instead of silently superseding their edit.
    """
    # Re-checked even when already a definition: model_copy(update=...) bypasses validation.
    definition = parse_scheme(
        definition.to_dict() if isinstance(definition, SchemeDefinition) else definition
    )
    try:
        check_name(definition.name, "scheme name")
    except InputRefused as exc:
        raise SchemeError(str(exc)) from None
    ensure_builtin_schemes(session)
    previous = _latest_row(session, definition.name)
    if based_on is not None and previous is not None and previous.version != based_on:
        raise SchemeConflict(
            f"mask scheme {definition.name!r}: this edit started from version {based_on}, but "
            f"version {previous.version} was saved since (by {previous.curator or 'unknown'}); "
            "reload it and apply the edit again"
        )
    version = previous.version + 1 if previous is not None else 1
    row = MaskScheme(name=definition.name, version=version, definition=definition.to_dict(),
                     curator=curator)
    # The audit row goes first: flushing it opens the transaction, so that the savepoint below
    # nests inside it rather than committing on its own under pysqlite.
    audit = record(session, curator, "scheme.save", "mask_scheme", definition.name,
                   before=(None if previous is None
                           else {"version": previous.version, "definition": previous.definition}),
                   after={"version": version, "definition": row.definition})
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        session.delete(audit)
        session.flush()
        raise SchemeConflict(
            f"mask scheme {definition.name!r}: version {version} was saved by someone else at "
            "the same moment; save again"
        ) from None
    session.flush()
    return _stored(row)


# ---------------------------------------------------------------------------------------------
# Checking a scheme against a dataset


@dataclass(frozen=True)
class SchemeCoverage:
    """How a scheme fits a dataset's categories.

    ``unknown``: category names the mapping lists that the dataset does not have (a typo, or
    another taxonomy); ``unmapped``: dataset categories that neither the mapping nor the
    supercategory fallback covers (they would be left out of the mask).
    """

    unknown: list[str]
    unmapped: list[str]

    def problems(self, scheme: str) -> list[str]:
        """Sentences for a curator, empty when the scheme fits."""
        out = []
        if self.unknown:
            out.append(f"scheme {scheme!r} maps categories this dataset does not have: "
                       f"{', '.join(map(repr, self.unknown))}; check their spelling or remove them")
        if self.unmapped:
            out.append(f"scheme {scheme!r} does not map {', '.join(map(repr, self.unmapped))}: "
                       "their masks are left as background; map them (or their supercategory)")
        return out


def scheme_coverage(definition: SchemeDefinition,
                    categories: Iterable[tuple[str, str]]) -> SchemeCoverage:
    """Compare a scheme with ``(name, supercategory)`` pairs of a dataset's categories."""
    cats = list(categories)
    known = {_key(name) for name, _ in cats}
    unknown = [name for name in definition.mapping if _key(name) not in known]
    unmapped = [name for name, sup in cats if definition.class_for(name, sup) is None]
    return SchemeCoverage(unknown=unknown, unmapped=unmapped)
