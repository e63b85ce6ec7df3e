"""The demo dataset: generated photos of dressed people in the iMaterialist Fashion 2019 format.

Every image shows one to three people-like figures (frontal, varied size, pose, skin, hair and
outfit) on a simple background. Each labelled person's garments, garment parts and
accessories become ``train.csv`` rows whose masks are the pixels drawn for them; garment parts
(sleeves, neckline, collar, lapel, pocket, zipper) overlap their garment, as in the real data.
About one image in six has one person who is drawn and dressed but given no masks at all, and
``truth.json`` records where every person stands and whether they are labelled, so that the
people-flagging work can be measured:

    {"seed": 0, "images": {"demo_0000.jpg": {"width": 452, "height": 648,
        "unlabelled_person": false,
        "people": [{"box": [x, y, w, h], "labelled": true, "face": [x, y, w, h]}, ...]}}}

From :data:`DUPLICATE_FROM` images on, the last image with every person labelled is a byte-identical
copy of the first such image (same rows, ``truth`` naming it in ``duplicate_of``), so that the
duplicate finder has a planted duplicate to find.

Boxes are in pixels, clipped to the image: ``box`` holds the whole drawn person (also where
someone in front hides them), ``face`` the head from crown to chin. Everything is a pure
function of the seed: the same seed gives byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from workbench.progress import ProgressFn, StopFn, check_stop, report
from workbench.rle import encode_mask, runs_to_text
from workbench.taxonomy import BUNDLED_IMAT2019_LABELS, Taxonomy, imat2019_taxonomy, short_name

CSV_HEADER = ("ImageId", "EncodedPixels", "Height", "Width", "ClassId")
JPEG_QUALITY = 90
# A mask smaller than this (a sleeve hidden under a coat sleeve, say) is not worth a row.
MIN_MASK_PIXELS = 12
# Demos of at least this many images plant one exact duplicate (smaller ones are all distinct).
DUPLICATE_FROM = 24


@dataclass(frozen=True)
class DemoFiles:
    """Where a generated demo dataset was written."""

    root: Path
    images_dir: Path
    csv: Path
    labels: Path
    truth: Path


def generate_demo(
    out_dir: Path,
    n_images: int = 64,
    seed: int = 0,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> DemoFiles:
    """Write a demo dataset (images, train.csv, label_descriptions.json, truth.json) to ``out_dir``.

    ``should_stop`` is checked between images (:class:`~workbench.progress.Cancelled`).
    """
    if n_images < 1:
        raise ValueError(f"n_images must be at least 1 (got {n_images})")
    if seed < 0:
        raise ValueError(f"seed must be 0 or more (got {seed})")
    root = Path(out_dir)
    files = DemoFiles(
        root=root,
        images_dir=root / "images",
        csv=root / "train.csv",
        labels=root / "label_descriptions.json",
        truth=root / "truth.json",
    )
    files.images_dir.mkdir(parents=True, exist_ok=True)
    vocab = _Vocab(imat2019_taxonomy())

    # Exactly round(n/6) images get an unlabelled person, chosen by the seed; such an image
    # needs a labelled person as well, or it would have no rows and never reach an importer.
    plan_rng = np.random.default_rng([seed, 0])
    n_unlabelled = max(1, round(n_images / 6)) if n_images >= 3 else 0
    unlabelled = set(plan_rng.choice(n_images, size=n_unlabelled, replace=False).tolist())

    names = [f"demo_{i:04d}.jpg" for i in range(n_images)]
    labelled = [i for i in range(n_images) if i not in unlabelled]
    copy_of = {labelled[-1]: labelled[0]} if n_images >= DUPLICATE_FROM else {}
    rows: list[tuple[str, str, int, int, str]] = []
    truth: dict[str, dict] = {}
    report(progress, 0, n_images)
    for i, name in enumerate(names):
        check_stop(should_stop)
        if i in copy_of:
            source = names[copy_of[i]]
            shutil.copyfile(files.images_dir / source, files.images_dir / name)
            rows += [(name, *row[1:]) for row in rows if row[0] == source]
            truth[name] = {**truth[source], "duplicate_of": source}
            report(progress, i + 1, n_images)
            continue
        scene = _render_scene(np.random.default_rng([seed, 1, i]), i in unlabelled, vocab)
        scene.photo.save(files.images_dir / name, "JPEG", quality=JPEG_QUALITY)
        for encoded, class_id in scene.rows:
            rows.append((name, encoded, scene.height, scene.width, class_id))
        truth[name] = scene.truth
        report(progress, i + 1, n_images)

    for stale in files.images_dir.glob("demo_*.jpg"):
        if stale.name not in truth:
            stale.unlink()
    _write_csv(files.csv, rows)
    shutil.copyfile(BUNDLED_IMAT2019_LABELS, files.labels)
    _write_text(
        files.truth,
        json.dumps(
            {
                "generator": "workbench.demo",
                "seed": seed,
                "box_format": "x, y, w, h in pixels; the whole drawn person, clipped to the image",
                "images": truth,
            },
            indent=1,
        )
        + "\n",
    )
    return files


def _write_text(path: Path, text: str) -> None:
    # Written beside and renamed, so a reader never sees half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    tmp.replace(path)


def _write_csv(path: Path, rows: list[tuple[str, str, int, int, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(rows)
    _write_text(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# Names -> ids in the real taxonomy


class _Vocab:
    """Category ids by short name and attribute ids by full name, from the real label file."""

    def __init__(self, taxonomy: Taxonomy) -> None:
        self.categories = {short_name(c.name): c.id for c in taxonomy.categories}
        self.attributes = {a.name: a.id for a in taxonomy.attributes}

    def class_id(self, category: str, attributes: tuple[str, ...]) -> str:
        """The ``ClassId`` text: category id, then its attribute ids in ascending order."""
        try:
            ids = sorted({self.attributes[a] for a in attributes})
            return "_".join(map(str, [self.categories[category], *ids]))
        except KeyError as exc:
            raise KeyError(f"demo generator uses {exc} which the 2019 label file lacks") from exc


# ---------------------------------------------------------------------------------------------
# Drawing a figure. Shapes are given in head units (the height of the head) from the top of
# the head, x to the right, y down; the pen scales them to the figure's pixels.

Point = tuple[float, float]
Colour = tuple[int, int, int]
# A fill colours pixels given their (y, x) in head units, so patterns scale with the person.
Fill = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _ellipse_points(cx: float, cy: float, rx: float, ry: float, n: int = 28) -> list[Point]:
    steps = (2 * math.pi * k / n for k in range(n))
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in steps]


def _capsule_points(p0: Point, p1: Point, r0: float, r1: float, n: int = 8) -> list[Point]:
    """A limb segment: a tapered bar with round ends."""
    (x0, y0), (x1, y1) = p0, p1
    a = math.atan2(y1 - y0, x1 - x0)
    end = [a - math.pi / 2 + math.pi * k / n for k in range(n + 1)]
    start = [a + math.pi / 2 + math.pi * k / n for k in range(n + 1)]
    return [(x1 + r1 * math.cos(t), y1 + r1 * math.sin(t)) for t in end] + [
        (x0 + r0 * math.cos(t), y0 + r0 * math.sin(t)) for t in start
    ]


def _rect(cx: float, cy: float, half_w: float, half_h: float) -> list[Point]:
    return [(cx - half_w, cy - half_h), (cx + half_w, cy - half_h), (cx + half_w, cy + half_h),
            (cx - half_w, cy + half_h)]


def _lerp(p: Point, q: Point, t: float) -> Point:
    return (p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t)


def _mirror(points: list[Point]) -> list[Point]:
    """A right-hand outline (top to bottom) closed with its mirror image into a polygon."""
    return points + [(-x, y) for x, y in reversed(points)]


@dataclass
class _Item:
    category: str | None  # short category name; None for skin, hair and face
    attributes: tuple[str, ...] = ()
    parent: int | None = None  # a garment part's pixels also count for its garment


class _Pen:
    """Collects shapes given in head units into one mask of the figure canvas."""

    def __init__(self, fig: _Figure) -> None:
        self._img = Image.new("L", (fig.width, fig.height))
        self._draw = ImageDraw.Draw(self._img)
        self._u = fig.u
        self._ox, self._oy = fig.origin

    def _xy(self, pts: list[Point]) -> list[Point]:
        return [(x * self._u + self._ox, y * self._u + self._oy) for x, y in pts]

    def polygon(self, pts: list[Point]) -> _Pen:
        self._draw.polygon(self._xy(pts), fill=255)
        return self

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> _Pen:
        return self.polygon(_ellipse_points(cx, cy, rx, ry))

    def capsule(self, p0: Point, p1: Point, r0: float, r1: float) -> _Pen:
        return self.polygon(_capsule_points(p0, p1, r0, r1))

    def line(self, pts: list[Point], width: float) -> _Pen:
        px = max(1, round(width * self._u))
        self._draw.line(self._xy(pts), fill=255, width=px, joint="curve")
        return self

    def mask(self) -> np.ndarray:
        return np.asarray(self._img) > 127


class _Figure:
    """One person's canvas: colours, and which item owns each pixel (later paint wins)."""

    def __init__(self, width: int, height: int, origin: Point, u: float) -> None:
        self.width, self.height, self.origin, self.u = width, height, origin, u
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.owner = np.full((height, width), -1, np.int32)
        self.items: list[_Item] = []
        self._yy = (np.arange(height, dtype=np.float32)[:, None] - origin[1]) / u
        self._xx = (np.arange(width, dtype=np.float32)[None, :] - origin[0]) / u

    def item(self, category: str | None = None, attributes: tuple[str, ...] = (),
             parent: int | None = None) -> int:
        self.items.append(_Item(category, tuple(attributes), parent))
        return len(self.items) - 1

    def pen(self) -> _Pen:
        return _Pen(self)

    def region(self, condition: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        """A mask from a condition on ``(y, x)`` in head units."""
        return np.broadcast_to(condition(self._yy, self._xx), (self.height, self.width))

    def paint(self, item: int, mask: np.ndarray, fill: Fill, shade: float = 0.35,
              alpha: float = 1.0) -> None:
        """Colour ``mask`` with ``fill``, darkened by ``shade`` towards its edges, owned by ``item``."""
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return
        cols = np.flatnonzero(mask.any(axis=0))
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        crop = mask[y0:y1, x0:x1]
        ys, xs = np.nonzero(crop)
        ys, xs = ys + y0, xs + x0
        colours = fill(self._yy[ys, 0], self._xx[0, xs]).astype(np.float32)
        if shade:
            # Distance to the shape's edge stands in for a rounded surface lit from the front.
            dist = cv2.distanceTransform(np.pad(crop, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
            reach = max(2.0, min(float(dist.max()), 0.35 * self.u))
            k = np.minimum(dist[ys - y0, xs - x0] / reach, 1.0)
            colours *= (1.0 - shade + shade * np.sqrt(k))[:, None]
        if alpha < 1.0:
            colours = alpha * colours + (1.0 - alpha) * self.rgb[ys, xs]
        self.rgb[ys, xs] = colours
        self.owner[ys, xs] = item


def _plain(colour: Colour) -> Fill:
    c = np.asarray(colour, np.float32)
    return lambda ys, xs: np.broadcast_to(c, (ys.size, 3))


def _scaled(colour: Colour, factor: float) -> Colour:
    r, g, b = (int(min(255, max(0, v * factor))) for v in colour)
    return (r, g, b)


def _stripes(c1: Colour, c2: Colour, period: float, vertical: bool) -> Fill:
    a, b = np.asarray(c1, np.float32), np.asarray(c2, np.float32)

    def fill(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        t = (xs if vertical else ys) / period
        return np.where(((t % 1.0) < 0.5)[:, None], a, b)

    return fill


def _dots(base: Colour, dot: Colour, spacing: float) -> Fill:
    a, b = np.asarray(base, np.float32), np.asarray(dot, np.float32)
    r2 = (0.2 * spacing) ** 2

    def fill(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        row = np.floor(ys / spacing)
        dx = (xs + (row % 2) * spacing / 2) % spacing - spacing / 2
        dy = ys % spacing - spacing / 2
        return np.where((dx * dx + dy * dy < r2)[:, None], b, a)

    return fill


def _check(c1: Colour, c2: Colour, period: float) -> Fill:
    a, b = np.asarray(c1, np.float32), np.asarray(c2, np.float32)

    def fill(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        # Gingham: full colour where the bands cross, half where one band runs, none elsewhere.
        on = ((np.floor(xs / period) % 2) + (np.floor(ys / period) % 2))[:, None] / 2.0
        return a * on + b * (1.0 - on)

    return fill


# ---------------------------------------------------------------------------------------------
# Looks, poses and outfits: everything about a person is decided before anything is drawn

SKIN_TONES: list[Colour] = [
    (250, 218, 190), (238, 192, 160), (224, 172, 134), (200, 140, 100),
    (165, 110, 75), (125, 84, 56), (96, 64, 44),
]
HAIR_COLOURS: list[Colour] = [
    (28, 22, 20), (58, 38, 26), (100, 66, 38), (190, 150, 90), (130, 58, 30), (150, 146, 142),
]
EYE_COLOURS: list[Colour] = [(50, 32, 22), (70, 50, 30), (48, 80, 110), (60, 90, 60)]
GARMENT_COLOURS: dict[str, Colour] = {
    "white": (236, 234, 228), "black": (32, 32, 36), "navy": (30, 40, 80), "grey": (128, 128, 132),
    "red": (178, 34, 40), "burgundy": (110, 26, 40), "pink": (226, 150, 170), "beige": (210, 190, 155),
    "camel": (180, 135, 80), "brown": (100, 64, 40), "olive": (104, 110, 56), "green": (40, 120, 70),
    "teal": (30, 120, 125), "sky": (140, 180, 220), "blue": (40, 80, 170), "mustard": (210, 165, 40),
    "cream": (240, 230, 200), "lilac": (170, 140, 200), "orange": (220, 110, 40),
}
DARK_COLOURS = ["black", "navy", "grey", "beige", "camel", "olive", "brown", "burgundy"]
DENIM: Colour = (60, 85, 130)
SHOE_COLOURS: list[Colour] = [
    (30, 30, 30), (240, 240, 240), (110, 70, 40), (150, 30, 35), (200, 180, 150), (40, 50, 90),
]
BAG_COLOURS: list[Colour] = [(30, 30, 30), (110, 70, 40), (180, 40, 45), (200, 180, 150), (40, 60, 110)]
LEGWEAR_COLOURS: list[Colour] = [(30, 30, 34), (70, 50, 45), (230, 225, 220), (120, 30, 40)]
METAL: Colour = (190, 185, 170)

# Where a hem falls, in head units below the top of the head, for each length attribute.
HEM_BY_LENGTH = {
    "above-the-hip (length)": 3.35, "hip (length)": 3.95, "micro (length)": 4.35,
    "mini (length)": 4.65, "above-the-knee (length)": 5.2, "knee (length)": 5.7,
    "below the knee (length)": 6.1, "midi": 6.45, "maxi (length)": 7.15, "floor (length)": 7.4,
}
SKIRT_LENGTHS = ["mini (length)", "above-the-knee (length)", "knee (length)", "midi", "maxi (length)"]
# The drawn pattern and the attribute that names it in the 2019 taxonomy.
PATTERN_ATTRIBUTE = {"plain": "plain (pattern)", "stripe": "stripe", "dot": "dot", "check": "check"}
# A figure is this many heads tall, soles included.
HEADS_TALL = 7.55


@dataclass
class _Look:
    """The person under the clothes."""

    skin: Colour
    hair: Colour
    eyes: Colour
    hair_style: str  # short, long, bun, bald
    build: float  # width factor around 1
    shoulders: float  # shoulder half-width in head units


@dataclass
class _Pose:
    """Arm angles in degrees from hanging straight down (outwards positive), and leg spread."""

    arms: tuple[tuple[float, float], tuple[float, float]]  # (upper arm, forearm): left, right
    arm_kinds: tuple[str, str]  # down, out, hip, raised
    legs: tuple[float, float]


@dataclass
class _Fabric:
    fill: Fill
    pattern: str  # a key of PATTERN_ATTRIBUTE
    colour: Colour  # the main colour, for trims


@dataclass
class _Garment:
    """One garment as drawn: its category, attributes, fabric and cut."""

    category: str
    attributes: tuple[str, ...]
    fabric: _Fabric
    hem: float = 3.95  # head units
    ease: float = 1.06  # how loose it sits around the body
    flare: float = 0.1  # how much a skirt part widens per head unit below the hip
    sleeves: str = "long"  # none, short, elbow, long
    neck: str = "round"  # round, v, collar
    opening: str = "none"  # none, open, zip, buttons
    parts: frozenset[str] = frozenset()  # neckline, collar, lapel, pocket, zipper
    legs: float = 1.0  # trouser leg width at the ankle, relative to straight


@dataclass
class _Outfit:
    """Everything a person wears."""

    inner: _Garment  # shirt / top / sweater, or a dress / jumpsuit
    lower: _Garment | None  # pants / shorts / skirt; None under a dress or jumpsuit
    outer: _Garment | None  # cardigan / jacket / vest / coat
    shoe_colour: Colour
    shoe_style: str  # sneaker, flat, boot
    legwear: str  # none, tights, socks
    legwear_colour: Colour
    hat: str | None = None  # brim, beanie
    hat_colour: Colour = (0, 0, 0)
    glasses: str | None = None  # clear, sun
    headband: Colour | None = None
    bag: str | None = None  # hand, cross
    bag_colour: Colour = (0, 0, 0)
    belt: Colour | None = None
    buckle: bool = False
    scarf: Fill | None = None
    tie: Fill | None = None
    watch: int | None = None  # on which arm: 0 left, 1 right
    gloves: Colour | None = None


def _pick(rng: np.random.Generator, options: list, p: list[float] | None = None):
    return options[int(rng.choice(len(options), p=p))]


def _maybe(rng: np.random.Generator, chance: float, value: str) -> set[str]:
    return {value} if rng.random() < chance else set()


def _sample_look(rng: np.random.Generator) -> _Look:
    build = float(rng.uniform(0.88, 1.12))
    return _Look(
        skin=_pick(rng, SKIN_TONES),
        hair=_pick(rng, HAIR_COLOURS),
        eyes=_pick(rng, EYE_COLOURS),
        hair_style=_pick(rng, ["short", "long", "bun", "bald"], [0.42, 0.4, 0.13, 0.05]),
        build=build,
        shoulders=float(rng.uniform(0.82, 1.0)) * build,
    )


def _sample_arm(rng: np.random.Generator, allow_raised: bool) -> tuple[str, float, float]:
    weights = [0.45, 0.25, 0.2, 0.1] if allow_raised else [0.5, 0.28, 0.22, 0.0]
    kind = _pick(rng, ["down", "out", "hip", "raised"], weights)
    if kind == "down":
        up = rng.uniform(5, 14)
        return kind, up, up + rng.uniform(-4, 8)
    if kind == "out":
        up = rng.uniform(20, 38)
        return kind, up, up + rng.uniform(5, 30)
    if kind == "hip":  # elbow out, forearm back in: the hand rests on the hip
        return kind, rng.uniform(38, 50), -rng.uniform(28, 45)
    up = rng.uniform(125, 160)
    return kind, up, up + rng.uniform(-25, 15)


def _sample_pose(rng: np.random.Generator) -> _Pose:
    left = _sample_arm(rng, allow_raised=True)
    right = _sample_arm(rng, allow_raised=left[0] != "raised")
    spread = _pick(rng, [(1.0, 3.0), (3.0, 8.0), (8.0, 14.0)], [0.35, 0.45, 0.2])
    return _Pose(
        arms=((left[1], left[2]), (right[1], right[2])),
        arm_kinds=(left[0], right[0]),
        legs=(float(rng.uniform(*spread)), float(rng.uniform(*spread))),
    )


def _sample_fabric(rng: np.random.Generator, patterns: list[str], p: list[float] | None = None,
                   colours: list[str] | None = None) -> _Fabric:
    """A fabric in one of ``patterns``, its main colour from ``colours`` (default: any)."""
    base = GARMENT_COLOURS[_pick(rng, colours or list(GARMENT_COLOURS))]
    other = _pick(rng, [c for c in GARMENT_COLOURS.values() if c != base])
    pattern = _pick(rng, patterns, p)
    if pattern == "stripe":
        fill = _stripes(base, other, rng.uniform(0.16, 0.3), vertical=bool(rng.random() < 0.3))
    elif pattern == "dot":
        fill = _dots(base, other, rng.uniform(0.12, 0.2))
    elif pattern == "check":
        fill = _check(base, other, rng.uniform(0.1, 0.16))
    else:
        fill = _plain(base)
    return _Fabric(fill, pattern, base)


def _fit(rng: np.random.Generator, options: dict[str, float]) -> tuple[str, float]:
    name = _pick(rng, list(options))
    return name, options[name]


def _sample_top(rng: np.random.Generator) -> _Garment:
    category = _pick(rng, ["shirt", "top", "sweater"], [0.35, 0.45, 0.2])
    fit, ease = _fit(rng, {"tight (fit)": 1.0, "regular (fit)": 1.06, "loose (fit)": 1.14})
    length = _pick(rng, ["above-the-hip (length)", "hip (length)"], [0.35, 0.65])
    if category == "shirt":
        fabric = _sample_fabric(rng, ["plain", "stripe", "check", "dot"], [0.5, 0.25, 0.15, 0.1])
        return _Garment(
            category, (fit, length, "single breasted", "symmetrical", PATTERN_ATTRIBUTE[fabric.pattern]),
            fabric, hem=HEM_BY_LENGTH[length], ease=ease,
            sleeves=_pick(rng, ["long", "short", "elbow"], [0.6, 0.3, 0.1]), neck="collar",
            opening="buttons", parts=frozenset({"collar", "neckline"} | _maybe(rng, 0.4, "pocket")),
        )
    if category == "sweater":
        fabric = _sample_fabric(rng, ["plain", "stripe"], [0.7, 0.3])
        fit, ease = _fit(rng, {"regular (fit)": 1.08, "loose (fit)": 1.14, "oversized": 1.22})
        return _Garment(
            category, (fit, "hip (length)", "no opening", "symmetrical", PATTERN_ATTRIBUTE[fabric.pattern]),
            fabric, hem=HEM_BY_LENGTH["hip (length)"], ease=ease, parts=frozenset({"neckline"}),
        )
    fabric = _sample_fabric(rng, ["plain", "stripe", "dot"], [0.6, 0.25, 0.15])
    return _Garment(
        category, (fit, length, "no opening", "symmetrical", PATTERN_ATTRIBUTE[fabric.pattern]),
        fabric, hem=HEM_BY_LENGTH[length], ease=ease,
        sleeves=_pick(rng, ["short", "long", "none"], [0.55, 0.25, 0.2]), neck=_pick(rng, ["round", "v"]),
        parts=frozenset({"neckline"}),
    )


def _sample_lower(rng: np.random.Generator) -> _Garment:
    category = _pick(rng, ["pants", "shorts", "skirt"], [0.5, 0.2, 0.3])
    if category == "pants":
        jeans = rng.random() < 0.5
        fabric = (_Fabric(_plain(DENIM), "plain", DENIM) if jeans
                  else _sample_fabric(rng, ["plain", "check", "stripe"], [0.8, 0.1, 0.1], DARK_COLOURS))
        fit, legs = _fit(rng, {"straight": 1.0, "tight (fit)": 0.82, "wide leg": 1.55, "bootcut": 1.2})
        waist = _pick(rng, ["normal waist", "high waist", "low waist"], [0.6, 0.25, 0.15])
        attributes = (fit, "maxi (length)", "fly (opening)", waist, "symmetrical",
                      PATTERN_ATTRIBUTE[fabric.pattern]) + (("washed",) if jeans else ())
        return _Garment(category, attributes, fabric, hem=7.3, legs=legs, opening="zip",
                        parts=frozenset(_maybe(rng, 0.5, "pocket")))
    if category == "shorts":
        fabric = _sample_fabric(rng, ["plain", "check", "stripe"], [0.75, 0.15, 0.1])
        length = _pick(rng, ["micro (length)", "mini (length)", "above-the-knee (length)"], [0.2, 0.4, 0.4])
        fit, legs = _fit(rng, {"regular (fit)": 1.1, "tight (fit)": 0.95, "loose (fit)": 1.3})
        attributes = (fit, length, "fly (opening)", "normal waist", PATTERN_ATTRIBUTE[fabric.pattern])
        return _Garment(category, attributes, fabric, hem=HEM_BY_LENGTH[length], legs=legs, opening="zip")
    fabric = _sample_fabric(rng, ["plain", "check", "dot", "stripe"], [0.55, 0.15, 0.15, 0.15])
    length = _pick(rng, SKIRT_LENGTHS)
    silhouette, flare = _fit(rng, {"pencil": 0.03, "straight": 0.08, "a-line": 0.2, "flare": 0.3})
    if HEM_BY_LENGTH[length] > 6.0:
        flare = min(flare, 0.2)  # a long circle skirt would swallow the picture
    attributes = (silhouette, length, "normal waist", "no opening", "symmetrical",
                  PATTERN_ATTRIBUTE[fabric.pattern])
    return _Garment("skirt", attributes, fabric, hem=HEM_BY_LENGTH[length], flare=flare)


def _sample_dress(rng: np.random.Generator) -> _Garment:
    fabric = _sample_fabric(rng, ["plain", "dot", "stripe", "check"], [0.5, 0.2, 0.2, 0.1])
    length = _pick(rng, SKIRT_LENGTHS)
    silhouette, flare = _fit(rng, {"a-line": 0.2, "fit and flare": 0.28, "straight": 0.07,
                                   "tight (fit)": 0.03})
    if HEM_BY_LENGTH[length] > 6.0:
        flare = min(flare, 0.18)
    waist = _pick(rng, ["normal waist", "empire waistline", "no waistline"])
    attributes = (silhouette, length, waist, "symmetrical", "no opening", PATTERN_ATTRIBUTE[fabric.pattern])
    return _Garment("dress", attributes, fabric, hem=HEM_BY_LENGTH[length], ease=1.02, flare=flare,
                    sleeves=_pick(rng, ["none", "short", "long"], [0.45, 0.35, 0.2]),
                    neck=_pick(rng, ["round", "v"]), parts=frozenset({"neckline"}))


def _sample_jumpsuit(rng: np.random.Generator) -> _Garment:
    fabric = _sample_fabric(rng, ["plain", "stripe", "dot"], [0.7, 0.15, 0.15])
    fit, legs = _fit(rng, {"regular (fit)": 1.1, "wide leg": 1.5})
    zipped = rng.random() < 0.5
    attributes = (fit, "maxi (length)", "normal waist", "zip-up" if zipped else "no opening",
                  PATTERN_ATTRIBUTE[fabric.pattern])
    return _Garment("jumpsuit", attributes, fabric, hem=7.3, ease=1.05,
                    sleeves=_pick(rng, ["none", "short", "long"]), neck="round" if zipped else "v",
                    opening="zip" if zipped else "none", legs=legs,
                    parts=frozenset({"neckline"} | ({"zipper"} if zipped else set())))


def _sample_outer(rng: np.random.Generator, over: _Garment) -> _Garment:
    """A cardigan, jacket or vest worn over ``over``."""
    options = ["cardigan", "jacket"]
    if over.category in ("shirt", "top") and over.sleeves != "none":
        options.append("vest")
    category = _pick(rng, options)
    if category == "cardigan":
        fabric = _sample_fabric(rng, ["plain", "stripe"], [0.8, 0.2])
        attributes = ("regular (fit)", "hip (length)", "single breasted", PATTERN_ATTRIBUTE[fabric.pattern])
        return _Garment(category, attributes, fabric, hem=max(3.95, over.hem), ease=over.ease + 0.06,
                        neck="v", opening="open", parts=frozenset({"neckline"} | _maybe(rng, 0.3, "pocket")))
    if category == "vest":
        fabric = _sample_fabric(rng, ["plain", "check"], [0.75, 0.25], DARK_COLOURS)
        attributes = ("regular (fit)", "hip (length)", "single breasted", PATTERN_ATTRIBUTE[fabric.pattern])
        return _Garment(category, attributes, fabric, hem=3.8, ease=over.ease + 0.04, sleeves="none",
                        neck="v", opening="buttons", parts=frozenset({"neckline"}))
    fabric = _sample_fabric(rng, ["plain", "check"], [0.85, 0.15], DARK_COLOURS)
    if rng.random() < 0.35:
        attributes = ("regular (fit)", "hip (length)", "zip-up", PATTERN_ATTRIBUTE[fabric.pattern])
        return _Garment(category, attributes, fabric, hem=3.9, ease=over.ease + 0.08, neck="collar",
                        opening="zip", parts=frozenset({"collar", "zipper"} | _maybe(rng, 0.5, "pocket")))
    breasted = _pick(rng, ["single breasted", "double breasted"], [0.75, 0.25])
    attributes = ("regular (fit)", "hip (length)", breasted, PATTERN_ATTRIBUTE[fabric.pattern], "lining")
    return _Garment(category, attributes, fabric, hem=4.0, ease=over.ease + 0.08, neck="collar",
                    opening="open", parts=frozenset({"lapel", "collar"} | _maybe(rng, 0.6, "pocket")))


def _sample_coat(rng: np.random.Generator, over: _Garment) -> _Garment:
    fabric = _sample_fabric(rng, ["plain", "check"], [0.85, 0.15], DARK_COLOURS)
    length = _pick(rng, ["above-the-knee (length)", "knee (length)", "below the knee (length)"])
    breasted = _pick(rng, ["single breasted", "double breasted"], [0.6, 0.4])
    attributes = (breasted, length, "regular (fit)", "straight", PATTERN_ATTRIBUTE[fabric.pattern])
    return _Garment("coat", attributes, fabric, hem=HEM_BY_LENGTH[length], ease=over.ease + 0.12,
                    flare=0.08, neck="collar", opening=_pick(rng, ["open", "buttons"], [0.55, 0.45]),
                    parts=frozenset({"lapel", "collar"} | _maybe(rng, 0.6, "pocket")))


def _sample_outfit(rng: np.random.Generator, pose: _Pose) -> _Outfit:
    style = _pick(rng, ["separates", "dress", "jumpsuit", "coat"], [0.55, 0.22, 0.07, 0.16])
    lower: _Garment | None = None
    outer: _Garment | None = None
    if style == "dress":
        inner = _sample_dress(rng)
        if rng.random() < 0.2:
            outer = _sample_outer(rng, inner)
    elif style == "jumpsuit":
        inner = _sample_jumpsuit(rng)
    else:
        inner = _sample_top(rng)
        lower = _sample_lower(rng)
        if style == "coat":
            outer = _sample_coat(rng, inner)
        elif rng.random() < 0.35:
            outer = _sample_outer(rng, inner)
    bare_legs = (lower is not None and lower.category != "pants") or inner.category == "dress"
    outfit = _Outfit(
        inner=inner, lower=lower, outer=outer,
        shoe_colour=_pick(rng, SHOE_COLOURS),
        shoe_style=_pick(rng, ["sneaker", "flat", "boot"], [0.45, 0.35, 0.2]),
        legwear=_pick(rng, ["none", "tights", "socks"], [0.6, 0.25, 0.15]) if bare_legs else "none",
        legwear_colour=_pick(rng, LEGWEAR_COLOURS),
    )
    if rng.random() < 0.25:
        outfit.hat = _pick(rng, ["brim", "beanie"])
        outfit.hat_colour = _pick(rng, list(GARMENT_COLOURS.values()))
    if rng.random() < 0.25:
        outfit.glasses = _pick(rng, ["clear", "sun"], [0.75, 0.25])
    if outfit.hat is None and rng.random() < 0.12:
        outfit.headband = _pick(rng, list(GARMENT_COLOURS.values()))
    if rng.random() < 0.35:
        outfit.bag = "hand" if "down" in pose.arm_kinds and rng.random() < 0.6 else "cross"
        outfit.bag_colour = _pick(rng, BAG_COLOURS)
    tucked = lower is not None and inner.hem < 3.5
    if (tucked or inner.category in ("dress", "jumpsuit")) and outer is None and rng.random() < 0.5:
        outfit.belt = _pick(rng, [(30, 25, 22), (100, 60, 35), (150, 110, 70)])
        outfit.buckle = bool(rng.random() < 0.6)
    if rng.random() < (0.35 if style == "coat" else 0.08):
        outfit.scarf = _sample_fabric(rng, ["plain", "stripe", "check"]).fill
    if inner.category == "shirt" and outfit.scarf is None and rng.random() < 0.3:
        tie_colours = ["navy", "burgundy", "black", "red", "teal"]
        outfit.tie = _sample_fabric(rng, ["plain", "stripe", "dot"], colours=tie_colours).fill
    if rng.random() < 0.2:
        outfit.watch = int(rng.integers(2))
    if style == "coat" and rng.random() < 0.2:
        outfit.gloves = _pick(rng, [(30, 30, 30), (110, 70, 40), (150, 30, 35)])
    return outfit


# ---------------------------------------------------------------------------------------------
# The skeleton: joint positions in head units (origin the top of the head, y down)

# Half-width of the bare torso at heights down the body: neck, shoulder top and edge, armpit,
# waist, hip, crotch. Widths are multiplied by the shoulder width or the build.
_TORSO = [(1.3, 0.22, None), (1.42, 0.86, "shoulders"), (1.62, 1.0, "shoulders"), (2.1, 0.8, "build"),
          (3.0, 0.6, "build"), (3.8, 0.8, "build"), (4.15, 0.78, "build")]


@dataclass
class _Skeleton:
    look: _Look
    shoulder: list[Point] = field(default_factory=list)  # index 0 = the left of the image
    elbow: list[Point] = field(default_factory=list)
    wrist: list[Point] = field(default_factory=list)
    hand: list[Point] = field(default_factory=list)
    hip: list[Point] = field(default_factory=list)
    knee: list[Point] = field(default_factory=list)
    ankle: list[Point] = field(default_factory=list)

    @property
    def ground(self) -> float:
        return max(a[1] for a in self.ankle) + 0.22

    def body_x(self, y: float) -> float:
        """Half-width of the bare torso at height ``y``."""
        table = [(t, w * {None: 1.0, "shoulders": self.look.shoulders, "build": self.look.build}[k])
                 for t, w, k in _TORSO]
        if y <= table[0][0]:
            return table[0][1]
        for (t0, w0), (t1, w1) in zip(table, table[1:]):
            if y <= t1:
                return w0 + (w1 - w0) * (y - t0) / (t1 - t0)
        return table[-1][1]


def _skeleton(look: _Look, pose: _Pose) -> _Skeleton:
    sk = _Skeleton(look)
    for side, s in enumerate((-1.0, 1.0)):
        up, fore = (math.radians(a) for a in pose.arms[side])
        spread = math.radians(pose.legs[side])
        shoulder = (s * (look.shoulders - 0.14), 1.6)
        elbow = (shoulder[0] + s * 1.4 * math.sin(up), shoulder[1] + 1.4 * math.cos(up))
        wrist = (elbow[0] + s * 1.2 * math.sin(fore), elbow[1] + 1.2 * math.cos(fore))
        hip = (s * 0.38 * look.build, 3.95)
        knee = (hip[0] + s * 1.75 * math.sin(spread), hip[1] + 1.75 * math.cos(spread))
        sk.shoulder.append(shoulder)
        sk.elbow.append(elbow)
        sk.wrist.append(wrist)
        sk.hand.append((wrist[0] + s * 0.5 * math.sin(fore), wrist[1] + 0.5 * math.cos(fore)))
        sk.hip.append(hip)
        sk.knee.append(knee)
        sk.ankle.append((knee[0] + s * 1.6 * math.sin(0.8 * spread), knee[1] + 1.6 * math.cos(0.8 * spread)))
    return sk


def _torso_outline(sk: _Skeleton, top: float, bottom: float, ease: float, flare: float = 0.0) -> list[Point]:
    """Right-hand outline of a garment body from ``top`` to ``bottom``, top first."""
    inner = [t for t, _, _ in _TORSO[:-1] if top < t < bottom]
    pts = [(sk.body_x(t) * ease, t) for t in [top, *inner]]
    if bottom > 3.8:
        hip = sk.body_x(3.8) * ease
        pts += [(hip + flare * (t - 3.8), t) for t in np.linspace(3.8, bottom, 5)[1:]]
    else:
        pts.append((sk.body_x(bottom) * ease, bottom))
    return pts


def _garment_polygon(sk: _Skeleton, top: float, bottom: float, ease: float,
                     flare: float = 0.0) -> list[Point]:
    """A closed body outline from ``top`` to ``bottom``, the hem dipping at the centre."""
    right = _torso_outline(sk, top, bottom, ease, flare)
    return _mirror(right + [(right[-1][0] * 0.5, bottom + 0.04), (0.0, bottom + 0.06)])


# ---------------------------------------------------------------------------------------------
# Body parts


def _draw_hair_back(fig: _Figure, sk: _Skeleton, hair: int) -> None:
    if sk.look.hair_style == "long":
        outline = [(0.0, -0.05), (0.38, 0.1), (0.5, 0.6), (0.55, 1.55), (0.45, 1.85)]
        fig.paint(hair, fig.pen().polygon(_mirror(outline)).mask(), _plain(sk.look.hair), shade=0.4)


def _draw_legs(fig: _Figure, sk: _Skeleton, skin: int, outfit: _Outfit) -> None:
    tights = fig.item("tights") if outfit.legwear == "tights" else None  # one mask for both legs
    for side in range(2):
        hip, knee, ankle = sk.hip[side], sk.knee[side], sk.ankle[side]
        shape = fig.pen().capsule(hip, knee, 0.33, 0.21).capsule(knee, ankle, 0.21, 0.12).mask()
        if tights is not None:
            fig.paint(tights, shape, _plain(outfit.legwear_colour), shade=0.45)
        else:
            fig.paint(skin, shape, _plain(sk.look.skin), shade=0.4)
        if outfit.legwear == "socks":
            sock = fig.pen().capsule(_lerp(ankle, knee, 0.3), ankle, 0.15, 0.13).mask()
            fig.paint(fig.item("sock"), sock, _plain(outfit.legwear_colour))


def _draw_shoes(fig: _Figure, sk: _Skeleton, outfit: _Outfit) -> None:
    for side, s in enumerate((-1.0, 1.0)):
        ax, ay = sk.ankle[side]
        shoe = fig.item("shoe")
        pen = fig.pen().ellipse(ax + s * 0.05, ay + 0.1, 0.17, 0.13)
        pen.ellipse(ax + s * 0.14, ay + 0.14, 0.2, 0.09)  # the toe, turned out a little
        if outfit.shoe_style == "boot":
            pen.capsule((ax, ay - 0.8), (ax, ay), 0.17, 0.16)
        shape = pen.mask()
        fig.paint(shoe, shape, _plain(outfit.shoe_colour), shade=0.5)
        if outfit.shoe_style == "sneaker":
            sole = shape & fig.region(lambda y, x, ay=ay: y > ay + 0.17)
            fig.paint(shoe, sole, _plain((235, 235, 230)), shade=0.1)


def _draw_neck_and_torso(fig: _Figure, sk: _Skeleton, skin: int) -> None:
    neck = fig.pen().capsule((0, 0.8), (0, 1.45), 0.19, 0.21).mask()
    fig.paint(skin, neck, _plain(_scaled(sk.look.skin, 0.8)), shade=0.3)
    torso = fig.pen().polygon(_garment_polygon(sk, 1.3, 4.0, 1.0)).mask()
    fig.paint(skin, torso, _plain(sk.look.skin), shade=0.35)


def _draw_arm(fig: _Figure, sk: _Skeleton, side: int, skin: int, gloves: Colour | None) -> None:
    shoulder, elbow, wrist, hand = sk.shoulder[side], sk.elbow[side], sk.wrist[side], sk.hand[side]
    arm = fig.pen().capsule(shoulder, elbow, 0.2, 0.15).capsule(elbow, wrist, 0.15, 0.11).mask()
    fig.paint(skin, arm, _plain(sk.look.skin), shade=0.4)
    palm = fig.pen().capsule(wrist, hand, 0.12, 0.1).mask()
    if gloves is not None:
        fig.paint(fig.item("glove"), palm, _plain(gloves), shade=0.4)
    else:
        fig.paint(skin, palm, _plain(_scaled(sk.look.skin, 0.95)), shade=0.4)


def _draw_head(fig: _Figure, sk: _Skeleton, skin: int, hair: int) -> None:
    """Ears, face and hair, with the light and dark areas a face detector looks for."""
    look = sk.look

    def spot(fill: Fill, cx: float, cy: float, rx: float, ry: float, alpha: float = 1.0) -> None:
        fig.paint(skin, fig.pen().ellipse(cx, cy, rx, ry).mask(), fill, shade=0.0, alpha=alpha)

    def stroke(fill: Fill, pts: list[Point], width: float, alpha: float = 1.0) -> None:
        fig.paint(skin, fig.pen().line(pts, width).mask(), fill, shade=0.0, alpha=alpha)

    for s in (-1.0, 1.0):
        ear = fig.pen().ellipse(s * 0.39, 0.52, 0.07, 0.12).mask()
        fig.paint(skin, ear, _plain(_scaled(look.skin, 0.9)), shade=0.3)
    # An egg: full width at the temples, narrowing to the chin.
    steps = np.linspace(0, 2 * math.pi, 36, endpoint=False)
    face = [(0.4 * math.cos(t) * (1 - 0.2 * max(0.0, math.sin(t))), 0.5 + 0.5 * math.sin(t)) for t in steps]
    fig.paint(skin, fig.pen().polygon(face).mask(), _plain(look.skin), shade=0.15)

    # Lit cheeks and nose bridge, shadowed eye sockets and heavy brows: the eye band reads
    # darker than the cheeks below it, as on a real face.
    light, dark = _plain(_scaled(look.skin, 1.15)), _plain(_scaled(look.skin, 0.55))
    for s in (-1.0, 1.0):
        spot(light, s * 0.17, 0.63, 0.1, 0.07, alpha=0.35)
    stroke(light, [(0, 0.42), (0, 0.62)], 0.07, alpha=0.35)
    r, g, b = (int(0.35 * c + 0.65 * w) for c, w in zip(look.skin, (228, 224, 218)))
    white = _plain((r, g, b))
    for s in (-1.0, 1.0):
        ex = s * 0.15
        spot(dark, ex, 0.46, 0.12, 0.08, alpha=0.85)
        spot(white, ex, 0.47, 0.072, 0.034)
        spot(_plain(look.eyes), ex, 0.47, 0.04, 0.04)
        spot(_plain((10, 10, 10)), ex, 0.47, 0.018, 0.018)
        brow = [(s * 0.06, 0.385), (s * 0.15, 0.355), (s * 0.25, 0.37)]
        stroke(_plain(_scaled(look.hair, 0.7)), brow, 0.04)
    stroke(dark, [(0.03, 0.52), (0.045, 0.66)], 0.03, alpha=0.4)
    for s in (-1.0, 1.0):
        spot(_plain(_scaled(look.skin, 0.5)), s * 0.04, 0.68, 0.018, 0.012)
    lips = (int(look.skin[0] * 0.75 + 30), int(look.skin[1] * 0.5), int(look.skin[2] * 0.5))
    spot(_plain(lips), 0, 0.8, 0.1, 0.03)
    stroke(_plain(_scaled(lips, 0.6)), [(-0.09, 0.8), (0.09, 0.8)], 0.012)

    if look.hair_style != "bald":
        cap = fig.pen().ellipse(0, 0.44, 0.445, 0.49).mask()
        hairline = fig.region(lambda y, x: y < 0.2 + 0.35 * (x / 0.42) ** 2)
        fig.paint(hair, cap & hairline, _plain(look.hair), shade=0.4)
        if look.hair_style == "bun":
            fig.paint(hair, fig.pen().ellipse(0, -0.08, 0.2, 0.16).mask(), _plain(look.hair), shade=0.4)


# ---------------------------------------------------------------------------------------------
# Garments


def _draw_lower(fig: _Figure, sk: _Skeleton, g: _Garment, item: int) -> None:
    """Pants, shorts, a skirt, or the lower half of a jumpsuit."""
    if g.category == "skirt":
        shape = fig.pen().polygon(_mirror(_torso_outline(sk, 3.0, g.hem, 1.05, g.flare))).mask()
        fig.paint(item, shape, g.fabric.fill, shade=0.3)
        return
    right = _torso_outline(sk, 2.6 if g.category == "jumpsuit" else 2.95, 4.2, 1.06)
    pen = fig.pen().polygon(right + [(0.0, 4.3)] + [(-x, y) for x, y in reversed(right)])
    for side in range(2):
        hip, knee, ankle = sk.hip[side], sk.knee[side], sk.ankle[side]
        if g.hem >= 7.0:
            hem = (ankle[0], ankle[1] + 0.05)
            pen.capsule(hip, knee, 0.37, 0.26).capsule(knee, hem, 0.26, 0.2 * g.legs)
        else:
            pen.capsule(hip, _lerp(hip, knee, (g.hem - 3.95) / 1.75), 0.38, 0.32 * g.legs)
    fig.paint(item, pen.mask(), g.fabric.fill, shade=0.35)
    if "pocket" in g.parts:
        for s in (-1.0, 1.0):
            pocket = fig.pen().polygon([(s * 0.42, 3.12), (s * 0.7, 3.12), (s * 0.74, 3.55)]).mask()
            fig.paint(fig.item("pocket", parent=item), pocket, _plain(_scaled(g.fabric.colour, 0.75)),
                      shade=0.1)


def _neck_depth(g: _Garment) -> float:
    return 2.6 if g.category == "cardigan" else 2.05


def _draw_body_garment(fig: _Figure, sk: _Skeleton, g: _Garment, item: int) -> None:
    """The body of an upper garment, dress, coat or jumpsuit top, with its neck and opening."""
    bottom = 3.2 if g.category == "jumpsuit" else g.hem
    if g.category == "vest":
        outline = [(0.22, 1.32), (0.62 * sk.look.shoulders, 1.42), (0.7 * sk.look.build, 2.05)]
        shape = fig.pen().polygon(_mirror(outline + _torso_outline(sk, 2.2, bottom, g.ease))).mask()
    elif g.sleeves == "none":
        # Straps: a sleeveless body cut in at the armholes.
        outline = [(0.2, 1.3), (0.42, 1.32), (0.55 * sk.look.build, 1.85)]
        shape = fig.pen().polygon(_mirror(outline + _torso_outline(sk, 2.1, bottom, g.ease, g.flare))).mask()
    else:
        shape = fig.pen().polygon(_garment_polygon(sk, 1.3, bottom, g.ease, g.flare)).mask()
    # Open fronts and necklines are cut out, so whatever is underneath shows through.
    if g.opening == "open":
        top_gap, hem_gap = (0.05, 0.45) if g.category == "coat" else (0.04, 0.3)
        wedge = [(-top_gap, 1.3), (top_gap, 1.3), (hem_gap, bottom + 0.2), (-hem_gap, bottom + 0.2)]
        shape &= ~fig.pen().polygon(wedge).mask()
    if g.neck == "round":
        shape &= ~fig.pen().ellipse(0, 1.3, 0.26, 0.17).mask()
    elif g.neck == "v":
        shape &= ~fig.pen().polygon([(-0.26, 1.2), (0.26, 1.2), (0, _neck_depth(g))]).mask()
    fig.paint(item, shape, g.fabric.fill, shade=0.3)
    trim = _plain(_scaled(g.fabric.colour, 0.6))
    if g.category == "dress" and "normal waist" in g.attributes:
        fig.paint(item, fig.pen().line([(-0.7, 3.0), (0.7, 3.0)], 0.03).mask() & shape, trim, shade=0.0)
    if g.opening == "buttons":
        columns = (-0.12, 0.12) if "double breasted" in g.attributes else (0.0,)
        for cx in columns:
            for cy in np.linspace(1.7, min(bottom, 4.6) - 0.3, 5):
                fig.paint(item, fig.pen().ellipse(cx, cy, 0.035, 0.035).mask(), trim, shade=0.0)


def _draw_garment_parts(fig: _Figure, g: _Garment, item: int) -> None:
    """Neckline, collar, lapels, pockets and zipper: each its own mask over the garment."""
    trim = _plain(_scaled(g.fabric.colour, 0.65))
    if "neckline" in g.parts:
        if g.neck == "round" and (g.sleeves != "none" or g.category == "sweater"):
            edge = [(0.26 * math.cos(t), 1.3 + 0.17 * math.sin(t)) for t in np.linspace(0, math.pi, 12)]
            width = 0.07
        elif g.neck == "v":
            edge, width = [(-0.26, 1.25), (0, _neck_depth(g)), (0.26, 1.25)], 0.06
        else:
            edge, width = [(-0.2, 1.31), (0, 1.4), (0.2, 1.31)], 0.06
        fig.paint(fig.item("neckline", parent=item), fig.pen().line(edge, width).mask(), trim, shade=0.1)
    if "lapel" in g.parts:
        for s in (-1.0, 1.0):
            lapel = fig.pen().polygon([(s * 0.22, 1.32), (s * 0.5, 1.7), (s * 0.36, 1.85), (s * 0.1, 2.7)])
            fig.paint(fig.item("lapel", parent=item), lapel.mask(), _plain(_scaled(g.fabric.colour, 0.85)),
                      shade=0.2)
    if "collar" in g.parts:
        for s in (-1.0, 1.0):
            corners = [(s * 0.24, 1.2), (s * 0.02, 1.48), (s * 0.36, 1.5)]
            collar = fig.item("collar", parent=item)
            fig.paint(collar, fig.pen().polygon(corners).mask(), g.fabric.fill, shade=0.25)
            fig.paint(collar, fig.pen().line(corners + corners[:1], 0.03).mask(), trim, shade=0.0)
    if "pocket" in g.parts:
        if g.category == "shirt":
            spots = [(0.42, 1.95, 0.16, 0.2)]
        else:
            spots = [(-0.5, 3.45, 0.2, 0.12), (0.5, 3.45, 0.2, 0.12)] if g.hem >= 3.8 else []
        for spot in spots:
            outline = _rect(*spot)
            pocket = fig.item("pocket", parent=item)
            fig.paint(pocket, fig.pen().polygon(outline).mask(), g.fabric.fill, shade=0.15)
            fig.paint(pocket, fig.pen().line(outline[:2], 0.03).mask(), trim, shade=0.0)
    if "zipper" in g.parts:
        bottom = 3.6 if g.category == "jumpsuit" else g.hem
        zipper = fig.pen().line([(0, 1.35), (0, bottom)], 0.05).mask()
        fig.paint(fig.item("zipper", parent=item), zipper, _plain(METAL), shade=0.0)


def _draw_sleeve(fig: _Figure, sk: _Skeleton, g: _Garment, item: int, side: int) -> None:
    if g.sleeves == "none" or g.category == "vest":
        return
    extra = 0.5 * (g.ease - 1.0)
    shoulder, elbow, wrist = sk.shoulder[side], sk.elbow[side], sk.wrist[side]
    r_top, r_elbow, r_wrist = 0.24 + extra, 0.19 + extra, 0.15 + 0.5 * extra
    pen = fig.pen().ellipse(shoulder[0], shoulder[1] - 0.02, r_top, r_top)
    if g.sleeves == "short":
        pen.capsule(shoulder, _lerp(shoulder, elbow, 0.55), r_top, r_top * 0.95)
    else:
        cuff = wrist if g.sleeves == "long" else _lerp(elbow, wrist, 0.35)
        pen.capsule(shoulder, elbow, r_top, r_elbow).capsule(elbow, cuff, r_elbow, r_wrist)
    fig.paint(fig.item("sleeve", parent=item), pen.mask(), g.fabric.fill, shade=0.35)


# ---------------------------------------------------------------------------------------------
# Accessories


def _draw_belt(fig: _Figure, sk: _Skeleton, colour: Colour, buckle: bool, y: float) -> None:
    belt = fig.item("belt")
    band = fig.pen().polygon(_rect(0, y, sk.body_x(y) * 1.08, 0.07)).mask()
    fig.paint(belt, band, _plain(colour), shade=0.2)
    if buckle:
        fig.paint(fig.item("buckle", parent=belt), fig.pen().polygon(_rect(0, y, 0.1, 0.1)).mask(),
                  _plain(METAL), shade=0.3)


def _draw_tie(fig: _Figure, fill: Fill) -> None:
    pen = fig.pen().polygon([(-0.07, 1.36), (0.07, 1.36), (0.05, 1.52), (-0.05, 1.52)])
    pen.polygon([(-0.05, 1.52), (0.05, 1.52), (0.12, 2.8), (0, 2.98), (-0.12, 2.8)])
    fig.paint(fig.item("tie"), pen.mask(), fill, shade=0.25)


def _draw_scarf(fig: _Figure, fill: Fill, side: float) -> None:
    pen = fig.pen().polygon([(-0.34, 1.15), (0.34, 1.15), (0.4, 1.45), (0, 1.62), (-0.4, 1.45)])
    pen.polygon([(side * 0.05, 1.4), (side * 0.35, 1.45), (side * 0.4, 2.9), (side * 0.1, 2.9)])
    fig.paint(fig.item("scarf"), pen.mask(), fill, shade=0.35)


def _draw_watch(fig: _Figure, sk: _Skeleton, side: int) -> None:
    elbow, wrist = sk.elbow[side], sk.wrist[side]
    start, end = _lerp(wrist, elbow, 0.08), _lerp(wrist, elbow, 0.16)
    watch = fig.item("watch")
    fig.paint(watch, fig.pen().capsule(start, end, 0.13, 0.13).mask(), _plain((40, 35, 30)), shade=0.2)
    fig.paint(watch, fig.pen().ellipse(*_lerp(start, end, 0.5), 0.07, 0.07).mask(), _plain(METAL), shade=0.3)


def _draw_glasses(fig: _Figure, kind: str) -> None:
    glasses = fig.item("glasses")
    frame = _plain((25, 25, 25))
    for s in (-1.0, 1.0):
        lens = fig.pen().ellipse(s * 0.15, 0.475, 0.1, 0.075).mask()
        fig.paint(glasses, lens, _plain((20, 25, 30)), shade=0.0, alpha=0.75 if kind == "sun" else 0.12)
        ring = _ellipse_points(s * 0.15, 0.475, 0.1, 0.075, n=20)
        fig.paint(glasses, fig.pen().line(ring + ring[:1], 0.03).mask(), frame, shade=0.0)
    fig.paint(glasses, fig.pen().line([(-0.05, 0.46), (0.05, 0.46)], 0.03).mask(), frame, shade=0.0)


def _draw_hat(fig: _Figure, kind: str, colour: Colour) -> None:
    hat = fig.item("hat")
    if kind == "beanie":
        dome = fig.pen().ellipse(0, 0.22, 0.46, 0.36).mask() & fig.region(lambda y, x: y < 0.26)
        fig.paint(hat, dome, _plain(colour), shade=0.4)
        fig.paint(hat, fig.pen().polygon(_rect(0, 0.21, 0.46, 0.07)).mask(), _plain(_scaled(colour, 0.85)),
                  shade=0.3)
        return
    crown = fig.pen().ellipse(0, 0.02, 0.36, 0.32).mask() & fig.region(lambda y, x: y < 0.2)
    fig.paint(hat, crown, _plain(colour), shade=0.4)
    fig.paint(hat, fig.pen().ellipse(0, 0.18, 0.78, 0.1).mask(), _plain(_scaled(colour, 0.9)), shade=0.3)
    fig.paint(hat, fig.pen().line([(-0.35, 0.08), (0.35, 0.08)], 0.06).mask(), _plain(_scaled(colour, 0.5)),
              shade=0.0)


def _draw_headband(fig: _Figure, colour: Colour) -> None:
    outer = fig.pen().ellipse(0, 0.44, 0.46, 0.5).mask()
    inner = fig.pen().ellipse(0, 0.53, 0.46, 0.5).mask()
    band = outer & ~inner & fig.region(lambda y, x: y < 0.35)
    fig.paint(fig.item("headband"), band, _plain(colour), shade=0.2)


def _draw_bag(fig: _Figure, sk: _Skeleton, kind: str, colour: Colour, pose: _Pose) -> None:
    if kind == "hand":
        hx, hy = sk.hand[pose.arm_kinds.index("down")]
        top, bottom = hy + 0.25, hy + 0.95
        body = [(hx - 0.42, top), (hx + 0.42, top), (hx + 0.5, bottom), (hx - 0.5, bottom)]
        pen = fig.pen().polygon(body).line([(hx - 0.25, top), (hx, hy - 0.05), (hx + 0.25, top)], 0.05)
    else:  # across the body, from one shoulder to the other hip
        s = -1.0 if pose.arm_kinds[1] == "raised" else 1.0
        cx, cy = s * 0.95, 3.75
        strap = [(-s * 0.5, 1.42), (cx - s * 0.1, cy - 0.28)]
        pen = fig.pen().polygon(_rect(cx, cy, 0.38, 0.28)).line(strap, 0.05)
    fig.paint(fig.item("bag"), pen.mask(), _plain(colour), shade=0.35)


# ---------------------------------------------------------------------------------------------
# A whole person


@dataclass
class _Person:
    figure: _Figure
    ground: float  # canvas y of the soles, in pixels
    face: tuple[float, float, float, float]  # x, y, w, h of the face on the canvas, in pixels


def _draw_person(rng: np.random.Generator, height: float) -> _Person:
    """A dressed person about ``height`` pixels tall, drawn on their own canvas."""
    look, pose = _sample_look(rng), _sample_pose(rng)
    sk = _skeleton(look, pose)
    outfit = _sample_outfit(rng, pose)
    u = height / HEADS_TALL
    xs = [p[0] for p in sk.hand + sk.elbow + sk.ankle] + [-2.2, 2.2]
    ys = [p[1] for p in sk.hand + sk.elbow] + [-0.4, sk.ground]
    x0, x1 = (min(xs) - 0.4) * u, (max(xs) + 0.4) * u
    y0, y1 = (min(ys) - 0.4) * u, (max(ys) + 0.4) * u
    fig = _Figure(int(math.ceil(x1 - x0)), int(math.ceil(y1 - y0)), (-x0, -y0), u)
    skin, hair = fig.item(), fig.item()

    # Back to front: what is painted later covers what is under it, in colour and in the masks.
    _draw_hair_back(fig, sk, hair)
    _draw_legs(fig, sk, skin, outfit)
    _draw_shoes(fig, sk, outfit)
    _draw_neck_and_torso(fig, sk, skin)
    inner, lower, outer = outfit.inner, outfit.lower, outfit.outer
    inner_id = fig.item(inner.category, inner.attributes)
    lower_id = fig.item(lower.category, lower.attributes) if lower is not None else -1
    outer_id = fig.item(outer.category, outer.attributes) if outer is not None else -1
    if inner.category == "jumpsuit":
        _draw_lower(fig, sk, inner, inner_id)
    tucked = lower is not None and inner.hem < 3.5 and outer is None
    if lower is not None and not tucked:
        _draw_lower(fig, sk, lower, lower_id)
    _draw_body_garment(fig, sk, inner, inner_id)
    _draw_garment_parts(fig, inner, inner_id)
    if lower is not None and tucked:  # the waistband shows over the top
        _draw_lower(fig, sk, lower, lower_id)
    if outfit.belt is not None:
        _draw_belt(fig, sk, outfit.belt, outfit.buckle, 3.05)
    if outer is not None:
        _draw_body_garment(fig, sk, outer, outer_id)
        _draw_garment_parts(fig, outer, outer_id)
    if outfit.tie is not None:
        _draw_tie(fig, outfit.tie)
    if outfit.scarf is not None:
        _draw_scarf(fig, outfit.scarf, _pick(rng, [-1.0, 1.0]))
    for side in range(2):
        _draw_arm(fig, sk, side, skin, outfit.gloves)
        _draw_sleeve(fig, sk, inner, inner_id, side)
        if outer is not None:
            _draw_sleeve(fig, sk, outer, outer_id, side)
        if outfit.watch == side and outfit.gloves is None:
            _draw_watch(fig, sk, side)
    _draw_head(fig, sk, skin, hair)
    if outfit.glasses:
        _draw_glasses(fig, outfit.glasses)
    if outfit.headband is not None:
        _draw_headband(fig, outfit.headband)
    if outfit.hat:
        _draw_hat(fig, outfit.hat, outfit.hat_colour)
    if outfit.bag:
        _draw_bag(fig, sk, outfit.bag, outfit.bag_colour, pose)
    # Light from the upper left: a gentle fall-off across the figure.
    fig.rgb *= np.linspace(1.06, 0.88, fig.width, dtype=np.float32)[None, :, None]
    ox, oy = fig.origin
    return _Person(fig, oy + sk.ground * u, (ox - 0.42 * u, oy, 0.84 * u, 1.0 * u))


# ---------------------------------------------------------------------------------------------
# Scenes: background, where people stand, compositing, masks, truth


@dataclass
class _Scene:
    photo: Image.Image
    width: int
    height: int
    rows: list[tuple[str, str]]  # (EncodedPixels, ClassId)
    truth: dict


def _sample_size(rng: np.random.Generator) -> tuple[int, int]:
    """Image width and height: mostly portrait, some landscape, in steps of 4 pixels."""
    long_side = int(rng.integers(120, 201)) * 4  # 480..800
    short_side = min(int(rng.integers(90, 161)) * 4, long_side - 40)  # 360..640
    return (long_side, short_side) if rng.random() < 0.25 else (short_side, long_side)


def _background(rng: np.random.Generator, width: int, height: int, horizon: int) -> np.ndarray:
    """A gradient, a mottled backdrop, or a room (plain or textured wall over a floor)."""
    kind = _pick(rng, ["gradient", "room", "texture", "backdrop"])
    yy = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    xx = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    # Muted colours: on a saturated wall every figure would stand out unrealistically well.
    c1 = (rng.uniform(70, 220) + rng.uniform(-30, 30, 3)).clip(30, 240).astype(np.float32)
    c2 = (c1 * rng.uniform(0.55, 0.95) + rng.uniform(-25, 25, 3)).astype(np.float32)
    if kind == "gradient":
        return c1 + (c2 - c1) * np.clip(yy * 0.8 + xx * 0.2 * rng.uniform(-1, 1), 0, 1)
    if kind == "backdrop":
        blobs = cv2.resize(rng.normal(0.0, 1.0, (6, 5)).astype(np.float32), (width, height),
                           interpolation=cv2.INTER_CUBIC)[:, :, None]
        return c1 + 14.0 * blobs - 20.0 * ((xx - 0.5) ** 2 + (yy - 0.45) ** 2)
    img = np.broadcast_to(c1 + (c2 - c1) * yy * 0.3, (height, width, 3)).copy()
    if kind == "texture":
        period = int(rng.integers(14, 40))
        cols, rows = np.arange(width)[None, :], np.arange(height)[:, None]
        if rng.random() < 0.5:  # wallpaper stripes
            pattern = (cols // period) % 2 + 0 * rows
        else:  # bricks: every other course shifted by half a brick, mortar lines between
            pattern = ((cols + (rows // period) % 2 * period) // (2 * period)) % 2 * 0.6 + (rows % period < 2)
        img += pattern.astype(np.float32)[:, :, None] * rng.uniform(8, 20)
    fy = np.linspace(0.0, 1.0, height - horizon, dtype=np.float32)[:, None, None]
    img[horizon:] = c2 * rng.uniform(0.6, 0.9) + fy * 25.0
    if rng.random() < 0.6:  # floor boards, closer together towards the horizon
        gaps = np.unique((horizon + (height - horizon) * np.linspace(0, 1, 12) ** 1.6).astype(int))
        img[np.clip(gaps, 0, height - 1)] *= 0.85
    img[max(0, horizon - 4):horizon] *= 0.7  # skirting board
    return img


def _layout(rng: np.random.Generator, width: int, height: int,
            count: int) -> list[tuple[float, float, float]]:
    """(height, centre x, feet y) for each person, back to front."""
    main = height * rng.uniform(0.55, 0.88)
    kinds = ["main"] + [_pick(rng, ["side", "back"], [0.55, 0.45]) for _ in range(count - 1)]
    slot = width / count
    order = rng.permutation(count)
    main_feet = height * rng.uniform(0.9, 0.99)
    people = []
    for i, kind in enumerate(kinds):
        scale = {"main": 1.0, "side": rng.uniform(0.85, 1.02), "back": rng.uniform(0.35, 0.6)}[kind]
        # People stand in slots across the width; who would not fit in theirs is made smaller.
        h = min(main * scale, slot / 0.42)
        cx = slot * (order[i] + 0.5 + rng.uniform(-0.12, 0.12))
        if kind == "back":  # further away: smaller, and standing higher up the floor
            feet = main_feet - (main - h) * rng.uniform(0.2, 0.5)
        else:
            feet = min(height * 0.995, main_feet + rng.uniform(-0.02, 0.02) * height)
        people.append((h, cx, max(feet, h + 0.01 * height)))
    return sorted(people, key=lambda p: (p[2], p[0]))


def _render_scene(rng: np.random.Generator, with_unlabelled: bool, vocab: _Vocab) -> _Scene:
    width, height = _sample_size(rng)
    count = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    if with_unlabelled:
        count = max(count, 2)
    canvas = _background(rng, width, height, horizon=int(height * rng.uniform(0.45, 0.65)))
    owner = np.full((height, width), -1, np.int32)  # which item of whom each pixel shows
    layout = _layout(rng, width, height, count)
    unlabelled_index = int(rng.integers(count)) if with_unlabelled else -1

    placed: list[tuple[_Person, int, int, int]] = []  # person, left, top, first item id
    next_id = 0
    for h, cx, feet in layout:
        person = _draw_person(rng, h)
        fig = person.figure
        left, top = int(round(cx - fig.origin[0])), int(round(feet - person.ground))
        _shadow(canvas, cx, feet, fig.u)
        y0, y1 = max(0, top), min(height, top + fig.height)
        x0, x1 = max(0, left), min(width, left + fig.width)
        local = fig.owner[y0 - top:y1 - top, x0 - left:x1 - left]
        drawn = local >= 0
        canvas[y0:y1, x0:x1][drawn] = fig.rgb[y0 - top:y1 - top, x0 - left:x1 - left][drawn]
        owner[y0:y1, x0:x1][drawn] = local[drawn] + next_id
        placed.append((person, left, top, next_id))
        next_id += len(fig.items)

    rows: list[tuple[str, str]] = []
    people = []
    for index, (person, left, top, first) in enumerate(placed):
        labelled = index != unlabelled_index
        fx, fy, fw, fh = person.face
        people.append({
            "box": _clip_box(_mask_box(person.figure.owner >= 0, left, top), width, height),
            "labelled": labelled,
            "face": _clip_box((left + fx, top + fy, fw, fh), width, height),
        })
        if labelled:
            rows += _person_rows(person.figure, owner, left, first, vocab)
    truth = {"width": width, "height": height, "unlabelled_person": unlabelled_index >= 0, "people": people}
    return _Scene(_finish(rng, canvas), width, height, rows, truth)


def _shadow(canvas: np.ndarray, cx: float, feet: float, u: float) -> None:
    """A soft contact shadow on the floor under a person's feet."""
    rx, ry = 1.3 * u, 0.25 * u
    h, w = canvas.shape[:2]
    y0, y1 = int(max(0, feet - ry * 2)), int(min(h, feet + ry * 2))
    x0, x1 = int(max(0, cx - rx * 1.5)), int(min(w, cx + rx * 1.5))
    if y1 <= y0 or x1 <= x0:
        return
    yy = (np.arange(y0, y1, dtype=np.float32)[:, None] - (feet - 0.05 * u)) / ry
    xx = (np.arange(x0, x1, dtype=np.float32)[None, :] - cx) / rx
    dark = np.clip(1.0 - (xx * xx + yy * yy), 0.0, 1.0) * 0.35
    canvas[y0:y1, x0:x1] *= (1.0 - dark)[:, :, None]


def _mask_box(mask: np.ndarray, left: int, top: int) -> tuple[float, float, float, float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (left + cols[0], top + rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1)


def _clip_box(box: tuple[float, float, float, float], width: int, height: int) -> list[int]:
    x, y, w, h = box
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    return [x0, y0, max(0, x1 - x0), max(0, y1 - y0)]


def _person_rows(fig: _Figure, owner: np.ndarray, left: int, first: int,
                 vocab: _Vocab) -> list[tuple[str, str]]:
    """One CSV row per labelled item of a person: its visible pixels plus those of its parts."""
    height, width = owner.shape
    x0, x1 = max(0, left), min(width, left + fig.width)
    if x1 <= x0:
        return []
    # A slab of whole columns: its column-major runs are the image's, shifted by x0 columns.
    slab = owner[:, x0:x1]
    members: dict[int, list[int]] = {}
    for i, item in enumerate(fig.items):
        if item.category is not None:
            members.setdefault(i, []).append(first + i)
            if item.parent is not None:
                members[item.parent].append(first + i)
    rows = []
    for i, ids in members.items():
        runs = encode_mask(slab == ids[0] if len(ids) == 1 else np.isin(slab, ids))
        if runs[:, 1].sum() < MIN_MASK_PIXELS:
            continue
        runs[:, 0] += x0 * height
        item = fig.items[i]
        rows.append((runs_to_text(runs), vocab.class_id(item.category, item.attributes)))
    return rows


def _finish(rng: np.random.Generator, canvas: np.ndarray) -> Image.Image:
    """Sensor noise and a slight blur, as a camera would give."""
    noise = rng.standard_normal(canvas.shape, dtype=np.float32) * float(rng.uniform(1.5, 5.0))
    pixels = np.clip(canvas + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 0.9))))
