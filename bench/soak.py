"""Soak: curators deciding people flags and editing captions at once, on SQLite and PostgreSQL.

For each backend, a fresh store with the demo dataset; ``--curators`` processes (default 8)
each make ``--operations`` saves on the same few items (``workbench.load``, as the pages do:
load the version, save against it, conflicts refused). The baseline is one curator doing the
same number of saves on its own store in the same run. Printed per backend: saves per second
sustained (all saves over the wall time from the common start to the last save), median and
p95 latency of a save (retries included), saves stored / refused as conflicts / errors, and the
ratios 8 curators : 1 curator. Every run is checked: the audit log must account for every
stored decision and no caption edit may be lost (an error is counted, never hidden).

PostgreSQL: ``--pg-url`` (a superuser URL; a database is created and dropped per run), else a
private throw-away server when PostgreSQL's server programs are installed
(``db/pg_server.py``), else PostgreSQL is skipped with a note.

Run: ``python bench/soak.py [--curators 8] [--operations 40] [--items 4] [--think 0.0]``.

Last run (defaults; PostgreSQL 15 private server; a 2-core machine shared with other work,
load average ~13, so 8 curator processes mostly wait for a CPU):

    backend     curators  saves  saves/s  p50 ms  p95 ms stored refused errors  audit
    sqlite             1     40     20.5    42.6    72.5     40       0      0  ok
    sqlite             8    320     14.5   264.1  1567.4    261      59      0  ok
    sqlite      ratio 8:1  throughput x0.71  p95 latency x21.63
    postgresql         1     40     15.4    52.0    87.8     40       0      0  ok
    postgresql         8    320     10.5   671.0  1076.0    271      49      0  ok
    postgresql  ratio 8:1  throughput x0.68  p95 latency x12.26

No save failed with a database error on either; the refused ones are stale caption edits,
shown to the curator with the other version.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db.engine import dispose_engines, make_engine  # noqa: E402
from db.pg_server import LocalServer, create_database, drop_database, find_server_bin  # noqa: E402
from workbench.datasets import DEMO_NAME  # noqa: E402
from workbench.demo import generate_demo  # noqa: E402
from workbench.formats.imat2019 import import_imat2019  # noqa: E402
from workbench.load import audit_mismatches, prepare, run_curators  # noqa: E402


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def one_run(url: str, files, curators: int, operations: int, items: int, think_s: float) -> dict:
    """Fill a fresh store at ``url``, run the curators, check the store; returns the figures."""
    engine = make_engine(url)
    import_imat2019(engine, csv_path=files.csv, labels_path=files.labels, images_dir=files.images_dir,
                    name=DEMO_NAME)
    plan = prepare(engine, DEMO_NAME, items)
    results, wall = run_curators(url, plan, curators=curators, operations=operations, think_s=think_s)
    latencies = [r.latency_s for r in results if r.outcome != "error"] or [float("nan")]
    figures = {
        "curators": curators, "saves": len(results), "per_s": len(results) / wall,
        "p50_ms": 1000 * statistics.median(latencies), "p95_ms": 1000 * p95(latencies),
        "stored": sum(r.stored for r in results), "refused": sum(r.outcome == "refused" for r in results),
        "errors": sum(r.outcome == "error" for r in results), "unaccounted": audit_mismatches(engine, results),
    }
    dispose_engines()
    return figures


def backends(args, root: Path):
    """``(name, make_url(tag), cleanup(tag))`` for SQLite and, where one is reachable, PostgreSQL."""
    yield "sqlite", lambda tag: f"sqlite:///{(root / f'{tag}.db').as_posix()}", lambda tag: None
    server_url, server = args.pg_url, None
    if server_url is None and find_server_bin() is not None:
        server = LocalServer()
        server_url = server.start()
    if server_url is None:
        print("postgresql: skipped (no --pg-url and no PostgreSQL server programs installed)")
        return
    try:
        names = lambda tag: f"soak_{tag}"  # noqa: E731
        yield ("postgresql", lambda tag: (drop_database(server_url, names(tag)),
                                          create_database(server_url, names(tag)))[1],
               lambda tag: drop_database(server_url, names(tag)))
    finally:
        if server is not None:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curators", type=int, default=8)
    parser.add_argument("--operations", type=int, default=40, help="Saves per curator.")
    parser.add_argument("--items", type=int, default=4, help="Flagged images (and captions) all curators share.")
    parser.add_argument("--think", type=float, default=0.0, help="Most seconds between loading an item and saving it.")
    parser.add_argument("--pg-url", help="PostgreSQL superuser URL (postgresql+psycopg://...).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        root = Path(tmp)
        files = generate_demo(root / "demo", n_images=max(12, args.items), seed=0)
        print(f"{args.curators} curators vs 1, {args.operations} saves each (people decisions and caption edits "
              f"alternating) on {args.items} shared items, think time up to {args.think}s")
        print(f"{'backend':11s} {'curators':>8s} {'saves':>6s} {'saves/s':>8s} {'p50 ms':>7s} {'p95 ms':>7s} "
              f"{'stored':>6s} {'refused':>7s} {'errors':>6s}  audit")
        for name, url_for, cleanup in backends(args, root):
            runs = {}
            for curators in (1, args.curators):
                tag = f"c{curators}"
                started = time.perf_counter()
                runs[curators] = f = one_run(url_for(tag), files, curators, args.operations, args.items, args.think)
                cleanup(tag)
                print(f"{name:11s} {curators:8d} {f['saves']:6d} {f['per_s']:8.1f} {f['p50_ms']:7.1f} "
                      f"{f['p95_ms']:7.1f} {f['stored']:6d} {f['refused']:7d} {f['errors']:6d}  "
                      f"{'ok' if not f['unaccounted'] else f['unaccounted']}  ({time.perf_counter() - started:.0f} s)")
            one, many = runs[1], runs[args.curators]
            print(f"{name:11s} ratio {args.curators}:1  throughput x{many['per_s'] / one['per_s']:.2f}  "
                  f"p95 latency x{many['p95_ms'] / one['p95_ms']:.2f}")


if __name__ == "__main__":
    main()
