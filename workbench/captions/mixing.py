"""Mixing recipes: turn the dataset prompt and the reviewed captions into training prompts.

A recipe says which parts come in which order (trigger word, the dataset prompt's garments, a
caption chosen among sources by weight, or a named source), how garments are set off
(``<dress>``, ``[dress]``, ``(dress:1.2)``), whether garment tags are shuffled (the first ``k``
kept in place), what share of prompts is dropped to empty (caption dropout), and a length cap
in CLIP tokens (77 counting the start and end tokens) that cuts caption words first and keeps
the garment names. Every random choice is drawn from a generator seeded by the seed and the
image, so a seed gives the same prompts every time and a preview shows exactly what an export
will write. Recipes are saved by name with versions, never overwritten.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.captions import Caption, MixRecipe as MixRecipeRow
from db.models import utcnow
from workbench.audit import record
from workbench.captions.dataset_prompts import DatasetPromptSettings, SymbolStyle, garment_phrases, load_garments
from workbench.datasets import get_dataset

FIXED_PARTS = ("trigger", "dataset", "caption")
# A recipe is a few lines of settings: a file far larger is refused before it is parsed, and
# every text in it has a cap, so no prompt is built from megabytes of text.
RECIPE_MAX_BYTES = 256 * 1024
MAX_WORD = 1000  # characters of the trigger word, a separator, a source or status name
MAX_ITEMS = 100  # parts, sources, statuses


class MixRecipe(BaseModel):
    """How training prompts are composed (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key would silently do nothing

    parts: list[Annotated[str, Field(max_length=MAX_WORD)]] = Field(
        default_factory=lambda: ["trigger", "dataset", "caption"], max_length=MAX_ITEMS,
        description="Order of parts: trigger, dataset, caption (weighted choice) or a source name.")
    weights: dict[Annotated[str, Field(max_length=MAX_WORD)], float] = Field(
        default_factory=lambda: {"blip": 1.0}, max_length=MAX_ITEMS,
        description="The caption part: sources and their weights.")
    statuses: list[Annotated[str, Field(max_length=MAX_WORD)]] = Field(
        default_factory=lambda: ["accepted", "edited"], max_length=MAX_ITEMS,
        description="Caption statuses that may be used.")
    separator: str = Field(", ", max_length=MAX_WORD)
    symbol_style: SymbolStyle = "plain"
    symbol_weight: float = Field(1.2, gt=0)
    trigger_word: str = Field("", max_length=MAX_WORD)
    garments: DatasetPromptSettings = Field(default_factory=DatasetPromptSettings,
                                            description="How garments and attributes are written.")
    shuffle_garments: bool = False
    keep_first: int = Field(1, ge=0, description="Garment tags kept in place when shuffling.")
    caption_dropout: float = Field(0.0, ge=0.0, le=1.0, description="Share of prompts left empty.")
    max_tokens: int | None = Field(77, ge=3, description="Cap in CLIP tokens, start and end included; None: no cap.")
    tokenizer: str | None = Field(None, max_length=4096, description="CLIPTokenizer folder or hub id; default: CLIP's BPE bundled with open_clip.")

    @field_validator("parts")
    @classmethod
    def _some_parts(cls, parts: list[str]) -> list[str]:
        if not parts:
            raise ValueError("a recipe needs at least one part (trigger, dataset, caption or a source name)")
        return parts

    @field_validator("weights")
    @classmethod
    def _weights(cls, weights: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in weights.items() if v < 0}
        if bad:
            raise ValueError(f"weights must not be negative: {bad}")
        return weights

    def garment_settings(self) -> DatasetPromptSettings:
        """The garment settings with this recipe's symbol style."""
        return self.garments.model_copy(update={"symbol_style": self.symbol_style, "symbol_weight": self.symbol_weight})


@dataclass
class StoredRecipe:
    """A saved recipe version."""

    name: str
    version: int
    recipe: MixRecipe
    curator: str | None = None
    created_at: Any = None


@dataclass
class MixedPrompt:
    """One image's training prompt and how it came about."""

    image_id: int
    file_name: str
    prompt: str
    tokens: int
    tokens_before: int
    truncated: bool = False
    dropped: bool = False
    sources: list[str] = field(default_factory=list)
    garments_cut: int = 0


@dataclass
class _Segment:
    text: str
    kind: Literal["trigger", "garment", "caption"]
    name: str = ""  # a garment's styled name, kept by truncation


# -- token counting ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def token_counter(tokenizer: str | None = None):
    """``count(text) -> tokens`` with start and end tokens: a transformers CLIPTokenizer from a folder
    (or its ``tokenizer/`` subfolder, as in a Stable Diffusion folder) or hub id, or by default the
    CLIP BPE that open_clip bundles (the same vocabulary, no download)."""
    if tokenizer is None:
        from open_clip.tokenizer import SimpleTokenizer

        simple = SimpleTokenizer()
        return lambda text: len(simple.encode(text)) + 2
    from transformers import CLIPTokenizer

    from workbench.models import ModelNotReady, loading, resolve

    path = Path(resolve(tokenizer, "sd")).expanduser()  # a base model's name finds its tokenizer too
    source = str(path / "tokenizer") if (path / "tokenizer" / "vocab.json").is_file() else str(path)
    try:
        with loading("sd", source if path.exists() else tokenizer, name=tokenizer) as load:
            tok = CLIPTokenizer.from_pretrained(source if path.exists() else tokenizer, **load.kwargs)
    except ModelNotReady as exc:
        raise ValueError(f"cannot load the CLIP tokenizer (a folder with vocab.json and merges.txt, a Stable "
                         f"Diffusion base, or a hub id): {exc}") from exc
    return lambda text: len(tok(text, truncation=False)["input_ids"])


def _join(segments: list[_Segment], separator: str) -> str:
    return separator.join(s.text for s in segments if s.text)


def truncate_segments(segments: list[_Segment], separator: str, max_tokens: int, count) -> tuple[list[_Segment], int]:
    """Cut segments until the joined text fits ``max_tokens``: caption words from the end first,
    then the trigger, then garment attributes (names stay), then whole garments from the end
    (the only way garment names are lost). Returns the segments and the garments cut."""
    segments = [(_Segment(s.text, s.kind, s.name)) for s in segments]

    def fits() -> bool:
        return count(_join(segments, separator)) <= max_tokens

    if fits():
        return segments, 0
    # 1. caption text: whole comma-separated pieces, then words, from the last caption backwards.
    for seg in reversed([s for s in segments if s.kind == "caption"]):
        pieces = [p.strip() for p in seg.text.split(",") if p.strip()]
        while pieces and not fits():
            words = pieces[-1].split()
            if len(pieces) > 1 or len(words) <= 1:
                pieces.pop()
            else:
                # One long sentence: find how many words fit by halving.
                lo, hi = 0, len(words) - 1
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    seg.text = " ".join(words[:mid])
                    if fits():
                        lo = mid
                    else:
                        hi = mid - 1
                pieces[-1] = " ".join(words[:lo])
                if not pieces[-1]:
                    pieces.pop()
            seg.text = ", ".join(pieces)
        if fits():
            return segments, 0
    # 2. the trigger word.
    for seg in segments:
        if seg.kind == "trigger" and not fits():
            seg.text = ""
    # 3. garment attributes, last garment first.
    for seg in reversed([s for s in segments if s.kind == "garment"]):
        if fits():
            return segments, 0
        seg.text = seg.name
    # 4. whole garments from the end.
    cut = 0
    for seg in reversed([s for s in segments if s.kind == "garment"]):
        if fits():
            break
        seg.text = ""
        cut += 1
    return segments, cut


# -- composing ----------------------------------------------------------------------------------------
def _captions_by_image(session: Session, dataset_id: int, statuses: list[str], image_ids) -> dict[int, dict[str, str]]:
    """``{image: {source: text}}`` of usable captions (the newest row per source wins)."""
    query = (select(Caption.image_id, Caption.source, Caption.text, Caption.status)
             .where(Caption.dataset_id == dataset_id).order_by(Caption.id))
    if image_ids is not None:
        query = query.where(Caption.image_id.in_(list(image_ids)))
    out: dict[int, dict[str, str]] = {}
    for image_id, source, text, status in session.execute(query):
        if source == "dataset":
            # A reviewed dataset prompt overrides the composed one: rejected -> none, edited -> its text.
            if status in ("rejected", "edited"):
                out.setdefault(image_id, {})["dataset"] = "" if status == "rejected" else text
            continue
        if status in statuses and text.strip():
            out.setdefault(image_id, {})[source] = text.strip()
    return out


def _rng(seed: int, image_id: int) -> random.Random:
    # One generator per image and seed: a sample, a subset or another order gives the same prompts.
    return random.Random(f"{seed}:{image_id}")


def mix_prompts(session: Session, dataset_name: str, recipe: MixRecipe, seed: int = 0,
                image_ids: list[int] | None = None) -> list[MixedPrompt]:
    """The recipe's prompt for every image of the dataset (or of ``image_ids``), by image id."""
    dataset = get_dataset(session, dataset_name)
    garments = load_garments(session, dataset.id, image_ids)
    captions = _captions_by_image(session, dataset.id, recipe.statuses, image_ids)
    style = recipe.garment_settings()
    count = token_counter(recipe.tokenizer)
    out = []
    for image_id, item in garments.items():
        rng = _rng(seed, image_id)
        dropped = rng.random() < recipe.caption_dropout
        shuffle_rng = random.Random(rng.random())
        choice_rng = random.Random(rng.random())
        own = captions.get(image_id, {})
        segments: list[_Segment] = []
        used: list[str] = []
        for part in recipe.parts:
            if part == "trigger":
                if recipe.trigger_word.strip():
                    segments.append(_Segment(recipe.trigger_word.strip(), "trigger"))
            elif part == "dataset":
                if "dataset" in own:  # a curator's edit or rejection of the dataset prompt
                    if own["dataset"]:
                        segments.append(_Segment(own["dataset"], "caption"))
                        used.append("dataset")
                    continue
                kept = [g for g in item.garments if style.include_parts or not g.is_part]
                names_only = style.model_copy(update={"include_attributes": False})
                phrases = garment_phrases(kept, style)
                names = garment_phrases(kept, names_only)
                tags = list(zip(phrases, names)) if len(phrases) == len(names) else [(p, p) for p in phrases]
                if recipe.shuffle_garments and len(tags) > recipe.keep_first:
                    rest = tags[recipe.keep_first:]
                    shuffle_rng.shuffle(rest)
                    tags = tags[:recipe.keep_first] + rest
                segments.extend(_Segment(p, "garment", n) for p, n in tags)
                if tags:
                    used.append("dataset")
            elif part == "caption":
                options = [(s, w) for s, w in recipe.weights.items() if w > 0 and own.get(s)]
                if options:
                    source = choice_rng.choices([s for s, _ in options], weights=[w for _, w in options])[0]
                    segments.append(_Segment(own[source], "caption"))
                    used.append(source)
            elif own.get(part):
                segments.append(_Segment(own[part], "caption"))
                used.append(part)
        text = _join(segments, recipe.separator)
        before = count(text)
        if dropped:
            out.append(MixedPrompt(image_id, item.file_name, "", count(""), before, dropped=True, sources=used))
            continue
        cut, truncated = 0, False
        if recipe.max_tokens is not None and before > recipe.max_tokens:
            segments, cut = truncate_segments(segments, recipe.separator, recipe.max_tokens, count)
            text, truncated = _join(segments, recipe.separator), True
        out.append(MixedPrompt(image_id, item.file_name, text, count(text) if truncated else before, before,
                               truncated=truncated, sources=used, garments_cut=cut))
    return out


@dataclass
class MixPreview:
    """Prompts of a sample of images, and token lengths of every image (before and after the cap)."""

    samples: list[MixedPrompt]
    lengths_before: list[int]
    lengths_after: list[int]
    truncated: int
    dropped: int

    def histogram(self, after: bool = True) -> dict[int, int]:
        """``{token length: images}``."""
        return dict(sorted(Counter(self.lengths_after if after else self.lengths_before).items()))


def preview_mix(session: Session, dataset_name: str, recipe: MixRecipe, n: int = 20, seed: int = 0) -> MixPreview:
    """The recipe's prompts for ``n`` images drawn with ``seed``, and the token lengths of all."""
    prompts = mix_prompts(session, dataset_name, recipe, seed)
    picks = sorted(random.Random(seed).sample(range(len(prompts)), min(n, len(prompts))))
    return MixPreview(
        samples=[prompts[i] for i in picks],
        lengths_before=[p.tokens_before for p in prompts],
        lengths_after=[p.tokens for p in prompts],
        truncated=sum(p.truncated for p in prompts),
        dropped=sum(p.dropped for p in prompts),
    )


# -- which sources a dataset has -------------------------------------------------------------------
def caption_counts(session: Session, dataset_name: str, statuses: list[str]) -> dict[str, tuple[int, int]]:
    """``{source: (captions, usable)}`` for each caption source of the dataset but its own
    dataset prompt: usable ones have one of ``statuses`` and some text."""
    dataset = get_dataset(session, dataset_name)
    out: dict[str, list[int]] = {}
    for source, status, count in session.execute(
        select(Caption.source, Caption.status, func.count())
        .where(Caption.dataset_id == dataset.id, Caption.source != "dataset", func.trim(Caption.text) != "")
        .group_by(Caption.source, Caption.status)
    ):
        counts = out.setdefault(source, [0, 0])
        counts[0] += count
        counts[1] += count if status in statuses else 0
    return {source: (total, usable) for source, (total, usable) in sorted(out.items())}


def new_recipe(session: Session, dataset_name: str) -> MixRecipe:
    """A fresh recipe for the dataset: its caption part weighs every source the dataset has
    captions from equally (none: the caption part stays empty until some are made)."""
    sources = caption_counts(session, dataset_name, MixRecipe().statuses)
    return MixRecipe(weights={source: 1.0 for source in sources})


def empty_sources(session: Session, dataset_name: str, recipe: MixRecipe) -> dict[str, str]:
    """``{source: why}`` for each source the recipe draws on (a weight above 0, or a part by
    name) that gives no caption for this dataset."""
    counts = caption_counts(session, dataset_name, recipe.statuses)
    wanted = [s for s, w in recipe.weights.items() if w > 0]
    wanted += [p for p in recipe.parts if p not in FIXED_PARTS]
    out = {}
    for source in dict.fromkeys(wanted):
        total, usable = counts.get(source, (0, 0))
        if not total:
            out[source] = f"no {source} captions in {dataset_name}"
        elif not usable:
            out[source] = (f"{total} {source} caption(s) in {dataset_name}, none "
                           f"{' or '.join(recipe.statuses)} yet (review them on the Captions page)")
    return out


# -- storing recipes ----------------------------------------------------------------------------------
def load_recipe_file(path: str | Path) -> tuple[str | None, MixRecipe]:
    """``(name or None, recipe)`` from a JSON file holding a recipe, or ``{"name": ..., "recipe": {...}}``."""
    from workbench.guard import InputRefused, check_name, read_json, unknown_key_problem, validation_problems

    path = Path(path)
    data = read_json(path, "recipe file", max_bytes=RECIPE_MAX_BYTES)
    name = None
    if isinstance(data, dict) and "recipe" in data:
        extra = [k for k in data if k not in ("name", "recipe")]
        if extra:
            raise InputRefused(f"recipe file {path}: {unknown_key_problem(extra[0], ['name', 'recipe'])}")
        name = None if data.get("name") is None else check_name(data["name"], "recipe name")
        data = data["recipe"]
    try:
        return name, MixRecipe.model_validate(data)
    except ValidationError as exc:
        raise InputRefused(f"recipe file {path}: {validation_problems(exc, MixRecipe)}") from None


def save_recipe(session: Session, name: str, recipe: MixRecipe, curator: str | None = None,
                dataset: str | None = None) -> StoredRecipe:
    """Save ``recipe`` as the next version of ``name``, for ``dataset`` when named (the same
    definition for the same dataset again saves nothing)."""
    from workbench.guard import check_name

    check_name(name, "recipe name")
    dataset_id = get_dataset(session, dataset).id if dataset is not None else None
    latest = session.scalar(select(MixRecipeRow).where(MixRecipeRow.name == name).order_by(MixRecipeRow.version.desc()))
    definition = recipe.model_dump(mode="json")
    if latest is not None and latest.definition == definition and latest.dataset_id == dataset_id:
        return StoredRecipe(latest.name, latest.version, recipe, latest.curator, latest.created_at)
    version = (latest.version + 1) if latest else 1
    row = MixRecipeRow(name=name, version=version, definition=definition, curator=curator, created_at=utcnow(),
                       dataset_id=dataset_id)
    session.add(row)
    session.flush()
    record(session, curator, "recipe.save", "mix_recipe", f"{name}@{version}", dataset=dataset,
           before=latest.definition if latest else None, after=definition)
    return StoredRecipe(name, version, recipe, curator, row.created_at)


def get_recipe(session: Session, name: str, version: int | None = None) -> StoredRecipe:
    """A saved recipe (the newest version unless one is named)."""
    query = select(MixRecipeRow).where(MixRecipeRow.name == name)
    query = query.where(MixRecipeRow.version == version) if version is not None else query.order_by(MixRecipeRow.version.desc())
    row = session.scalar(query)
    if row is None:
        known = ", ".join(list_recipe_names(session)) or "none saved yet"
        raise LookupError(f"no recipe {name!r}{'' if version is None else f' version {version}'} (recipes: {known})")
    return StoredRecipe(row.name, row.version, MixRecipe.model_validate(row.definition), row.curator, row.created_at)


def latest_recipe_for(session: Session, dataset: str) -> StoredRecipe | None:
    """The recipe saved most recently for ``dataset`` (its newest version), or None."""
    name = session.scalar(select(MixRecipeRow.name).where(MixRecipeRow.dataset_id == get_dataset(session, dataset).id)
                          .order_by(MixRecipeRow.id.desc()).limit(1))
    return get_recipe(session, name) if name is not None else None


def list_recipe_names(session: Session) -> list[str]:
    """Names of the saved recipes."""
    return list(session.scalars(select(MixRecipeRow.name).distinct().order_by(MixRecipeRow.name)))


def recipe_versions(session: Session, name: str) -> list[int]:
    """Saved versions of a recipe, oldest first."""
    return list(session.scalars(select(MixRecipeRow.version).where(MixRecipeRow.name == name).order_by(MixRecipeRow.version)))


# -- the export's entry point ----------------------------------------------------------------------------
DEFAULT_RECIPE = MixRecipe(parts=["dataset"], weights={})
RecipeRef = MixRecipe | StoredRecipe | str | tuple[str, int] | None


def _resolve(session: Session, recipe: RecipeRef) -> tuple[MixRecipe, dict[str, Any]]:
    if recipe is None:
        return DEFAULT_RECIPE, {"name": None, "version": None, "default": "dataset prompt"}
    if isinstance(recipe, str):
        recipe = get_recipe(session, recipe)
    elif isinstance(recipe, tuple):
        recipe = get_recipe(session, recipe[0], recipe[1])
    if isinstance(recipe, StoredRecipe):
        return recipe.recipe, {"name": recipe.name, "version": recipe.version}
    return recipe, {"name": None, "version": None, "unsaved": True}


def recipe_version(session: Session, recipe: RecipeRef = None, seed: int = 0) -> dict[str, Any]:
    """What an export records about the prompts: recipe name and version (``None`` for the default
    dataset prompt or an unsaved recipe), the seed, and the full definition."""
    resolved, info = _resolve(session, recipe)
    return {**info, "seed": seed, "definition": resolved.model_dump(mode="json")}


class TrainingPrompts(dict):
    """``{image id: prompt}`` that also carries :func:`recipe_version`'s record as ``recipe_version``."""

    recipe_version: dict[str, Any]


def training_prompts(session: Session, dataset_name: str, recipe: RecipeRef = None, seed: int = 0) -> TrainingPrompts:
    """The training prompt of every image: ``recipe`` (a saved name, ``(name, version)``, a stored or
    unsaved recipe) with ``seed``; with no recipe, each image's dataset prompt (capped at 77 tokens)."""
    resolved, _ = _resolve(session, recipe)
    out = TrainingPrompts((p.image_id, p.prompt) for p in mix_prompts(session, dataset_name, resolved, seed))
    out.recipe_version = recipe_version(session, recipe, seed)
    return out
