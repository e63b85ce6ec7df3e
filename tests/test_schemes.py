"""Mask schemes: built-in mappings, validation, versioned storage with an audit trail."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from db.engine import session_scope
from db.models import AuditLog, MaskScheme
from workbench.palette import BODY_PARTS_COLOURS, CLOTH_SEG_COLOURS, FINE_PALETTE, flat_palette
from workbench.schemes import (
    BUILTIN_SCHEMES,
    NOT_IN_DATASET,
    SchemeConflict,
    SchemeError,
    SchemeNotFound,
    builtin_scheme,
    colour_of_hex,
    fine_scheme,
    garment_layer,
    get_scheme,
    hex_colour,
    list_schemes,
    parse_scheme,
    save_scheme,
    scheme_from_tables,
    scheme_tables,
)
from workbench.taxonomy import Label, imat2019_taxonomy

CATS = imat2019_taxonomy().categories
NAME = {c.id: c.name for c in CATS}


def value_of(scheme, category: str) -> int:
    cls = scheme.class_for(category)
    assert cls is not None, category
    return cls.value


def minimal(**changes) -> dict:
    data = {
        "name": "mine",
        "classes": [{"value": 0, "name": "background", "colour": [0, 0, 0]},
                    {"value": 1, "name": "clothes", "colour": [255, 0, 0]}],
        "mapping": {"dress": "clothes"},
        "fallback": {"upperbody": "clothes"},
        "draw_order": [["clothes"]],
    }
    data.update(changes)
    return data


# --- palette ---------------------------------------------------------------------------------


def test_fine_palette_is_fixed_and_distinct():
    assert len(FINE_PALETTE) == 256
    assert FINE_PALETTE[0] == (0, 0, 0)
    assert len(set(FINE_PALETTE)) == 256
    assert all(0 <= v <= 255 for colour in FINE_PALETTE for v in colour)
    # The 46 categories' colours are far apart: no two within 60 in summed RGB difference.
    early = FINE_PALETTE[:47]
    closest = min(sum(abs(a - b) for a, b in zip(p, q))
                  for i, p in enumerate(early) for q in early[:i])
    assert closest >= 60


def test_flat_palette_places_colours_at_their_values():
    flat = flat_palette({0: (0, 0, 0), 3: (1, 2, 3), 255: (9, 8, 7)})
    assert len(flat) == 768 and flat[9:12] == [1, 2, 3] and flat[-3:] == [9, 8, 7]
    with pytest.raises(ValueError, match="256 is outside 0..255"):
        flat_palette({256: (0, 0, 0)})


# --- built-ins -------------------------------------------------------------------------------


def test_fine_gives_every_category_its_id_plus_one_and_palette_colour():
    fine = builtin_scheme("fine")
    assert len(fine.classes) == 47
    for c in CATS:
        cls = fine.class_for(c.name, c.supercategory)
        assert cls.value == c.id + 1 and cls.name == c.name
        assert cls.colour == FINE_PALETTE[c.id + 1]
    assert fine.legend()["0"] == "background"
    assert fine.legend()["32"] == "sleeve"
    assert fine.fallback == {}  # an unknown category never borrows another's value


def test_fine_for_another_taxonomy_ranks_source_ids():
    cats = [Label(7, "hat", "head"), Label(3, "dress", "wholebody"),
            Label(40, "sleeve", "garment parts")]
    fine = fine_scheme(cats)
    assert [value_of(fine, n) for n in ("dress", "hat", "sleeve")] == [1, 2, 3]
    # Draw order follows wearing order, not ids.
    assert fine.layer_of(1) < fine.layer_of(2) < fine.layer_of(3)


def test_fine_draw_order_is_the_wearing_order():
    fine = builtin_scheme("fine")
    order = ["tights, stockings", "pants", "dress", "shirt, blouse", "sweater", "cardigan",
             "vest", "jacket", "coat", "shoe", "belt", "hat", "sleeve", "zipper"]
    layers = [fine.layer_of(value_of(fine, n)) for n in order]
    assert layers == sorted(layers) and len(set(layers)) == len(layers)
    assert fine.layer_of(value_of(fine, "coat")) == fine.layer_of(value_of(fine, "cape"))
    assert fine.layer_of(value_of(fine, "pocket")) == fine.layer_of(value_of(fine, "collar"))


def test_body_parts_mapping():
    bp = builtin_scheme("body-parts")
    expected = {
        "head": ["hat", "headband, head covering, hair accessory", "glasses"],
        "upper body": ["shirt, blouse", "top, t-shirt, sweatshirt", "sweater", "cardigan",
                       "jacket", "vest"],
        "lower body": ["pants", "shorts", "skirt"],
        "full body": ["coat", "dress", "jumpsuit", "cape"],
        "legs and feet": ["shoe", "sock", "tights, stockings", "leg warmer"],
        "accessories": ["bag, wallet", "belt", "scarf", "tie", "glove", "watch", "umbrella"],
        "garment parts": ["sleeve", "collar", "neckline", "pocket", "lapel", "hood", "epaulette",
                          "zipper", "buckle", "applique", "bead", "bow", "flower", "fringe",
                          "ribbon", "rivet", "ruffle", "sequin", "tassel"],
    }
    for cls_name, names in expected.items():
        for n in names:
            assert bp.class_for(n).name == cls_name, n
    assert sorted(n for names in expected.values() for n in names) == sorted(NAME.values())
    assert all(bp.class_for(c.name) is not None for c in CATS)
    assert {c.name: c.colour for c in bp.classes} == BODY_PARTS_COLOURS
    # An unknown category name falls back to its supercategory.
    assert bp.class_for("kimono", "wholebody").name == "full body"
    assert bp.class_for("kimono", "nowhere") is None


def test_cloth_seg_ranges_come_from_the_taxonomy_ids():
    seg, compat = builtin_scheme("cloth-seg"), builtin_scheme("cloth-seg-compat")
    for i, name in NAME.items():
        want = 1 if i <= 5 else 2 if i <= 8 else 3 if i <= 12 else 0
        assert value_of(seg, name) == want, name
        want = 1 if i <= 4 else 2 if i <= 7 else 3 if i <= 11 else 0
        assert value_of(compat, name) == want, name
    assert [value_of(seg, n) for n in ("vest", "skirt", "coat", "cape")] == [1, 2, 3, 3]
    assert [value_of(compat, n) for n in ("vest", "skirt", "coat", "cape")] == [2, 3, 3, 0]
    assert {c.name: c.colour for c in seg.classes} == CLOTH_SEG_COLOURS


def test_garment_layer_falls_back_to_supercategory():
    assert garment_layer("dress") < garment_layer("jacket") < garment_layer("sleeve")
    assert garment_layer("poncho", "wholebody") == garment_layer("dress")
    assert garment_layer("thing", "unknown") == -1


def test_definitions_round_trip_through_json():
    for name in BUILTIN_SCHEMES:
        d = builtin_scheme(name)
        back = parse_scheme(json.loads(d.to_json()))
        assert back == d
        assert back.class_for("dress", "wholebody") == d.class_for("dress", "wholebody")


def test_names_match_ignoring_case_and_spacing_and_bare_layers_are_accepted():
    d = parse_scheme(minimal(draw_order=["clothes"]))
    assert d.draw_order == [["clothes"]]
    assert d.class_for("  Dress ").value == 1
    assert d.class_for("Shirt", "UpperBody").value == 1


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, message", [
    ({"mapping": {"dress": "clothez"}}, "category 'dress' maps to unknown class 'clothez'"),
    ({"fallback": {"head": "hats"}}, "supercategory 'head' maps to unknown class 'hats'"),
    ({"classes": [{"value": 0, "name": "background", "colour": [0, 0, 0]},
                  {"value": 1, "name": "clothes", "colour": [255, 0, 0]},
                  {"value": 1, "name": "shoes", "colour": [0, 255, 0]}],
      "draw_order": [["clothes", "shoes"]]},
     "duplicate value 1 ('clothes' and 'shoes')"),
    ({"classes": [{"value": 0, "name": "background", "colour": [0, 0, 0]},
                  {"value": 300, "name": "clothes", "colour": [255, 0, 0]}]},
     "class 'clothes' has value 300; values must be 0..255"),
    ({"classes": [{"value": 1, "name": "clothes", "colour": [255, 0, 0]}]}, "no class has value 0"),
    ({"draw_order": []}, "class 'clothes' is missing"),
    ({"draw_order": [["clothes"], ["hats"]]}, "draw_order: unknown class 'hats'"),
    ({"classes": [{"value": 0, "name": "background", "colour": [0, 0, 0]},
                  {"value": 1, "name": "clothes", "colour": [255, 0, 999]}]}, "colour"),
])
def test_invalid_schemes_are_refused_with_the_problem_named(changes, message):
    with pytest.raises(SchemeError) as info:
        parse_scheme(minimal(**changes))
    assert message in str(info.value)
    assert "mask scheme 'mine'" in str(info.value)


def test_every_problem_is_named_at_once():
    with pytest.raises(SchemeError) as info:
        parse_scheme(minimal(mapping={"dress": "a", "pants": "b"}))
    assert "'a'" in str(info.value) and "'b'" in str(info.value)


def test_unknown_fields_are_refused():
    with pytest.raises(SchemeError, match="colours"):
        parse_scheme(minimal(colours={}))


# --- editing as tables ----------------------------------------------------------------------


def row(rows: list[dict], column: str, value: str) -> dict:
    """The one row whose ``column`` is ``value``."""
    (found,) = [r for r in rows if r[column] == value]
    return found


def body_parts_tables() -> tuple[list[dict], list[dict]]:
    return scheme_tables(builtin_scheme("body-parts"))


def test_hex_colours_round_trip():
    assert all(colour_of_hex(hex_colour(c)) == c for c in FINE_PALETTE)
    assert colour_of_hex(" FF8800 ") == (255, 136, 0)
    for bad in ("red", "#ff880", "#ff88001", "#gg8800", ""):
        with pytest.raises(ValueError, match="is not #rrggbb"):
            colour_of_hex(bad)


@pytest.mark.parametrize("name", list(BUILTIN_SCHEMES))
def test_tables_of_a_builtin_give_the_same_definition_back(name):
    d = builtin_scheme(name)
    assert scheme_from_tables(d, *scheme_tables(d)) == d
    dataset = [("dress", "wholebody"), ("hat", "head"), ("poncho", "upperbody")]
    mapping_rows, class_rows = scheme_tables(d, dataset)
    assert scheme_from_tables(d, mapping_rows, class_rows) == d
    # The dataset's categories first (a name the scheme lacks with an empty part), then the
    # mapped names the dataset does not have.
    assert [r["category"] for r in mapping_rows[:3]] == ["dress", "hat", "poncho"]
    assert mapping_rows[2]["part"] == ""
    assert {r["category"] for r in mapping_rows[3:]} == set(d.mapping) - {"dress", "hat"}
    assert {r["supercategory"] for r in mapping_rows[3:]} == {NOT_IN_DATASET}


def test_class_rows_hold_value_colour_and_layer_counted_from_1():
    _, class_rows = body_parts_tables()
    assert [r["value"] for r in class_rows] == list(range(8))
    assert row(class_rows, "name", "background") == {
        "value": 0, "name": "background", "colour": "#000000", "layer": 0}
    assert row(class_rows, "name", "upper body")["colour"] == hex_colour(
        BODY_PARTS_COLOURS["upper body"])
    layers = {r["name"]: r["layer"] for r in class_rows}
    assert layers["upper body"] == layers["legs and feet"] == 1
    assert layers["accessories"] == 2 and layers["head"] == 3 and layers["garment parts"] == 4


def test_an_edit_gives_the_definition_it_describes():
    base = builtin_scheme("body-parts")
    mapping_rows, class_rows = body_parts_tables()
    row(mapping_rows, "category", "dress")["part"] = "upper body"    # moved to another part
    row(mapping_rows, "category", "belt")["part"] = None             # left to the fallback
    row(class_rows, "name", "head")["colour"] = "#123456"
    row(class_rows, "name", "accessories")["layer"] = 9              # now drawn on top of all
    class_rows.append({"value": float("nan"), "name": None, "colour": None, "layer": None})
    mapping_rows.append({"category": None, "supercategory": None, "part": ""})

    edited = scheme_from_tables(base, mapping_rows, class_rows)

    mapping = {k: v for k, v in base.mapping.items() if k != "belt"} | {"dress": "upper body"}
    classes = [c.model_copy(update={"colour": (0x12, 0x34, 0x56)}) if c.name == "head" else c
               for c in base.classes]
    assert edited == base.edited(
        mapping=mapping, classes=[c.model_dump() for c in classes],
        draw_order=[["legs and feet", "lower body", "full body", "upper body"], ["head"],
                    ["garment parts"], ["accessories"]])
    assert edited.class_for("dress", "wholebody").name == "upper body"
    assert edited.class_for("belt", "waist").name == "accessories"
    head = base.class_for("hat").value
    assert edited.colours() == base.colours() | {head: (0x12, 0x34, 0x56)}
    accessories, parts = (base.class_for("bag, wallet").value, base.class_for("sleeve").value)
    assert edited.layer_of(accessories) > edited.layer_of(parts)
    assert (edited.name, edited.fallback) == (base.name, base.fallback)


def test_a_new_class_row_becomes_a_class_in_layer_1():
    mapping_rows, class_rows = body_parts_tables()
    class_rows.append({"value": 8.0, "name": " shoes ", "colour": "00ff00", "layer": None})
    row(mapping_rows, "category", "shoe")["part"] = "shoes"
    edited = scheme_from_tables(builtin_scheme("body-parts"), mapping_rows, class_rows)
    assert edited.class_for("shoe").model_dump() == {
        "value": 8, "name": "shoes", "colour": (0, 255, 0)}
    assert edited.layer_of(8) == 0 and "shoes" in edited.draw_order[0]


def bad_class(which: str, **changes):
    def edit(mapping_rows, class_rows):
        row(class_rows, "name", which).update(changes)
    return edit


def bad_part(category: str, part):
    def edit(mapping_rows, class_rows):
        row(mapping_rows, "category", category)["part"] = part
    return edit


@pytest.mark.parametrize("edit, message", [
    (bad_part("dress", "sleeves"), "category 'dress' maps to unknown class 'sleeves'"),
    (bad_class("lower body", value=1), "duplicate value 1 ('head' and 'lower body')"),
    (bad_class("head", colour="red"), "classes row 2 ('head'): colour 'red' is not #rrggbb"),
    (bad_class("head", colour=None), "classes row 2 ('head'): no colour; write it as #rrggbb"),
    (bad_class("head", value=1.5), "classes row 2 ('head'): value 1.5 is not a whole number"),
    (bad_class("head", value=None), "classes row 2 ('head'): value None is not a whole number"),
    (bad_class("head", layer="top"), "classes row 2 ('head'): layer 'top' is not a whole number"),
    (bad_class("head", name="  "), "classes row 2: the class has no name"),
    (bad_class("head", value=256), "class 'head' has value 256; values must be 0..255"),
    (bad_class("upper body", name="tops"), "category 'shirt, blouse' maps to unknown class "
                                           "'upper body'"),
])
def test_bad_edits_are_refused_with_the_problem_named(edit, message):
    mapping_rows, class_rows = body_parts_tables()
    edit(mapping_rows, class_rows)
    with pytest.raises(SchemeError) as info:
        scheme_from_tables(builtin_scheme("body-parts"), mapping_rows, class_rows)
    assert message in str(info.value)
    assert str(info.value).startswith("mask scheme 'body-parts': ")


def test_a_category_listed_twice_or_a_part_without_category_is_refused():
    mapping_rows, class_rows = body_parts_tables()
    dress = next(i for i, r in enumerate(mapping_rows, start=1) if r["category"] == "dress")
    mapping_rows.append({"category": " Dress", "supercategory": "", "part": "head"})
    mapping_rows.append({"category": None, "supercategory": "", "part": "head"})
    with pytest.raises(SchemeError) as info:
        scheme_from_tables(builtin_scheme("body-parts"), mapping_rows, class_rows)
    n = len(mapping_rows)
    assert f"category 'Dress' is listed twice (rows {dress} and {n - 1})" in str(info.value)
    assert f"mapping row {n}: part 'head' has no category" in str(info.value)


def test_every_bad_row_is_named_at_once():
    mapping_rows, class_rows = body_parts_tables()
    row(class_rows, "name", "head")["colour"] = "red"
    row(class_rows, "name", "accessories")["value"] = "x"
    with pytest.raises(SchemeError) as info:
        scheme_from_tables(builtin_scheme("body-parts"), mapping_rows, class_rows)
    assert "colour 'red'" in str(info.value) and "value 'x'" in str(info.value)


# --- storage ---------------------------------------------------------------------------------


def test_builtins_are_seeded_as_version_1_on_first_use(engine):
    with session_scope(engine) as s:
        assert s.scalars(select(MaskScheme)).all() == []
        stored = list_schemes(s)
        assert [(x.name, x.version) for x in stored] == [
            ("body-parts", 1), ("cloth-seg", 1), ("cloth-seg-compat", 1), ("fine", 1)]
        assert all(x.curator == "builtin" for x in stored)
    with session_scope(engine) as s:
        list_schemes(s)
        get_scheme(s, "fine")
        assert len(s.scalars(select(MaskScheme)).all()) == 4  # seeding happens once
        assert get_scheme(s, "cloth-seg").definition == builtin_scheme("cloth-seg")


def test_saving_adds_versions_and_audit_rows_never_overwrites(engine):
    with session_scope(engine) as s:
        v1 = get_scheme(s, "body-parts")
        edit1 = v1.definition.edited(mapping=dict(v1.definition.mapping, belt="garment parts"))
        assert save_scheme(s, edit1, curator="ann").version == 2
    with session_scope(engine) as s:
        edit2 = edit1.edited(description="belts count as garment parts")
        assert save_scheme(s, edit2, curator="bob").version == 3
    with session_scope(engine) as s:
        assert get_scheme(s, "body-parts").version == 3
        assert get_scheme(s, "body-parts", 1).definition == builtin_scheme("body-parts")
        assert get_scheme(s, "body-parts", 2).definition.class_for("belt").name == "garment parts"
        v3 = get_scheme(s, "body-parts", 3).definition
        assert v3.description == "belts count as garment parts"
        assert [x.version for x in list_schemes(s, all_versions=True)
                if x.name == "body-parts"] == [1, 2, 3]
        audits = s.scalars(select(AuditLog).where(AuditLog.action == "scheme.save")
                           .order_by(AuditLog.id)).all()
        assert [(a.curator, a.entity, a.entity_id) for a in audits] == [
            ("ann", "mask_scheme", "body-parts"), ("bob", "mask_scheme", "body-parts")]
        assert [(a.before["version"], a.after["version"]) for a in audits] == [(1, 2), (2, 3)]
        assert audits[0].before["definition"]["mapping"]["belt"] == "accessories"
        assert audits[0].after["definition"]["mapping"]["belt"] == "garment parts"


def test_a_new_scheme_starts_at_version_1(engine):
    with session_scope(engine) as s:
        stored = save_scheme(s, minimal(), curator="ann")
        assert (stored.name, stored.version) == ("mine", 1)
        audit = s.scalars(select(AuditLog).where(AuditLog.entity_id == "mine")).one()
        assert audit.before is None and audit.after["version"] == 1


def test_invalid_save_stores_nothing(engine):
    with session_scope(engine) as s:
        with pytest.raises(SchemeError, match="unknown class 'clothez'"):
            save_scheme(s, minimal(mapping={"dress": "clothez"}))
        assert s.scalars(select(MaskScheme).where(MaskScheme.name == "mine")).all() == []
        assert s.scalars(select(AuditLog)).all() == []


def test_model_copy_edits_are_checked_on_save(engine):
    with session_scope(engine) as s:
        d = get_scheme(s, "cloth-seg").definition
        bad = d.model_copy(update={"mapping": {"dress": "nowhere"}})
        with pytest.raises(SchemeError, match="unknown class 'nowhere'"):
            save_scheme(s, bad)


def test_stale_edit_conflicts_instead_of_superseding(engine):
    with session_scope(engine) as s:
        d = get_scheme(s, "fine").definition
        save_scheme(s, d.edited(description="ann's"), curator="ann", based_on=1)
    with session_scope(engine) as s:
        with pytest.raises(SchemeConflict, match="started from version 1, but version 2"):
            save_scheme(s, d.edited(description="bob's"), curator="bob", based_on=1)
        assert get_scheme(s, "fine").definition.description == "ann's"


def test_unknown_scheme_or_version_is_named(engine):
    with session_scope(engine) as s:
        with pytest.raises(SchemeNotFound, match="no mask scheme named 'nope'.*body-parts"):
            get_scheme(s, "nope")
        with pytest.raises(SchemeNotFound, match=r"'fine' has no version 7; versions are \[1\]"):
            get_scheme(s, "fine", 7)
