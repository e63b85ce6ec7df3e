"""Export speed at 512 px against the floor of decoding the photos and encoding PNGs alone.

Data: the demo dataset generated at its usual size, then every photo and mask upscaled by an
integer factor (5: about 3000x3200 px, the size of full iMaterialist photos) and imported as
``bench``. Masks are upscaled by pixel repetition, so they stay exact.

Figures (images per second, best of ``--repeat`` runs since the machine may be shared):

- floor:        full JPEG decode of each source photo + PNG encode of its 512 px mask, over
                ``--workers`` processes started before the clock runs: the work an export cannot
                avoid without draft decoding (also shown with draft decoding, for reference);
- export, cold: ``export_dataset`` at 512 px, JPEG targets, empty photo cache (draft decode,
                resize, mask composed at full size + nearest resize, encodes, checksums,
                manifest), with one process and with ``--workers`` (pool start-up included);
- export, warm: the same photos again with another scheme and format (cache hits: no photo
                decoded).

Target: the cold export within 1.5x of the floor (floor rate / export rate <= 1.5).

Run: ``python bench/export.py [--images 48] [--factor 5] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db.engine import make_engine  # noqa: E402
from workbench.demo import generate_demo  # noqa: E402
from workbench.export import ExportRecipe, export_dataset  # noqa: E402
from workbench.formats.imat2019 import import_imat2019  # noqa: E402
from workbench.rle import decode_runs, mask_to_text, parse_runs  # noqa: E402
from workbench.settings import get_settings  # noqa: E402


def upscale_demo(root: Path, n_images: int, factor: int) -> tuple[Path, Path, Path]:
    """The demo, upscaled ``factor`` times: (images dir, train.csv, labels)."""
    small = generate_demo(root / "small", n_images=n_images, seed=0)
    images = root / "large" / "images"
    images.mkdir(parents=True)
    for path in sorted(small.images_dir.iterdir()):
        with PILImage.open(path) as photo:
            big = photo.resize((photo.width * factor, photo.height * factor), PILImage.Resampling.BICUBIC)
            big.save(images / path.name, quality=90)
    rows = []
    with small.csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            h, w = int(row["Height"]), int(row["Width"])
            mask = decode_runs(parse_runs(row["EncodedPixels"], h, w), h, w)
            big = np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)
            rows.append((row["ImageId"], mask_to_text(big), h * factor, w * factor, row["ClassId"]))
    csv_path = root / "large" / "train.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImageId", "EncodedPixels", "Height", "Width", "ClassId"])
        writer.writerows(rows)
    return images, csv_path, small.labels


def floor_one(args: tuple[str, str, bool]) -> None:
    """Decode one source photo (fully, or in draft mode at 512 px) and encode one mask PNG."""
    import zlib

    photo_path, mask_path, draft = args
    with PILImage.open(photo_path) as photo:
        if draft:
            scale = 512 / min(photo.size)
            photo.draft("RGB", (round(photo.width * scale), round(photo.height * scale)))
        photo.load()
    with PILImage.open(mask_path) as mask:
        mask.load()
        mask.save(io.BytesIO(), format="PNG", compress_type=zlib.Z_RLE)


def _noop(_: int) -> None:
    return None


def floor_rate(work: list[tuple[str, str, bool]], workers: int) -> float:
    """Images per second of the floor work over ``workers`` processes started beforehand."""
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_noop, range(workers * 4)))
        started = time.perf_counter()
        list(pool.map(floor_one, work, chunksize=1))
        return len(work) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--factor", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2, help="Runs of each figure; the best counts "
                        "(the machine may be shared).")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        started = time.perf_counter()
        images, csv_path, labels = upscale_demo(root, args.images, args.factor)
        engine = make_engine(f"sqlite:///{(root / 'store.db').as_posix()}")
        import_imat2019(engine, csv_path=csv_path, labels_path=labels, images_dir=images, name="bench",
                        image_check="full")
        sizes = sorted(PILImage.open(p).size for p in images.iterdir())
        print(f"data: {len(sizes)} photos, median {sizes[len(sizes) // 2]} px (w x h), built in "
              f"{time.perf_counter() - started:.1f} s; {args.workers} processes; best of {args.repeat}")

        best: dict[str, float] = {}

        def keep(name: str, rate: float) -> None:
            best[name] = max(best.get(name, 0.0), rate)

        n = 0
        for rep in range(args.repeat):
            for workers in (1, args.workers):
                settings = get_settings(data_dir=root / f"data-{rep}-{workers}")  # an empty cache
                started = time.perf_counter()
                cold = export_dataset(engine, settings, ExportRecipe(dataset="bench", resolution=512),
                                      root / f"cold-{rep}-{workers}", workers=workers)
                keep(f"cold-{workers}", cold.images / (time.perf_counter() - started))
                assert cold.decoded == cold.images
                started = time.perf_counter()
                warm = export_dataset(engine, settings, ExportRecipe(dataset="bench", resolution=512,
                                                                     scheme="fine", format="controlnet"),
                                      root / f"warm-{rep}-{workers}", workers=workers)
                keep(f"warm-{workers}", warm.images / (time.perf_counter() - started))
                assert warm.decoded == 0
                n = cold.images
            manifest = json.loads((root / "cold-0-1" / "manifest.json").read_text())
            for draft in (False, True):
                work = [(str(images / item["file_name"]),
                         str(root / "cold-0-1" / "conditioning_images" / f"{item['index']:06d}.png"), draft)
                        for item in manifest["items"]]
                keep(f"floor-{draft}", floor_rate(work, args.workers))

        floor = best["floor-False"]
        print(f"{n} images exported per run")
        print(f"floor: full JPEG decode + 512 px mask PNG encode ({args.workers} procs): {floor:7.2f} images/s")
        print(f"       (same with JPEG draft decode:                    {best['floor-True']:7.2f} images/s)")
        for workers in (1, args.workers):
            cold, warm = best[f"cold-{workers}"], best[f"warm-{workers}"]
            print(f"export, cold cache, workers={workers}: {cold:7.2f} images/s  floor/export = {floor / cold:.2f}x"
                  f"  {'(target <= 1.5x met)' if floor / cold <= 1.5 else '(target <= 1.5x NOT met)'}")
            print(f"export, warm cache (another scheme), workers={workers}: {warm:7.2f} images/s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
