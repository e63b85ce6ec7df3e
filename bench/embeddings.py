"""Embeddings: images/s batched vs a per-image loop, and FAISS search vs brute-force numpy at 45k x 512.

1. Embedding throughput. Generates a demo dataset (``--images``), imports it into a temporary
   store and embeds it twice with the same open_clip model: through ``workbench.embeddings``
   (``embed_dataset``: batches of ``--batch-size``, JPEG draft decoding, one model call per batch)
   and the way a user would write it by hand, one image at a time (open, preprocess, one model
   call each). The default model is open_clip's ViT-B-32 architecture with random weights
   (``ViT-B-32/none``: the real network's compute, nothing to download); ``--model`` takes any
   registry name, ARCH/TAG or folder.
2. Search. ``--rows`` (45,000) unit vectors of ``--dim`` (512) drawn around ``--clusters`` centres
   (real CLIP embeddings are clustered like this: uniformly random vectors have no neighbours to
   find), ``--queries`` queries near stored rows. The baseline is brute force with numpy (one
   matrix product, then ``argpartition`` for the top 10), which is also the truth for recall@10.
   ``workbench.embeddings.index.build_index`` builds its IVF index and tunes ``nprobe`` until its
   own sampled recall@10 reaches 0.95; the bench measures recall on its own queries.

Run: ``python bench/embeddings.py [--images 64] [--model ViT-B-32/none] [--rows 45000]``.

Last run (``--images 32``, 2 CPU cores shared with about six other jobs, load average ~13: the
absolute times are the load's, the ratios are the figures to read):

    embedding 32 demo images (31 distinct files) with ViT-B-32/none, batch 32:
      per-image loop : 0.3 images/s (112.3 s)   embed_dataset : 0.9 images/s (34.6 s)   ratio 3.25x
    search over 45,000 x 512 (500 clusters), 1000 queries, top 10:
      IVF, 848 lists, nprobe 2 (sampled recall@10 0.987), built in 33.3 s
      batch   : numpy 5.736 ms/query, faiss 0.243 ms/query   ratio 23.6x
      1 query : numpy 68.7 ms, faiss 1.07 ms                  ratio 64.2x
      recall@10 against numpy's exact answer: 0.979
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from sqlalchemy import select  # noqa: E402

from db.engine import dispose_engines, make_engine, session_scope  # noqa: E402
from db.models import Dataset, Image  # noqa: E402
from workbench.embeddings.compute import EmbedSettings, embed_dataset, encode_images, load_model  # noqa: E402
from workbench.embeddings.index import build_index, exact_neighbours, recall_at  # noqa: E402


def embedding_throughput(images: int, model: str, batch_size: int) -> None:
    """Print images/s of the batched job and of a per-image loop, and their ratio."""
    from PIL import Image as PILImage

    from workbench.demo import generate_demo
    from workbench.formats.imat2019 import import_imat2019

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = generate_demo(root / "demo", n_images=images, seed=0)
        engine = make_engine(f"sqlite:///{(root / 'store.db').as_posix()}")
        import_imat2019(engine, csv_path=files.csv, labels_path=files.labels, images_dir=files.images_dir, name="demo")
        clip = load_model(model)  # loaded once, outside both timings
        with session_scope(engine) as session:
            rows = session.execute(select(Image.file_name)).scalars().all()
            folder = Path(session.scalar(select(Dataset.images_root)))
        unique = len({(folder / r).read_bytes() for r in rows})
        with PILImage.open(folder / rows[0]) as im:
            encode_images(clip, [im.convert("RGB")] * 2)  # first calls pay one-off set-up: not timed

        start = time.perf_counter()
        for name in rows:
            with PILImage.open(folder / name) as im:
                encode_images(clip, [im.convert("RGB")])
        loop = time.perf_counter() - start

        start = time.perf_counter()
        result = embed_dataset(engine, "demo", root / "data", EmbedSettings(model=model, batch_size=batch_size,
                                                                            map="none"))
        batched = time.perf_counter() - start
        dispose_engines()
    assert result.embedded == unique, result
    print(f"embedding {len(rows)} demo images ({unique} distinct files) with {model}, batch {batch_size}:")
    print(f"  per-image loop : {len(rows) / loop:8.1f} images/s  ({loop:.1f} s)")
    print(f"  embed_dataset  : {len(rows) / batched:8.1f} images/s  ({batched:.1f} s, checksums, hashes and "
          "store writes included)")
    print(f"  ratio          : {loop / batched:8.2f}x")


def clustered(rows: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors scattered around ``clusters`` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    data = centres[rng.integers(0, clusters, rows)] + rng.normal(scale=1.0, size=(rows, dim)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def search_speed(rows: int, dim: int, clusters: int, queries: int, k: int = 10) -> None:
    """Print build time, query time of FAISS and numpy, their ratio, and recall@k."""
    data = clustered(rows, dim, clusters, seed=0)
    rng = np.random.default_rng(1)
    picked = data[rng.choice(rows, queries, replace=False)]
    q = picked + rng.normal(scale=0.02, size=picked.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)

    start = time.perf_counter()
    index = build_index(data)
    build = time.perf_counter() - start

    start = time.perf_counter()
    truth = np.concatenate([exact_neighbours(data, q[i:i + 256], k) for i in range(0, queries, 256)])
    numpy_batch = time.perf_counter() - start
    start = time.perf_counter()
    found = index.search(q, k)[1]
    faiss_batch = time.perf_counter() - start

    singles = min(queries, 200)
    start = time.perf_counter()
    for i in range(singles):
        exact_neighbours(data, q[i:i + 1], k)
    numpy_single = (time.perf_counter() - start) / singles
    start = time.perf_counter()
    for i in range(singles):
        index.search(q[i:i + 1], k)
    faiss_single = (time.perf_counter() - start) / singles

    print(f"\nsearch over {rows:,} x {dim} float32 unit vectors ({clusters} clusters), {queries} queries, top {k}:")
    print(f"  index          : {index.describe()}; built in {build:.1f} s")
    print(f"  numpy, batch   : {numpy_batch * 1000 / queries:8.3f} ms/query")
    print(f"  faiss, batch   : {faiss_batch * 1000 / queries:8.3f} ms/query   ratio {numpy_batch / faiss_batch:6.1f}x")
    print(f"  numpy, 1 query : {numpy_single * 1000:8.3f} ms")
    print(f"  faiss, 1 query : {faiss_single * 1000:8.3f} ms            ratio {numpy_single / faiss_single:6.1f}x")
    print(f"  recall@{k}      : {recall_at(found, truth):.4f} (against numpy's exact answer)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--model", default="ViT-B-32/none")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rows", type=int, default=45_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--skip-embedding", action="store_true", help="Only the search part.")
    args = parser.parse_args()
    if not args.skip_embedding:
        embedding_throughput(args.images, args.model, args.batch_size)
    search_speed(args.rows, args.dim, args.clusters, args.queries)


if __name__ == "__main__":
    main()
