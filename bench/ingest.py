"""Ingest benchmark: the workbench's streaming importer against a naive pandas baseline.

Writes a synthetic iMaterialist 2019 ``train.csv`` at the real dataset's scale (45,600 images,
331,213 mask rows) with realistic run lengths: image sizes spread like the real photos
(about 500 to 5,000 px a side), masks that span 5-45% of the image width, so about one run per
column a mask covers, which gives rows of a few kilobytes as in the real file.

Each contestant runs in its own process so that its peak memory is its own (the importer's
worker processes included: their resident memory is summed with the importer's while it runs):
- workbench: ``import_imat2019`` into a fresh SQLite store (every row checked, area and box
  computed, masks re-encoded as COCO strings), with ``image_check="none"`` (there are no
  45,600 photos here: the CSV's sizes are trusted);
- baseline: ``pandas.read_csv`` of the whole file, then ``DataFrame.to_sql`` (nothing checked).
The two run in turn ``--repeat`` times (the machine's load varies), and the medians are compared.
Image checking is measured apart, on a sample of generated JPEGs at real sizes, and printed
per image (the "full" check: SHA-256 of the bytes + a 1/8-scale decode).

    python bench/ingest.py                # full scale (writes about 1.6 GB under bench/out)
    python bench/ingest.py --scale 0.05   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REAL_IMAGES = 45_600
REAL_ROWS = 331_213


def _image_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    long_side = np.clip(rng.lognormal(np.log(1800), 0.55, n), 400, 6000).astype(int)
    aspect = rng.uniform(0.55, 0.85, n)
    short_side = (long_side * aspect).astype(int)
    portrait = rng.random(n) < 0.75
    heights = np.where(portrait, long_side, short_side)
    widths = np.where(portrait, short_side, long_side)
    return np.stack([heights, widths], axis=1)


def _mask_text(rng: np.random.Generator, height: int, width: int) -> str:
    """Runs of an irregular blob: one run per covered column, as real garment masks have."""
    span = max(2, int(width * rng.uniform(0.05, 0.45)))
    x0 = int(rng.integers(0, width - span + 1))
    cols = np.arange(x0, x0 + span)
    centre = rng.uniform(0.2, 0.8) * height
    half = rng.uniform(0.05, 0.3) * height
    wobble = np.sin(np.linspace(0, rng.uniform(1, 6), span)) * half * 0.3
    top = np.clip(centre - half + wobble, 0, height - 1).astype(np.int64)
    bottom = np.clip(centre + half - wobble, top + 1, height).astype(np.int64)
    starts = cols * height + top + 1
    lengths = bottom - top
    return " ".join(map(str, np.stack([starts, lengths], axis=1).ravel().tolist()))


def write_csv(path: Path, n_images: int, n_rows: int, seed: int = 0) -> None:
    """The synthetic train.csv (ClassId with attributes on about half the rows)."""
    rng = np.random.default_rng(seed)
    sizes = _image_sizes(rng, n_images)
    per_image = np.full(n_images, n_rows // n_images)
    per_image[: n_rows - per_image.sum()] += 1
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("ImageId,EncodedPixels,Height,Width,ClassId\n")
        for i in range(n_images):
            h, w = (int(v) for v in sizes[i])
            name = f"{i:032x}.jpg"
            for _ in range(per_image[i]):
                cat = int(rng.integers(0, 46))
                attrs = rng.choice(92, size=int(rng.integers(0, 4)), replace=False) if cat < 13 else []
                class_id = "_".join(map(str, [cat, *sorted(int(a) for a in attrs)]))
                f.write(f"{name},{_mask_text(rng, h, w)},{h},{w},{class_id}\n")


def run_workbench(csv: Path, db: Path) -> None:
    """Contestant: the workbench importer (runs in a child process)."""
    from db.engine import make_engine
    from workbench.formats import import_imat2019
    from workbench.taxonomy import BUNDLED_IMAT2019_LABELS

    engine = make_engine(f"sqlite:///{db.as_posix()}")
    report = import_imat2019(
        engine, csv_path=csv, labels_path=BUNDLED_IMAT2019_LABELS, images_dir=csv.parent,
        name="bench", image_check="none",
    )
    _print_result({"images": report.images, "annotations": report.annotations,
                   "rejected": len(report.rejected)})


def run_baseline(csv: Path, db: Path) -> None:
    """Contestant: pandas read_csv of the whole file, then to_sql (runs in a child process)."""
    import pandas as pd
    from sqlalchemy import create_engine

    frame = pd.read_csv(csv)
    frame.to_sql("train", create_engine(f"sqlite:///{db.as_posix()}"), index=False, chunksize=10_000)
    _print_result({"rows": len(frame)})


def _print_result(result: dict) -> None:
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _tree_rss_mb(process) -> float:
    """Resident memory of a process and all its children (worker processes), in MB."""
    import psutil

    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # ended between listing and reading
            pass
    return total / 2**20


def _measure(which: str, csv: Path, db: Path) -> dict:
    """Run one contestant in a child process: wall time, and peak memory counted two ways.

    ``peak_mb`` is the most the child and its worker processes held at once (their RSS summed,
    sampled every 50 ms), ``own_peak_mb`` the child's own max RSS.
    """
    import psutil

    for p in db.parent.glob(db.name + "*"):
        p.unlink()
    start = time.perf_counter()
    child = psutil.Popen(
        [sys.executable, __file__, "--child", which, str(csv), str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    peak = 0.0
    while child.poll() is None:
        try:
            peak = max(peak, _tree_rss_mb(child))
        except psutil.Error:
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    out, err = child.communicate()
    if child.returncode:
        raise RuntimeError(f"{which} failed ({child.returncode}):\n{err}")
    result = json.loads(out.strip().splitlines()[-1])
    own = result.pop("peak_mb")
    return {"seconds": seconds, "peak_mb": max(peak, own), "own_peak_mb": own, "result": result}


def measure_image_check(out: Path, n: int = 24) -> float:
    """Seconds per image of the full check on real-sized JPEGs."""
    from PIL import Image

    from workbench.formats.images import check_image

    folder = out / "photos"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate(_image_sizes(rng, n)):
        noise = rng.integers(0, 255, (int(h) // 8, int(w) // 8, 3), dtype=np.uint8)
        Image.fromarray(noise).resize((int(w), int(h))).save(folder / f"{i}.jpg", quality=90)
    start = time.perf_counter()
    for i in range(n):
        check_image(folder, f"{i}.jpg", mode="full")
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real dataset's size")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "ingest")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each contestant, in turn")
    parser.add_argument("--keep", action="store_true", help="keep the generated CSV and stores")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        which, csv, db = args.child
        (run_workbench if which == "workbench" else run_baseline)(Path(csv), Path(db))
        return

    args.out.mkdir(parents=True, exist_ok=True)
    n_images, n_rows = int(REAL_IMAGES * args.scale), int(REAL_ROWS * args.scale)
    csv = args.out / "train.csv"
    start = time.perf_counter()
    write_csv(csv, n_images, n_rows)
    print(f"synthetic train.csv: {n_images} images, {n_rows} rows, "
          f"{csv.stat().st_size / 1e6:.0f} MB, written in {time.perf_counter() - start:.0f} s")

    print(f"machine: {os.cpu_count()} cores, load average {' / '.join(f'{v:.1f}' for v in os.getloadavg())} (1/5/15 min)")
    runs: dict[str, list[dict]] = {"baseline": [], "workbench": []}
    for _ in range(args.repeat):
        for which in runs:
            db = args.out / f"{which}.db"
            result = _measure(which, csv, db)
            result["store_mb"] = sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 1e6
            runs[which].append(result)
            print(f"  {which:9s} {result['seconds']:6.1f} s, peak {result['peak_mb']:6.0f} MB, "
                  f"store {result['store_mb']:6.0f} MB {result['result']}")
    baseline = {k: statistics.median(r[k] for r in runs["baseline"]) for k in ("seconds", "peak_mb", "store_mb")}
    workbench = {k: statistics.median(r[k] for r in runs["workbench"]) for k in ("seconds", "peak_mb", "store_mb")}
    own = statistics.median(r["own_peak_mb"] for r in runs["workbench"])
    print(f"baseline  (pandas read_csv + to_sql): {baseline['seconds']:6.1f} s, peak {baseline['peak_mb']:6.0f} MB,"
          f" store {baseline['store_mb']:.0f} MB (medians of {args.repeat})")
    print(f"workbench (streaming import_imat2019): {workbench['seconds']:6.1f} s, peak {workbench['peak_mb']:6.0f} MB"
          f" with its parsing processes ({own:.0f} MB the importing process alone), store {workbench['store_mb']:.0f} MB")
    print(f"ratio: workbench is {baseline['seconds'] / workbench['seconds']:.2f}x the baseline's speed, "
          f"{workbench['peak_mb'] / baseline['peak_mb']:.2f}x its peak memory")
    per_image = measure_image_check(args.out)
    print(f"image check (full: SHA-256 + 1/8-scale decode) on real-sized JPEGs: {per_image * 1000:.0f} ms per image,"
          f" about {per_image * n_images / 2:.0f} s for {n_images} images on 2 threads")
    if not args.keep:
        shutil.rmtree(args.out)


if __name__ == "__main__":
    main()
