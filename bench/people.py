"""Unlabelled-people detection on the demo dataset: precision and recall of the offline detectors.

Generates a demo dataset (``--images``, ``--seed``), whose ``truth.json`` says which images
show a person without garment masks, imports it into a temporary store, runs each offline
detector (``opencv``, ``annotations``, and the two combined: an image flagged by either)
through ``workbench.people.detect`` exactly as the CLI does, and prints, at each detector's
default threshold, precision, recall, F1 and the precision's lift over the base rate (a
detector that flags images at random has lift 1: the baseline in the same run), plus the time
per image.

``--tune`` also prints precision / recall over a range of thresholds (choose defaults on one
seed, report on another). Detections are stored, so ``--tune`` costs no extra detection.

Run: ``python bench/people.py [--images 120] [--seed 0] [--tune]``.

Last run (120 images, 20 with an unlabelled person; defaults chosen on seed 1, 2-core CPU):

    seed 0   opencv       precision 0.95  recall 1.00  (20 of 21 flagged right)   ~0.3-0.4 s/image
             annotations  precision 0.59  recall 0.85  (17 of 29)                 ~0.03-0.1 s/image
    seed 1   opencv       precision 0.90  recall 0.90  (18 of 20)
             annotations  precision 0.68  recall 0.65  (13 of 19)

(annotations reads each photo since it fits its free-space box to the uncovered foreground:
0.1 s/image against opencv's 1.6 s in a run on a loaded machine; the scores did not change.)

These are drawn figures on plain backgrounds, framed so that HOG sees them; on real photos
the same OpenCV detectors are far weaker (``../shared/OFFLINE-MODELS.md``), so read these as
a check of the pipeline, not as the accuracy to expect on iMaterialist.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select  # noqa: E402

from db.engine import dispose_engines, make_engine, session_scope  # noqa: E402
from db.models import Image  # noqa: E402
from db.people import PeopleScan  # noqa: E402
from workbench.demo import generate_demo  # noqa: E402
from workbench.formats.imat2019 import import_imat2019  # noqa: E402
from workbench.people.coverage import CoverageSettings  # noqa: E402
from workbench.people.detect import detect_people  # noqa: E402
from workbench.people.detectors import make_detector  # noqa: E402

OFFLINE = ("opencv", "annotations")


def scores_of(engine, detector: str) -> dict[str, float]:
    """Image file name -> image score of ``detector``."""
    with session_scope(engine) as session:
        rows = session.execute(select(Image.file_name, PeopleScan.score)
                               .join(PeopleScan, PeopleScan.image_id == Image.id)
                               .where(PeopleScan.detector == detector)).all()
    return dict(rows)


def measure(flagged: set[str], positives: set[str], n: int) -> dict[str, float]:
    """Precision, recall, F1 and lift of a set of flagged images."""
    hits = len(flagged & positives)
    precision = hits / len(flagged) if flagged else 0.0
    recall = hits / len(positives) if positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    base = len(positives) / n if n else 0.0
    return {"flagged": len(flagged), "hits": hits, "precision": precision, "recall": recall, "f1": f1,
            "lift": precision / base if base else 0.0}


def line(name: str, threshold: str, m: dict[str, float], extra: str = "") -> str:
    """One row of the results table."""
    return (f"{name:22s} {threshold:>9s} {m['flagged']:7d} {m['hits']:5d} {m['precision']:9.2f} "
            f"{m['recall']:7.2f} {m['f1']:5.2f} {m['lift']:6.2f}x {extra}")


def main() -> None:
    """Generate, import, detect, compare with the truth, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune", action="store_true", help="Also print a threshold sweep.")
    args = parser.parse_args()

    coverage = CoverageSettings()
    with tempfile.TemporaryDirectory() as tmp:
        files = generate_demo(Path(tmp) / "demo", n_images=args.images, seed=args.seed)
        truth = json.loads(files.truth.read_text())["images"]
        positives = {name for name, t in truth.items() if t["unlabelled_person"]}
        engine = make_engine(f"sqlite:///{Path(tmp, 'bench.db').as_posix()}")
        import_imat2019(engine, csv_path=files.csv, labels_path=files.labels, images_dir=files.images_dir,
                        name="demo", image_check="header")
        n = len(truth)
        print(f"demo: {n} images (seed {args.seed}), {len(positives)} with an unlabelled person "
              f"(base rate {len(positives) / n:.2f})")
        scores, seconds = {}, {}
        for name in OFFLINE:
            detector = make_detector(name)
            started = time.perf_counter()
            detect_people(engine, "demo", detector, coverage=coverage)
            seconds[name] = (time.perf_counter() - started) / n
            scores[name] = scores_of(engine, name)
        dispose_engines()

    print(f"\n{'detector':22s} {'threshold':>9s} {'flagged':>7s} {'hits':>5s} {'precision':>9s} "
          f"{'recall':>7s} {'F1':>5s} {'lift':>7s}")
    flagged_by = {}
    for name in OFFLINE:
        t = coverage.threshold(name)
        flagged_by[name] = {f for f, s in scores[name].items() if s >= t}
        print(line(name, f"{t:.2f}", measure(flagged_by[name], positives, n), f"{1000 * seconds[name]:.0f} ms/image"))
    print(line("opencv OR annotations", "defaults", measure(flagged_by["opencv"] | flagged_by["annotations"],
                                                            positives, n)))
    print(line("random (baseline)", "-", {"flagged": 0, "hits": 0, "precision": len(positives) / n,
                                          "recall": float("nan"), "f1": float("nan"), "lift": 1.0}))

    if args.tune:
        for name in OFFLINE:
            print(f"\n{name}: threshold sweep")
            for step in range(1, 20):
                t = step / 20
                m = measure({f for f, s in scores[name].items() if s >= t}, positives, n)
                print(line(name, f"{t:.2f}", m))
        missed = sorted(positives - flagged_by["opencv"] - flagged_by["annotations"])
        print(f"\nmissed by both at the defaults: {', '.join(missed) or 'none'}")


if __name__ == "__main__":
    main()
