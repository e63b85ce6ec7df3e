"""Aspect buckets in the trainer: every batch one size, every sample once per epoch, exact resume mid-epoch."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.tiny_models import write_export
from train.config import load_config
from train.controlnet import train
from train.data import BucketBatchSampler, ExportDataset, assign_buckets, read_records

pytestmark = pytest.mark.usefixtures("single_thread")

# buckets of the export at 64 px (workbench.buckets.bucket_sizes(64)): portrait, square, landscape
A, B, C, D = (48, 80), (64, 64), (80, 48), (56, 72)
SIZES = [A, B, C, A, D, A, B, C, A, B, A, B]  # the last one is held out


@pytest.fixture(scope="module")
def bucketed_export(tmp_path_factory) -> Path:
    """11 training images in four buckets (5, 3, 2 and 1 of them), one held out."""
    return write_export(tmp_path_factory.mktemp("buckets") / "export", "imagefolder", n=12, sizes=SIZES,
                        validation=1)


def _train_records(export: Path):
    return [r for r in read_records(export) if r.split == "train"]


def test_every_batch_is_one_size_and_every_sample_comes_once_per_epoch(bucketed_export):
    records = _train_records(bucketed_export)
    sizes = assign_buckets(records, 64, True)
    assert Counter(sizes) == {A: 5, B: 3, C: 2, D: 1}
    dataset = ExportDataset(records, 64, sizes=sizes, random_flip=True)
    sampler = BucketBatchSampler(sizes, 2, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
    orders = []
    for epoch in range(3):
        sampler.set_position(epoch)
        seen = []
        for batch in loader:  # collating would fail on two sizes in one batch
            height, width = batch["pixel_values"].shape[-2:]
            assert batch["mask"].shape[-2:] == (height, width)
            assert {sizes[i] for i in batch["index"].tolist()} == {(width, height)}
            seen.extend(batch["index"].tolist())
        assert sorted(seen) == list(range(len(records)))  # each sample exactly once
        orders.append(seen)
    assert orders[0] != orders[1]  # a new order every epoch
    assert len({len(b) for b in sampler.batches()}) == 2  # a bucket's last batch may be smaller


def test_square_crop_stays_an_option(bucketed_export):
    records = _train_records(bucketed_export)
    sizes = assign_buckets(records, 64, False)
    assert set(sizes) == {(64, 64)}
    item = ExportDataset(records, 64, sizes=sizes)[0]
    assert item["pixel_values"].shape == (3, 64, 64) and item["mask"].shape == (64, 64)


def test_processes_take_disjoint_batches_of_equal_count(bucketed_export):
    sizes = assign_buckets(_train_records(bucketed_export), 64, True)
    parts = [BucketBatchSampler(sizes, 2, seed=3, rank=r, world=2).batches() for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 3  # 7 batches: the seventh is left out
    flat = [[i for b in part for i in b] for part in parts]
    assert not set(flat[0]) & set(flat[1])


def test_a_bucketed_run_resumes_exactly_mid_epoch(tiny_sd, bucketed_export, tmp_path):
    common = dict(pretrained_model_name_or_path=str(tiny_sd), train_data_dir=str(bucketed_export), resolution=64,
                  train_batch_size=2, checkpointing_steps=2, validation_steps=100, num_validation_images=0,
                  validation_loss_samples=1, logging_steps=1, learning_rate=1e-4, report_to="none",
                  random_flip=True, record_sample_ids=True, checkpoints_total_limit=None,
                  cache_dir=str(tmp_path / "cache"))
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(load_config(None, dict(common, output_dir=str(whole), max_train_steps=9)))
    train(load_config(None, dict(common, output_dir=str(cut), max_train_steps=5)))
    shutil.rmtree(cut / "checkpoint-5")  # died after step 5: resume from step 4, in the middle of epoch 0
    state = json.loads((cut / "checkpoint-4" / "train_state.json").read_text())
    assert state["batches_per_epoch"] == 7 and 4 % 7 != 0
    train(load_config(None, dict(common, output_dir=str(cut), max_train_steps=9, resume_from_checkpoint="latest")))
    ids = [json.loads(x)["ids"] for x in (cut / "sample_ids" / "rank-0.jsonl").read_text().splitlines()]
    assert (cut / "sample_ids" / "rank-0.jsonl").read_text() == (whole / "sample_ids" / "rank-0.jsonl").read_text()
    records = {r.index: r for r in _train_records(bucketed_export)}
    sizes = dict(zip(records, assign_buckets(list(records.values()), 64, True)))
    assert all(len({sizes[i] for i in batch}) == 1 for batch in ids)  # one bucket per batch
    first_epoch = [i for batch in ids[:7] for i in batch]
    assert sorted(first_epoch) == sorted(records)  # epoch 0, across the resume: every sample once
    losses = lambda out: [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert losses(cut) == pytest.approx(losses(whole), rel=1e-5)
