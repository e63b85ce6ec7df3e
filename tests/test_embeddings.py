"""Embeddings: the store and its reuse after a re-import, resume, search, duplicates, outliers, export."""

from __future__ import annotations

import shutil
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from db.engine import make_engine, session_scope
from db.models import Annotation, Category, Image
from workbench.embeddings.compute import EmbedSettings, crop_key, embed_dataset, encode_texts, load_model
from workbench.embeddings.decisions import latest_decisions, record_decision
from workbench.embeddings.duplicates import find_duplicates, keep_one
from workbench.embeddings.index import build_index, exact_neighbours, recall_at
from workbench.embeddings.outliers import centroid_scores, label_problems, review_queue
from workbench.embeddings.search import more_like, text_search
from workbench.embeddings.store import HASH_BYTES, EmbeddingStore
from workbench.embeddings.vectors import NotEmbedded, image_vectors
from workbench.formats.folder import import_folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    """A tiny random open_clip model folder (its path is the model reference)."""
    from workbench.tiny.captioners import save_tiny_clip

    return str(save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip"))


def distinct_photo(seed: int, size: tuple[int, int] = (128, 96)) -> PILImage.Image:
    """A smooth random colour field: distinct seeds give unrelated pictures."""
    rng = np.random.default_rng(seed)
    small = PILImage.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    return small.resize(size, PILImage.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, set[frozenset[str]]]:
    """12 distinct photos, plus two exact copies, two resized + re-encoded copies and a PNG re-encode;
    returns the folder and the planted duplicate pairs."""
    folder = tmp_path_factory.mktemp("planted")
    for i in range(12):
        distinct_photo(i).save(folder / f"p{i:02d}.jpg", quality=92)
    shutil.copyfile(folder / "p00.jpg", folder / "copy_of_p00.jpg")
    shutil.copyfile(folder / "p01.jpg", folder / "copy_of_p01.jpg")
    with PILImage.open(folder / "p02.jpg") as im:
        im.resize((90, 68), PILImage.Resampling.LANCZOS).save(folder / "small_p02.jpg", quality=70)
    with PILImage.open(folder / "p03.jpg") as im:
        im.resize((200, 150), PILImage.Resampling.BILINEAR).save(folder / "big_p03.jpg", quality=60)
    with PILImage.open(folder / "p04.jpg") as im:
        im.save(folder / "p04_again.png")
    pairs = {frozenset(p) for p in [("p00.jpg", "copy_of_p00.jpg"), ("p01.jpg", "copy_of_p01.jpg"),
                                    ("p02.jpg", "small_p02.jpg"), ("p03.jpg", "big_p03.jpg"),
                                    ("p04.jpg", "p04_again.png")]}
    return folder, pairs


def found_pairs(report) -> set[frozenset[str]]:
    return {frozenset(pair) for g in report.groups for pair in combinations([m.file_name for m in g.members], 2)}


def test_embeddings_are_float16_rows_per_photo_and_a_reimport_reuses_them(tmp_path, tiny_clip, planted):
    folder, _ = planted
    data_dir = tmp_path / "data"
    engine = make_engine(f"sqlite:///{(tmp_path / 'a.db').as_posix()}")
    import_folder(engine, images_dir=folder, name="photos")
    first = embed_dataset(engine, "photos", data_dir, EmbedSettings(map="none", model=tiny_clip, batch_size=4))
    assert (first.images, first.embedded, first.reused) == (17, 15, 0)  # two exact copies share a row
    matrix = EmbeddingStore.open(data_dir, "photos", tiny_clip).read("images")
    assert matrix.vectors.dtype == np.float16 and matrix.vectors.shape == (15, 32)
    assert matrix.hashes.shape == (15, HASH_BYTES)
    assert np.allclose(np.linalg.norm(matrix.vectors.astype(np.float32), axis=1), 1.0, atol=2e-3)
    with session_scope(engine) as session:
        before = image_vectors(session, "photos", tiny_clip, data_dir)
        by_name = dict(zip(before.file_names, before.vectors))

    # A fresh store, the same photos imported again: new image ids, every embedding reused.
    other = make_engine(f"sqlite:///{(tmp_path / 'b.db').as_posix()}")
    import_folder(other, images_dir=folder, name="photos")
    again = embed_dataset(other, "photos", data_dir, EmbedSettings(map="none", model=tiny_clip, batch_size=4))
    assert (again.embedded, again.reused) == (0, 17)
    with session_scope(other) as session:
        after = image_vectors(session, "photos", tiny_clip, data_dir)
        assert after.missing == 0 and len(after.image_ids) == 17
        for name, vector in zip(after.file_names, after.vectors):
            assert np.array_equal(vector, by_name[name])


def test_a_stopped_run_keeps_its_batches_and_the_next_run_finishes(tmp_path, tiny_clip, planted):
    folder, _ = planted
    engine = make_engine(f"sqlite:///{(tmp_path / 's.db').as_posix()}")
    import_folder(engine, images_dir=folder, name="photos")
    checks = []

    def stop_after_two_batches() -> bool:
        checks.append(1)
        return len(checks) > 2

    options = EmbedSettings(map="none", model=tiny_clip, batch_size=4)
    stopped = embed_dataset(engine, "photos", tmp_path, options, should_stop=stop_after_two_batches)
    assert stopped.stopped and stopped.embedded == 8
    assert len(EmbeddingStore.open(tmp_path, "photos", tiny_clip).read().keys) == 8
    rest = embed_dataset(engine, "photos", tmp_path, options)
    assert not rest.stopped and rest.embedded == 7
    keys = EmbeddingStore.open(tmp_path, "photos", tiny_clip).read().keys
    assert len(keys) == len(set(keys)) == 15


def test_a_row_cut_short_is_ignored_and_overwritten(tmp_path):
    store = EmbeddingStore(tmp_path / "s")
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 256, (3, HASH_BYTES), dtype=np.uint8)
    store.append("images", ["a", "b"], rng.normal(size=(2, 4)), hashes[:2])
    with (tmp_path / "s" / "images.f16").open("ab") as fh:
        fh.write(b"\x00\x01\x02")  # a run killed while writing the next batch
    with (tmp_path / "s" / "images.keys").open("a") as fh:
        fh.write("c")
    assert store.read().keys == ["a", "b"]
    store.append("images", ["d"], rng.normal(size=(1, 4)), hashes[2:])
    matrix = store.read()
    assert matrix.keys == ["a", "b", "d"] and matrix.vectors.shape == (3, 4)
    assert np.array_equal(matrix.hashes[2], hashes[2])


def test_duplicates_by_checksum_and_hash_have_full_precision_and_recall(tmp_path, tiny_clip, planted):
    folder, truth = planted
    engine = make_engine(f"sqlite:///{(tmp_path / 'd.db').as_posix()}")
    import_folder(engine, images_dir=folder, name="photos")
    with session_scope(engine) as session:
        only_checksums = find_duplicates(session, "photos", tmp_path, model=None)
    assert found_pairs(only_checksums) == {p for p in truth if "copy_of_p00.jpg" in p or "copy_of_p01.jpg" in p}
    embed_dataset(engine, "photos", tmp_path, EmbedSettings(map="none", model=tiny_clip))
    # The tiny model's random weights put unrelated pictures close together: its cosine evidence
    # is turned off here; the cosine path is checked with vectors built by hand below.
    with session_scope(engine) as session:
        report = find_duplicates(session, "photos", tmp_path, model=tiny_clip, threshold=None)
    found = found_pairs(report)
    precision = len(found & truth) / len(found)
    recall = len(found & truth) / len(truth)
    assert (precision, recall) == (1.0, 1.0), (found - truth, truth - found)
    kinds = {frozenset(m.file_name for m in g.members): g.kinds for g in report.groups}
    assert kinds[frozenset({"p00.jpg", "copy_of_p00.jpg"})] == ["checksum"]
    assert kinds[frozenset({"p02.jpg", "small_p02.jpg"})] == ["hash"]


def test_cosine_groups_from_vectors_built_by_hand_and_leakage_across_splits_comes_first(tmp_path, planted):
    folder, _ = planted
    engine = make_engine(f"sqlite:///{(tmp_path / 'c.db').as_posix()}")
    import_folder(engine, images_dir=folder, name="photos")
    with session_scope(engine) as session:
        images = {im.file_name: im for im in session.scalars(select(Image))}
        images["p05.jpg"].split, images["p06.jpg"].split = "train", "validation"
        rows = {im.checksum: name for name, im in images.items()}
    rng = np.random.default_rng(1)
    keys = sorted(rows)
    vectors = np.eye(len(keys), 64) + rng.normal(scale=0.01, size=(len(keys), 64))  # near-orthogonal
    at = {rows[k]: i for i, k in enumerate(keys)}
    vectors[at["p06.jpg"]] = vectors[at["p05.jpg"]] + 0.1 * vectors[at["p06.jpg"]]  # cosine ~0.995
    vectors[at["p08.jpg"]] = vectors[at["p07.jpg"]] + 0.6 * vectors[at["p08.jpg"]]  # cosine ~0.86
    hashes = rng.integers(0, 256, (len(keys), HASH_BYTES), dtype=np.uint8)  # no hash evidence
    EmbeddingStore.open(tmp_path, "photos", "hand-made").append("images", keys, vectors, hashes)
    with session_scope(engine) as session:
        strict = find_duplicates(session, "photos", tmp_path, model="hand-made", threshold=0.95)
        loose = find_duplicates(session, "photos", tmp_path, model="hand-made", threshold=0.8)
    strict_pairs = found_pairs(strict) - found_pairs(find_duplicates_checksums(engine, tmp_path))
    assert strict_pairs == {frozenset({"p05.jpg", "p06.jpg"})}
    assert frozenset({"p07.jpg", "p08.jpg"}) in found_pairs(loose)
    first = strict.groups[0]
    assert first.cross_split and {m.file_name for m in first.members} == {"p05.jpg", "p06.jpg"}
    assert first.kinds == ["cosine"]


def find_duplicates_checksums(engine, data_dir):
    with session_scope(engine) as session:
        return find_duplicates(session, "photos", data_dir, model=None)


def test_keep_one_records_curator_decisions_and_export_leaves_the_rest_out(demo_engine, tmp_path):
    from workbench.export import ExportRecipe, export_dataset, read_manifest
    from workbench.settings import get_settings

    with session_scope(demo_engine) as session:
        ids = dict(session.execute(select(Image.file_name, Image.id)).all())
    names = sorted(ids)
    from workbench.embeddings.duplicates import DuplicateGroup, Member

    group = DuplicateGroup([Member(ids[n], n, None) for n in names[:3]])
    with session_scope(demo_engine) as session:
        assert keep_one(session, "demo", group, ids[names[1]], "ana") == 3
        assert keep_one(session, "demo", group, ids[names[1]], "ana") == 0  # nothing new to record
        decided = latest_decisions(session, session.scalar(select(Image.dataset_id).limit(1)), "duplicate")
        assert {ids[n]: decided[ids[n]].decision for n in names[:3]} == {
            ids[names[0]]: "exclude", ids[names[1]]: "keep", ids[names[2]]: "exclude"}
        assert decided[ids[names[0]]].curator == "ana"
    settings = get_settings(data_dir=tmp_path / "data")
    result = export_dataset(demo_engine, settings, ExportRecipe(dataset="demo", resolution=64, people="ignore"),
                            tmp_path / "out", workers=1)
    manifest = read_manifest(tmp_path / "out")
    assert manifest["excluded"]["duplicate: excluded by a curator"] == [names[0], names[2]]
    assert manifest["counts"]["excluded"]["duplicate: excluded by a curator"] == 2
    assert result.images == len(names) - 2
    # A change of mind is a newer decision: the image is exported again.
    with session_scope(demo_engine) as session:
        record_decision(session, "demo", ids[names[0]], "duplicate", "keep", "bo")
    export_dataset(demo_engine, settings, ExportRecipe(dataset="demo", resolution=64, people="ignore"),
                   tmp_path / "again", workers=1)
    assert read_manifest(tmp_path / "again")["excluded"]["duplicate: excluded by a curator"] == [names[2]]


def test_the_text_vs_label_check_flags_a_planted_mislabel(demo_engine, tmp_path, tiny_clip):
    with session_scope(demo_engine) as session:
        names = list(session.scalars(select(Category.name).order_by(Category.id)))
        crops = session.execute(
            select(Annotation.id, Image.checksum, Annotation.bbox_x, Annotation.bbox_y, Annotation.bbox_w,
                   Annotation.bbox_h, Category.name).join(Image, Image.id == Annotation.image_id)
            .join(Category, Category.id == Annotation.category_id).order_by(Annotation.id)).all()
    # The real text tower of the tiny model; the crops' image embeddings are set by hand: each
    # is its own category's text embedding, except one pants crop that is a skirt's.
    text = encode_texts(load_model(tiny_clip), [f"a photo of a {n}" for n in names])
    column = {n: i for i, n in enumerate(names)}
    planted = next(c for c in crops if c.name == "pants")
    vectors = np.stack([text[column["skirt" if c is planted else c.name]] for c in crops])
    keys = [crop_key(c.checksum, c.bbox_x, c.bbox_y, c.bbox_w, c.bbox_h) for c in crops]
    EmbeddingStore.open(tmp_path, "demo", tiny_clip).append("crops", keys, vectors)
    with session_scope(demo_engine) as session:
        found = label_problems(session, "demo", tiny_clip, tmp_path)
    assert [(f.annotation_id, f.category, f.likely) for f in found] == [(planted.id, "pants", "skirt")]
    assert found[0].score > 0


def test_centroid_scores_single_out_the_image_far_from_its_category():
    rng = np.random.default_rng(3)
    centre = rng.normal(size=16)
    vectors = centre + rng.normal(scale=0.2, size=(20, 16))
    vectors[7] = rng.normal(size=16) * 3  # nothing like the others
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    distance, z = centroid_scores(vectors, ["dress"] * 20)
    assert int(np.argmax(z)) == 7 and z[7] > 3 and (np.delete(z, 7) < 2).all()
    _, few = centroid_scores(vectors[:3], ["hat"] * 3)
    assert np.isnan(few).all()  # too few images for a centroid


def test_outlier_queue_drops_decided_images(tmp_path, planted, monkeypatch):
    folder, _ = planted
    engine = make_engine(f"sqlite:///{(tmp_path / 'o.db').as_posix()}")
    import_folder(engine, images_dir=folder, name="photos")
    with session_scope(engine) as session:
        checksums = sorted({im.checksum for im in session.scalars(select(Image))})
        far = session.scalar(select(Image).where(Image.file_name == "p09.jpg"))
        far_id, far_sum = far.id, far.checksum
    rng = np.random.default_rng(4)
    vectors = np.ones((len(checksums), 8)) + rng.normal(scale=0.05, size=(len(checksums), 8))
    vectors[checksums.index(far_sum)] = -1.0
    EmbeddingStore.open(tmp_path, "photos", "m").append(
        "images", checksums, vectors, np.zeros((len(checksums), HASH_BYTES), np.uint8))
    # A folder import has no masks: every image counts as one category for this check.
    monkeypatch.setattr("workbench.embeddings.outliers.dominant_categories",
                        lambda session, dataset_id: {im: "top" for im in session.scalars(select(Image.id))})
    with session_scope(engine) as session:
        queue = review_queue(session, "photos", "m", tmp_path, "outlier")
        assert [c.file_name for c in queue] == ["p09.jpg"]
        record_decision(session, "photos", far_id, "outlier", "keep", "ana")
        assert review_queue(session, "photos", "m", tmp_path, "outlier") == []
        assert review_queue(session, "photos", "m", tmp_path, "outlier", include_decided=True)[0].decision == "keep"


def test_more_like_this_and_text_search_rank_by_cosine(tmp_path, tiny_clip, planted):
    folder, _ = planted
    engine = make_engine(f"sqlite:///{(tmp_path / 't.db').as_posix()}")
    import_folder(engine, images_dir=folder, name="photos")
    with session_scope(engine) as session:
        with pytest.raises(NotEmbedded, match="python -m workbench embed --dataset photos"):
            image_vectors(session, "photos", tiny_clip, tmp_path)
    embed_dataset(engine, "photos", tmp_path, EmbedSettings(map="none", model=tiny_clip))
    with session_scope(engine) as session:
        vectors = image_vectors(session, "photos", tiny_clip, tmp_path)
        target = int(vectors.image_ids[3])
        like = more_like(session, "photos", target, tiny_clip, tmp_path, k=5)
        found = text_search(session, "photos", "red sequin dress", tiny_clip, tmp_path, k=4)
    assert target not in [m.image_id for m in like] and len(like) == 5
    others = np.delete(vectors.vectors, 3, axis=0) @ vectors.vectors[3]
    assert np.allclose([m.score for m in like], np.sort(others)[::-1][:5], atol=1e-3)
    query = encode_texts(load_model(tiny_clip), ["red sequin dress"])[0]
    text_scores = vectors.vectors @ query
    assert np.allclose([m.score for m in found], np.sort(text_scores)[::-1][:4], atol=1e-3)


def test_the_index_is_exact_when_small_and_ivf_with_measured_recall_when_large():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 32))
    data = (centres[rng.integers(0, 40, 3000)] + rng.normal(scale=0.4, size=(3000, 32))).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    small = build_index(data[:500])
    assert small.kind == "exact"
    assert np.array_equal(small.search(data[:5], 3)[1][:, 0], np.arange(5))
    large = build_index(data, exact_below=1000)
    assert large.kind == "ivf" and large.recall >= 0.95 and 1 <= large.nprobe <= large.index.nlist
    queries = data[rng.choice(3000, 100, replace=False)]
    assert recall_at(large.search(queries, 10)[1], exact_neighbours(data, queries, 10)) >= 0.9


def test_the_map_falls_back_to_pca_without_umap_and_the_embed_job_saves_it(tmp_path, monkeypatch):
    from workbench.embeddings import projection

    rng = np.random.default_rng(5)
    data = np.concatenate([rng.normal(loc=5, size=(20, 16)), rng.normal(loc=-5, size=(20, 16))])
    monkeypatch.setattr(projection, "umap_available", lambda: False)
    coords, method = projection.project(data, "auto")
    assert method == "pca" and coords.shape == (40, 2)
    assert (np.sign(coords[:20, 0]) != np.sign(coords[20:, 0].mean())).all()  # the two clusters apart
    with pytest.raises(ValueError, match="umap-learn"):
        projection.project(data, "umap")
    store = EmbeddingStore(tmp_path / "s")
    store.append("images", [f"k{i}" for i in range(40)], data, np.zeros((40, HASH_BYTES), np.uint8))
    assert projection.compute_map(store, "auto") == ("pca", 40)
    saved = store.read_map("pca")
    assert set(saved) == {f"k{i}" for i in range(40)}
