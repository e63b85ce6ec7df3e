"""Mask rendering speed: composing a typical image vs decoding its masks alone.

A typical image: 1000x750 (width x height), one dressed figure with 8 masks of realistic
shapes (jacket, top, pants, two sleeves, belt, shoes, bag, hat). Prints the median time of

- decode:            ``decode_runs`` of each of the 8 masks (the baseline),
- compose:           ``compose_mask`` of the 8 masks under ``fine``,
- compose + PNG:     the same plus encoding the palette PNG (in memory),

first from parsed runs, then from the stored form, COCO counts strings (decoding them included
on both sides, as rendering from the database does), and the full ``render_image_mask`` from a
SQLite store. Target: rendering within 2x of decoding alone.

Run: ``python bench/masks.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db.engine import make_engine, session_scope  # noqa: E402
from db.models import Annotation, Category, Dataset, Image  # noqa: E402
from workbench.masks import (  # noqa: E402
    MaskAnnotation,
    RenderedMask,
    compose_mask,
    encode_palette_png,
    render_image_mask,
)
from workbench.rle import counts_to_runs, decode_runs, encode_mask, runs_area, runs_bbox, runs_to_counts  # noqa: E402
from workbench.schemes import builtin_scheme  # noqa: E402
from workbench.taxonomy import imat2019_taxonomy  # noqa: E402

WIDTH, HEIGHT = 1000, 750


def figure_masks() -> list[tuple[str, np.ndarray]]:
    """Eight garment masks of one standing figure, drawn as polygons and ellipses."""
    cx = WIDTH // 2

    def draw(*shapes: tuple[str, list]) -> np.ndarray:
        canvas = PILImage.new("1", (WIDTH, HEIGHT), 0)
        pen = ImageDraw.Draw(canvas)
        for kind, xy in shapes:
            if kind == "polygon":
                pen.polygon(xy, fill=1)
            else:
                pen.ellipse(xy, fill=1)
        return np.array(canvas, dtype=bool)

    return [
        ("jacket", draw(("polygon", [(cx - 150, 150), (cx - 40, 130), (cx - 20, 420),
                                     (cx - 170, 430)]),
                        ("polygon", [(cx + 150, 150), (cx + 40, 130), (cx + 20, 420),
                                     (cx + 170, 430)]))),
        ("top, t-shirt, sweatshirt", draw(("polygon", [(cx - 120, 140), (cx + 120, 140),
                                                        (cx + 110, 400), (cx - 110, 400)]),
                                          ("ellipse", [cx - 60, 120, cx + 60, 170]))),
        ("pants", draw(("polygon", [(cx - 115, 390), (cx + 115, 390), (cx + 100, 700),
                                    (cx + 20, 705), (cx, 470), (cx - 20, 705), (cx - 100, 700)]))),
        ("sleeve", draw(("polygon", [(cx - 150, 150), (cx - 250, 400), (cx - 215, 415),
                                     (cx - 130, 230)]),
                        ("polygon", [(cx + 150, 150), (cx + 250, 400), (cx + 215, 415),
                                     (cx + 130, 230)]))),
        ("belt", draw(("polygon", [(cx - 118, 380), (cx + 118, 375), (cx + 118, 400),
                                   (cx - 118, 405)]))),
        ("shoe", draw(("ellipse", [cx - 120, 690, cx - 15, 740]),
                      ("ellipse", [cx + 15, 690, cx + 120, 740]))),
        ("bag, wallet", draw(("polygon", [(cx + 180, 330), (cx + 300, 320), (cx + 310, 470),
                                          (cx + 190, 480)]),
                             ("polygon", [(cx + 140, 150), (cx + 150, 145), (cx + 250, 325),
                                          (cx + 240, 330)]))),
        ("hat", draw(("ellipse", [cx - 90, 20, cx + 90, 75]),
                     ("ellipse", [cx - 55, 0, cx + 55, 60]))),
    ]


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build_store(root: Path, masks: list[tuple[str, np.ndarray]]) -> tuple[str, int]:
    """A SQLite store holding the figure as one image; returns its URL and the image id."""
    url = f"sqlite:///{(root / 'bench.db').as_posix()}"
    engine = make_engine(url)
    with session_scope(engine) as s:
        ds = Dataset(name="bench", format="imat2019", images_root=str(root))
        s.add(ds)
        s.flush()
        cat_ids = {}
        for c in imat2019_taxonomy().categories:
            row = Category(dataset_id=ds.id, source_id=c.id, name=c.name,
                           supercategory=c.supercategory)
            s.add(row)
            s.flush()
            cat_ids[c.name] = row.id
        img = Image(dataset_id=ds.id, file_name="figure.jpg", width=WIDTH, height=HEIGHT)
        s.add(img)
        s.flush()
        for i, (name, mask) in enumerate(masks):
            runs = encode_mask(mask)
            x, y, w, h = runs_bbox(runs, HEIGHT)
            s.add(Annotation(dataset_id=ds.id, image_id=img.id, category_id=cat_ids[name],
                             source_key=str(i), counts=runs_to_counts(runs, HEIGHT * WIDTH), area=runs_area(runs),
                             bbox_x=x, bbox_y=y, bbox_w=w, bbox_h=h))
        return url, img.id


def main() -> None:
    """Print decode vs compose vs compose + PNG times and their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()

    scheme = builtin_scheme("fine")
    supers = {c.name: c.supercategory for c in imat2019_taxonomy().categories}
    masks = figure_masks()
    parsed = [(name, encode_mask(mask)) for name, mask in masks]
    stored = [(name, runs_to_counts(runs, HEIGHT * WIDTH)) for name, runs in parsed]
    records = [MaskAnnotation(name, supers[name], runs, runs_area(runs), i)
               for i, (name, runs) in enumerate(parsed)]
    n_runs = sum(len(runs) for _, runs in parsed)
    coverage = np.any([m for _, m in masks], axis=0).mean()

    def decode_from_runs() -> None:
        for _, runs in parsed:
            decode_runs(runs, HEIGHT, WIDTH)

    def compose_from_runs() -> np.ndarray:
        return compose_mask(records, HEIGHT, WIDTH, scheme)

    def wrap(array: np.ndarray) -> RenderedMask:
        return RenderedMask(array, scheme.palette(), scheme.legend(), "fine", 1)

    def decode_from_stored() -> None:
        for _, counts in stored:
            decode_runs(counts_to_runs(counts, HEIGHT, WIDTH), HEIGHT, WIDTH)

    def compose_from_stored() -> np.ndarray:
        recs = []
        for i, (name, counts) in enumerate(stored):
            runs = counts_to_runs(counts, HEIGHT, WIDTH)
            recs.append(MaskAnnotation(name, supers[name], runs, runs_area(runs), i))
        return compose_mask(recs, HEIGHT, WIDTH, scheme)

    print(f"image {WIDTH}x{HEIGHT}, {len(masks)} masks, {n_runs} runs, "
          f"{coverage:.0%} of pixels labelled; median of {args.repeat} runs")
    for label, decode, compose in [("from parsed runs", decode_from_runs, compose_from_runs),
                                   ("from stored COCO counts", decode_from_stored, compose_from_stored)]:
        t_decode = median_seconds(decode, args.repeat)
        t_compose = median_seconds(compose, args.repeat)
        t_png = median_seconds(lambda: encode_palette_png(wrap(compose())), args.repeat)
        print(f"\n{label}:")
        print(f"  decode 8 masks (decode_runs each) {t_decode * 1e3:8.2f} ms   1.00x")
        print(f"  compose_mask                      {t_compose * 1e3:8.2f} ms   "
              f"{t_compose / t_decode:.2f}x")
        print(f"  compose_mask + palette PNG encode {t_png * 1e3:8.2f} ms   "
              f"{t_png / t_decode:.2f}x")

    with tempfile.TemporaryDirectory() as tmp:
        url, image_id = build_store(Path(tmp), masks)
        engine = make_engine(url)

        def render_from_db() -> RenderedMask:
            with session_scope(engine) as s:
                return render_image_mask(s, image_id, "fine")

        t_db = median_seconds(render_from_db, max(10, args.repeat // 4))
        t_decode = median_seconds(decode_from_stored, args.repeat)
        print("\nfrom the store (query + decode + compose, scheme seeded):")
        print(f"  render_image_mask                 {t_db * 1e3:8.2f} ms   "
              f"{t_db / t_decode:.2f}x of decoding the stored masks")
        engine.dispose()


if __name__ == "__main__":
    main()
