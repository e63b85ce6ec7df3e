"""Exploratory statistics of a dataset, computed from compact frames, never by decoding masks.

The store already holds every mask's area and box (computed at import). :func:`load_frames`
reads, once per dataset version, a compact numeric copy of what the statistics need: one row
per image (size, split, file name), one per annotation (image, category, area) and one per
annotation attribute. The annotation read is answered from a covering index
(``db/explore.py``), and the frames are cached on disk (parquet under
``settings.data_dir/cache/eda``) keyed by a fingerprint of the dataset's rows, so that a new
process starts from the cache too. Everything after that is numpy on those arrays: a filter
change is a few bincounts, not a query.

Filters select IMAGES (:class:`EdaFilter`): images with a mask of one of the chosen
categories, with a mask carrying one of the chosen attributes, within a size range, and with
a given status in each image facet (people flags, captions). The statistics then describe
those images, all of their masks included ("among images with a dress, what else is worn").

Image facets are per-image values that other parts of the workbench own (people-flag review
status, estimated people per image, caption status; ``workbench/eda_facets.py`` reads them
from the people and caption tables). A module listed in
:data:`FACET_PROVIDERS` that defines ``eda_facets() -> list[ImageFacet]`` plugs its facets in:
they become filters and charts without a change here. :func:`register_facet` does the same
from anywhere.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, Select, func, select
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import Annotation, AnnotationAttribute, Attribute, Category, Dataset, Image
from workbench.datasets import get_dataset

_log = logging.getLogger(__name__)

NO_SPLIT = "(none)"
FRAMES_FORMAT = 1  # bump when the cached frame layout changes

# ---------------------------------------------------------------------------------------------
# Image facets: the plug-in point for people flags and captions


@dataclass(frozen=True)
class ImageFacet:
    """A per-image value another area owns: a status (filterable) or a number (charted).

    ``load(session, dataset_id)`` returns a Series indexed by image id; images it leaves out
    get ``missing`` (e.g. "not reviewed", "no caption", or NaN for a number).
    """

    name: str
    label: str
    load: Callable[[Session, int], pd.Series]
    numeric: bool = False
    missing: Any = "none"


_registered: dict[str, ImageFacet] = {}
# Modules that may define ``eda_facets()``; each is optional (imported only if it exists).
FACET_PROVIDERS: tuple[str, ...] = ("workbench.eda_facets", "workbench.people", "workbench.captions",
                                     "workbench.segment")


def register_facet(facet: ImageFacet) -> None:
    """Add (or replace) an image facet for every later :func:`image_facets` call."""
    _registered[facet.name] = facet


def image_facets() -> list[ImageFacet]:
    """Every image facet available now: registered ones and those of :data:`FACET_PROVIDERS`."""
    found: dict[str, ImageFacet] = {}
    for module_name in FACET_PROVIDERS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if getattr(exc, "name", None) != module_name:
                # The module exists but cannot be imported now (half-installed, a missing
                # dependency): the statistics go on without its facets.
                _log.warning("image facets of %s are unavailable: %s", module_name, exc)
            continue
        provider = getattr(module, "eda_facets", None)
        if provider is not None:
            for facet in provider():
                found[facet.name] = facet
    found.update(_registered)
    return list(found.values())


# ---------------------------------------------------------------------------------------------
# Frames


@dataclass
class EdaFrames:
    """The compact frames of one dataset version (treat as read-only: they are shared).

    ``images`` is sorted by id (its position is the image's index in every array);
    ``annotations`` holds ``img`` (image position), ``cat`` (category position) and ``area``;
    ``annotation_attributes`` holds ``img``, ``cat`` and ``att`` (attribute position).
    """

    dataset: str
    dataset_id: int
    fingerprint: str
    images: pd.DataFrame
    annotations: pd.DataFrame
    annotation_attributes: pd.DataFrame
    categories: pd.DataFrame
    attributes: pd.DataFrame
    facets: dict[str, pd.Series] = field(default_factory=dict)
    facet_info: dict[str, ImageFacet] = field(default_factory=dict)
    _derived: dict[str, Any] = field(default_factory=dict, repr=False)

    def derived(self, name: str, build: Callable[[], Any]) -> Any:
        """A value computed once from the frames (sort orders, distinct pairs)."""
        if name not in self._derived:
            self._derived[name] = build()
        return self._derived[name]


def dataset_fingerprint(session: Session, dataset_id: int) -> str:
    """A cheap key that changes whenever the dataset's images or annotations change."""
    n_img, max_img = session.execute(
        select(func.count(Image.id), func.max(Image.id)).where(Image.dataset_id == dataset_id)
    ).one()
    n_ann, max_ann = session.execute(
        select(func.count(Annotation.id), func.max(Annotation.id))
        .where(Annotation.dataset_id == dataset_id)
    ).one()
    n_cat = session.scalar(select(func.count(Category.id)).where(Category.dataset_id == dataset_id))
    n_att = session.scalar(
        select(func.count(Attribute.id)).where(Attribute.dataset_id == dataset_id)
    )
    return f"v{FRAMES_FORMAT}-{dataset_id}-{n_img}-{max_img}-{n_ann}-{max_ann}-{n_cat}-{n_att}"


def _int_rows(conn: Connection, statement: Select, width: int) -> np.ndarray:
    result = conn.execute(statement)
    try:
        rows = result.cursor.fetchall()  # the DBAPI cursor: plain tuples
    finally:
        result.close()
    return np.array(rows, dtype=np.int64).reshape(-1, width)


def _read_frames(session: Session, dataset: Dataset, fingerprint: str) -> EdaFrames:
    conn = session.connection()
    images = pd.DataFrame(
        conn.execute(
            select(Image.id, Image.file_name, Image.width, Image.height, Image.split)
            .where(Image.dataset_id == dataset.id).order_by(Image.id)
        ).all(),
        columns=["id", "file_name", "width", "height", "split"],
    )
    images["split"] = images["split"].fillna(NO_SPLIT).astype(str)
    categories = pd.DataFrame(
        conn.execute(
            select(Category.id, Category.source_id, Category.name, Category.supercategory)
            .where(Category.dataset_id == dataset.id).order_by(Category.source_id)
        ).all(),
        columns=["id", "source_id", "name", "supercategory"],
    )
    attributes = pd.DataFrame(
        conn.execute(
            select(Attribute.id, Attribute.source_id, Attribute.name, Attribute.supercategory)
            .where(Attribute.dataset_id == dataset.id).order_by(Attribute.source_id)
        ).all(),
        columns=["id", "source_id", "name", "supercategory"],
    )
    # Tuples straight from the driver into numpy: SQLAlchemy's Row objects cost ~20x more on
    # 331k rows, and the covering index answers without touching the run-length text.
    ann = _int_rows(conn, select(Annotation.id, Annotation.image_id, Annotation.category_id,
                                 Annotation.area).where(Annotation.dataset_id == dataset.id), 4)
    aa = _int_rows(conn, select(AnnotationAttribute.annotation_id, AnnotationAttribute.attribute_id)
                   .join(Attribute, Attribute.id == AnnotationAttribute.attribute_id)
                   .where(Attribute.dataset_id == dataset.id), 2)
    image_ids = images["id"].to_numpy(np.int64)
    cat_ids = categories["id"].to_numpy(np.int64)
    att_ids = attributes["id"].to_numpy(np.int64)
    cat_order = np.argsort(cat_ids)
    att_order = np.argsort(att_ids)
    order = np.argsort(ann[:, 0])
    ann = ann[order]
    ann_img = np.searchsorted(image_ids, ann[:, 1]).astype(np.int32)
    ann_cat = cat_order[np.searchsorted(cat_ids[cat_order], ann[:, 2])].astype(np.int16)
    where = np.searchsorted(ann[:, 0], aa[:, 0])
    annotations = pd.DataFrame({"img": ann_img, "cat": ann_cat, "area": ann[:, 3]})
    annotation_attributes = pd.DataFrame({
        "img": ann_img[where],
        "cat": ann_cat[where],
        "att": att_order[np.searchsorted(att_ids[att_order], aa[:, 1])].astype(np.int16),
    })
    return EdaFrames(dataset.name, dataset.id, fingerprint, images, annotations,
                     annotation_attributes, categories, attributes)


_FRAME_PARTS = ("images", "annotations", "annotation_attributes", "categories", "attributes")


def _cache_folder(cache_dir: Path, dataset_id: int, fingerprint: str) -> Path:
    digest = hashlib.sha1(fingerprint.encode()).hexdigest()[:16]
    return cache_dir / "eda" / f"dataset-{dataset_id}-{digest}"


def _load_cached(folder: Path, dataset: Dataset, fingerprint: str) -> EdaFrames | None:
    try:
        if json.loads((folder / "meta.json").read_text())["fingerprint"] != fingerprint:
            return None
        parts = {p: pd.read_parquet(folder / f"{p}.parquet") for p in _FRAME_PARTS}
        derived = {}
        for path in sorted(folder.glob("derived-*.npy")):
            name, _, index = path.stem.removeprefix("derived-").rpartition("-")
            derived.setdefault(name, []).append((int(index), np.load(path, allow_pickle=False)))
    except (OSError, ValueError, KeyError):
        return None  # no cache yet, or a broken one: read from the store instead
    frames = EdaFrames(dataset.name, dataset.id, fingerprint, **parts)
    frames._derived.update({k: tuple(a for _, a in sorted(v)) for k, v in derived.items()})
    return frames


def _save_cached(folder: Path, frames: EdaFrames) -> None:
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for part in _FRAME_PARTS:
        getattr(frames, part).to_parquet(tmp / f"{part}.parquet", index=False)
    # The sort orders and distinct pairs every aggregate starts from are saved too, so that a
    # new process's first page is as quick as a filter change.
    compute_eda(frames)
    for name, arrays in frames._derived.items():
        for i, array in enumerate(arrays):
            np.save(tmp / f"derived-{name}-{i}.npy", np.asarray(array), allow_pickle=False)
    (tmp / "meta.json").write_text(json.dumps({"fingerprint": frames.fingerprint,
                                               "dataset": frames.dataset}))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process cached the same version first; theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)


def load_frames(
    session: Session, name: str, cache_dir: Path | None = None, fingerprint: str | None = None,
    with_facets: bool = True,
) -> EdaFrames:
    """The compact frames of dataset ``name``, from the disk cache when it is current."""
    dataset = get_dataset(session, name)
    fingerprint = fingerprint or dataset_fingerprint(session, dataset.id)
    frames = None
    folder = None
    if cache_dir is not None:
        folder = _cache_folder(Path(cache_dir), dataset.id, fingerprint)
        frames = _load_cached(folder, dataset, fingerprint)
    if frames is None:
        frames = _read_frames(session, dataset, fingerprint)
        if folder is not None:
            _save_cached(folder, frames)
    if with_facets:
        attach_facets(session, frames)
    return frames


def attach_facets(session: Session, frames: EdaFrames,
                  facets: Iterable[ImageFacet] | None = None) -> EdaFrames:
    """Load the image facets (statuses change often, so they are never disk-cached)."""
    ids = frames.images["id"]
    for facet in image_facets() if facets is None else facets:
        values = facet.load(session, frames.dataset_id)
        series = pd.Series(values).reindex(ids.to_numpy())
        series = series.fillna(facet.missing) if not facet.numeric else series.astype(float)
        frames.facets[facet.name] = series.reset_index(drop=True)
        frames.facet_info[facet.name] = facet
    return frames


# ---------------------------------------------------------------------------------------------
# Filters and drill-downs


@dataclass(frozen=True)
class EdaFilter:
    """Which images the statistics describe; empty fields do not filter.

    ``facets`` holds ``(facet name, allowed values)`` pairs, e.g.
    ``(("people", ("flagged",)), ("caption", ("missing", "draft")))``.
    """

    categories: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    min_width: int | None = None
    max_width: int | None = None
    min_height: int | None = None
    max_height: int | None = None
    facets: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def with_facet(self, name: str, values: Sequence[Any]) -> EdaFilter:
        """A copy that also keeps only images whose facet ``name`` is one of ``values``."""
        others = tuple((n, v) for n, v in self.facets if n != name)
        return replace(self, facets=others + ((name, tuple(values)),) if values else others)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI prints it beside the aggregates)."""
        data = asdict(self)
        data["facets"] = {n: list(v) for n, v in self.facets}
        return data


class FilterError(ValueError):
    """A filter that names a category, attribute or facet the dataset does not have."""


def _positions(table: pd.DataFrame, names: Iterable[str], what: str, dataset: str) -> np.ndarray:
    lookup = {n: i for i, n in enumerate(table["name"])}
    unknown = [n for n in names if n not in lookup]
    if unknown:
        raise FilterError(f"dataset {dataset!r} has no {what} {', '.join(map(repr, unknown))}; "
                          f"see `python -m workbench stats --dataset {dataset}` for its names")
    return np.array([lookup[n] for n in names], dtype=np.int64)


def image_mask(frames: EdaFrames, flt: EdaFilter) -> np.ndarray:
    """Boolean array over ``frames.images``: the images the filter keeps."""
    n = len(frames.images)
    keep = np.ones(n, dtype=bool)
    if flt.categories:
        cats = _positions(frames.categories, flt.categories, "category", frames.dataset)
        ann = frames.annotations
        hit = np.zeros(n, dtype=bool)
        hit[ann["img"].to_numpy()[np.isin(ann["cat"].to_numpy(), cats)]] = True
        keep &= hit
    if flt.attributes:
        atts = _positions(frames.attributes, flt.attributes, "attribute", frames.dataset)
        aa = frames.annotation_attributes
        hit = np.zeros(n, dtype=bool)
        hit[aa["img"].to_numpy()[np.isin(aa["att"].to_numpy(), atts)]] = True
        keep &= hit
    width = frames.images["width"].to_numpy()
    height = frames.images["height"].to_numpy()
    for bound, values, above in ((flt.min_width, width, True), (flt.max_width, width, False),
                                 (flt.min_height, height, True), (flt.max_height, height, False)):
        if bound is not None:
            keep &= values >= bound if above else values <= bound
    for name, allowed in flt.facets:
        if name not in frames.facets:
            known = ", ".join(frames.facets) or "none in this version"
            raise FilterError(f"no image facet {name!r} (facets: {known})")
        keep &= frames.facets[name].isin(list(allowed)).to_numpy()
    return keep


@dataclass(frozen=True)
class Drill:
    """A chart element a curator clicked: the images behind it (fields combine with AND).

    ``category`` and ``attribute`` together mean one mask of that category carrying that
    attribute (a heatmap cell); alone, any mask of the category / with the attribute.
    """

    category: str | None = None
    attribute: str | None = None
    masks: int | None = None
    split: str | None = None
    facet: str | None = None
    facet_value: Any = None
    image_ids: tuple[int, ...] | None = None  # points selected on the dataset map

    def describe(self) -> str:
        """Words for the gallery's heading."""
        if self.image_ids is not None:
            return f"{len(self.image_ids)} images selected on the map"
        parts = []
        if self.category and self.attribute:
            parts.append(f"a {self.category} mask with attribute {self.attribute}")
        elif self.category:
            parts.append(f"a {self.category} mask")
        elif self.attribute:
            parts.append(f"a mask with attribute {self.attribute}")
        if self.masks is not None:
            parts.append(f"exactly {self.masks} masks")
        if self.split is not None:
            parts.append(f"split {self.split}")
        if self.facet is not None:
            parts.append(f"{self.facet} = {self.facet_value}")
        return "images with " + " and ".join(parts) if parts else "all images"


def drill_images(frames: EdaFrames, flt: EdaFilter, drill: Drill) -> pd.DataFrame:
    """The filtered images behind a clicked chart element, sorted by file name."""
    keep = image_mask(frames, flt)
    n = len(frames.images)
    ann = frames.annotations
    if drill.category is not None and drill.attribute is not None:
        cat = _positions(frames.categories, [drill.category], "category", frames.dataset)[0]
        att = _positions(frames.attributes, [drill.attribute], "attribute", frames.dataset)[0]
        aa = frames.annotation_attributes
        hit = np.zeros(n, dtype=bool)
        hit[aa["img"].to_numpy()[(aa["cat"].to_numpy() == cat) & (aa["att"].to_numpy() == att)]] = True
        keep &= hit
    elif drill.category is not None or drill.attribute is not None:
        keep &= image_mask(frames, EdaFilter(
            categories=(drill.category,) if drill.category is not None else (),
            attributes=(drill.attribute,) if drill.attribute is not None else (),
        ))
    if drill.masks is not None:
        keep &= np.bincount(ann["img"].to_numpy(), minlength=n) == drill.masks
    if drill.split is not None:
        keep &= (frames.images["split"] == drill.split).to_numpy()
    if drill.facet is not None:
        if drill.facet not in frames.facets:
            raise FilterError(f"no image facet {drill.facet!r}")
        keep &= (frames.facets[drill.facet] == drill.facet_value).to_numpy()
    if drill.image_ids is not None:
        keep &= frames.images["id"].isin(drill.image_ids).to_numpy()
    shown = frames.images.loc[keep, ["id", "file_name", "width", "height", "split"]]
    return shown.sort_values("file_name", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Aggregates


@dataclass
class EdaResult:
    """Every aggregate behind the EDA charts, for the filtered images."""

    dataset: str
    filter: EdaFilter
    images: int
    masks: int
    images_with_masks: int
    total_images: int
    categories: pd.DataFrame
    supercategories: pd.DataFrame
    attributes: pd.DataFrame
    attribute_supercategories: pd.DataFrame
    cooccurrence: pd.DataFrame
    masks_per_image: pd.DataFrame
    image_sizes: pd.DataFrame
    aspect_ratios: pd.DataFrame
    area_fraction: pd.DataFrame
    splits: pd.DataFrame
    facets: dict[str, pd.DataFrame] = field(default_factory=dict)

    TABLES = ("categories", "supercategories", "attributes", "attribute_supercategories",
              "cooccurrence", "masks_per_image", "image_sizes", "aspect_ratios",
              "area_fraction", "splits")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready aggregates (tables as lists of records)."""
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "filter": self.filter.to_dict(),
            "images": self.images,
            "total_images": self.total_images,
            "masks": self.masks,
            "images_with_masks": self.images_with_masks,
        }
        for name in self.TABLES:
            out[name] = _records(getattr(self, name))
        out["facets"] = {k: _records(v) for k, v in self.facets.items()}
        return out


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records"))


def _distinct_pairs(img: np.ndarray, other: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    key = np.unique(img.astype(np.int64) * width + other.astype(np.int64))
    return (key // width).astype(np.int32), (key % width).astype(np.int32)


SIZE_BINS = 24
ASPECT_STEP = 0.05


def compute_eda(frames: EdaFrames, flt: EdaFilter = EdaFilter()) -> EdaResult:
    """The aggregates of the images ``flt`` keeps (masks are never decoded)."""
    keep = image_mask(frames, flt)
    n_img = len(frames.images)
    n_cat, n_att = len(frames.categories), len(frames.attributes)
    ann, aa = frames.annotations, frames.annotation_attributes
    a_img, a_cat = ann["img"].to_numpy(), ann["cat"].to_numpy().astype(np.int64)
    a_keep = keep[a_img]

    # categories: masks, and images (distinct image-category pairs, built once)
    pair_img, pair_cat = frames.derived("image_category",
                                        lambda: _distinct_pairs(a_img, a_cat, max(n_cat, 1)))
    cat_masks = np.bincount(a_cat[a_keep], minlength=n_cat)
    cat_images = np.bincount(pair_cat[keep[pair_img]], minlength=n_cat)
    kept_images = int(keep.sum())
    categories = frames.categories[["name", "supercategory"]].rename(columns={"name": "category"})
    categories = categories.assign(masks=cat_masks[:n_cat], images=cat_images[:n_cat])
    categories["share_of_images"] = categories["images"] / kept_images if kept_images else 0.0
    supercategories = (categories.groupby("supercategory", as_index=False)[["masks"]].sum()
                       .sort_values("masks", ascending=False, kind="stable"))

    # attributes and the category x attribute co-occurrence (masks carrying both)
    t_img, t_cat = aa["img"].to_numpy(), aa["cat"].to_numpy().astype(np.int64)
    t_att = aa["att"].to_numpy().astype(np.int64)
    t_keep = keep[t_img]
    p_img, p_att = frames.derived("image_attribute",
                                  lambda: _distinct_pairs(t_img, t_att, max(n_att, 1)))
    attributes = frames.attributes[["name", "supercategory"]].rename(columns={"name": "attribute"})
    attributes = attributes.assign(masks=np.bincount(t_att[t_keep], minlength=n_att)[:n_att],
                                   images=np.bincount(p_att[keep[p_img]], minlength=n_att)[:n_att])
    attribute_supercategories = (attributes.groupby("supercategory", as_index=False)[["masks"]]
                                 .sum().sort_values("masks", ascending=False, kind="stable"))
    co = np.bincount(t_cat[t_keep] * max(n_att, 1) + t_att[t_keep],
                     minlength=n_cat * max(n_att, 1))
    nz = np.flatnonzero(co)
    cooccurrence = pd.DataFrame({
        "category": frames.categories["name"].to_numpy()[nz // max(n_att, 1)],
        "attribute": frames.attributes["name"].to_numpy()[nz % max(n_att, 1)] if n_att else [],
        "masks": co[nz],
    })

    # masks per image
    per_image = np.bincount(a_img[a_keep], minlength=n_img)[keep]
    counts = np.bincount(per_image) if per_image.size else np.zeros(1, dtype=np.int64)
    masks_per_image = pd.DataFrame({"masks": np.arange(len(counts)), "images": counts})
    masks_per_image = masks_per_image[masks_per_image["images"] > 0].reset_index(drop=True)

    # sizes (bins fixed by the whole dataset, so that axes do not jump with a filter)
    width = frames.images["width"].to_numpy()
    height = frames.images["height"].to_numpy()
    w_edges, h_edges = frames.derived("size_edges", lambda: (_edges(width), _edges(height)))
    hist, _, _ = np.histogram2d(width[keep], height[keep], bins=[w_edges, h_edges])
    wi, hi = np.nonzero(hist)
    image_sizes = pd.DataFrame({
        "width_from": w_edges[wi].astype(int), "width_to": w_edges[wi + 1].astype(int),
        "height_from": h_edges[hi].astype(int), "height_to": h_edges[hi + 1].astype(int),
        "images": hist[wi, hi].astype(int),
    })
    aspect = width[keep] / np.maximum(height[keep], 1)
    bins = np.floor(aspect / ASPECT_STEP).astype(int)
    uniq, n = np.unique(bins, return_counts=True)
    aspect_ratios = pd.DataFrame({"aspect_from": np.round(uniq * ASPECT_STEP, 4),
                                  "aspect_to": np.round((uniq + 1) * ASPECT_STEP, 4),
                                  "images": n})

    area_fraction = _area_fraction(frames, keep)
    split_counts = frames.images.loc[keep, "split"].value_counts()
    splits = pd.DataFrame({"split": split_counts.index.astype(str),
                           "images": split_counts.to_numpy()})
    facets: dict[str, pd.DataFrame] = {}
    for name, series in frames.facets.items():
        info = frames.facet_info.get(name)
        kept = series[keep]
        if info is not None and info.numeric:
            counts_ = kept.dropna().round().astype(int).value_counts().sort_index()
            facets[name] = pd.DataFrame({"value": counts_.index, "images": counts_.to_numpy()})
        else:
            counts_ = kept.astype(str).value_counts()
            facets[name] = pd.DataFrame({"value": counts_.index, "images": counts_.to_numpy()})

    return EdaResult(
        dataset=frames.dataset, filter=flt, images=kept_images, masks=int(a_keep.sum()),
        images_with_masks=int((per_image > 0).sum()), total_images=n_img,
        categories=categories.reset_index(drop=True), supercategories=supercategories.reset_index(drop=True),
        attributes=attributes.reset_index(drop=True),
        attribute_supercategories=attribute_supercategories.reset_index(drop=True),
        cooccurrence=cooccurrence, masks_per_image=masks_per_image, image_sizes=image_sizes,
        aspect_ratios=aspect_ratios, area_fraction=area_fraction, splits=splits, facets=facets,
    )


def _edges(values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return np.array([0.0, 1.0])
    lo, hi = float(values.min()), float(values.max())
    step = max(1.0, math.ceil((hi - lo + 1) / SIZE_BINS))
    # Round steps to a readable size (10, 20, 50, 100 ... px).
    magnitude = 10 ** math.floor(math.log10(step))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= step)
    start = math.floor(lo / step) * step
    return np.arange(start, hi + step + 1, step, dtype=float)


QUANTILES = (("p05", 0.05), ("q1", 0.25), ("median", 0.5), ("q3", 0.75), ("p95", 0.95))


def _area_fraction(frames: EdaFrames, keep: np.ndarray) -> pd.DataFrame:
    """Quantiles of mask area / image area per category, from one sort made once."""
    ann = frames.annotations
    n_cat = len(frames.categories)

    def build() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        img = ann["img"].to_numpy()
        pixels = (frames.images["width"].to_numpy(np.float64)
                  * frames.images["height"].to_numpy(np.float64))
        frac = ann["area"].to_numpy(np.float64) / np.maximum(pixels[img], 1.0)
        cat = ann["cat"].to_numpy().astype(np.int64)
        order = np.lexsort((frac, cat))
        return cat[order], frac[order], img[order]

    cat_s, frac_s, img_s = frames.derived("area_sorted", build)
    kept = keep[img_s]
    cat_k, frac_k = cat_s[kept], frac_s[kept]
    bounds = np.searchsorted(cat_k, np.arange(n_cat + 1))
    rows = []
    for c in range(n_cat):
        values = frac_k[bounds[c]:bounds[c + 1]]
        if values.size == 0:
            continue
        row = {"category": frames.categories["name"].iat[c],
               "supercategory": frames.categories["supercategory"].iat[c],
               "masks": int(values.size), "mean": float(values.mean())}
        positions = np.array([q for _, q in QUANTILES]) * (values.size - 1)
        lo = np.floor(positions).astype(int)
        hi = np.ceil(positions).astype(int)
        interp = values[lo] + (values[hi] - values[lo]) * (positions - lo)
        row.update({name: float(v) for (name, _), v in zip(QUANTILES, interp)})
        rows.append(row)
    columns = ["category", "supercategory", "masks", "mean", *[n for n, _ in QUANTILES]]
    return pd.DataFrame(rows, columns=columns)


def dataset_eda(engine: Engine, name: str, flt: EdaFilter = EdaFilter(),
                cache_dir: Path | None = None) -> EdaResult:
    """Load (or reuse the cached) frames of ``name`` and compute its aggregates."""
    with session_scope(engine) as session:
        frames = load_frames(session, name, cache_dir=cache_dir)
    return compute_eda(frames, flt)


def filter_choices(frames: EdaFrames) -> dict[str, Any]:
    """What the filter widgets offer: names in use, size bounds, facet values."""
    used_cats = np.unique(frames.annotations["cat"].to_numpy())
    used_atts = np.unique(frames.annotation_attributes["att"].to_numpy())
    width = frames.images["width"]
    height = frames.images["height"]
    return {
        "categories": frames.categories["name"].to_numpy()[used_cats].tolist(),
        "attributes": frames.attributes["name"].to_numpy()[used_atts].tolist(),
        "width": (int(width.min()), int(width.max())) if len(width) else (0, 0),
        "height": (int(height.min()), int(height.max())) if len(height) else (0, 0),
        "facets": {n: sorted(map(str, s.dropna().unique()))
                   for n, s in frames.facets.items()
                   if not frames.facet_info[n].numeric},
    }

