"""Captioning as a job: batched, with progress and ETA, resumable, cancellable, and shardable
across processes under ``accelerate launch``.

An image is skipped when it already has a caption from the same source, model and settings, so
a cancelled or crashed run continues where it stopped. Under ``accelerate launch`` (several GPUs
or machines) every process takes its share of the remaining images and appends its results to
its own file (``data_dir/captions/shards/...``); the main process merges the files into the store
once all are done (and merges files a stopped run left behind when the next run starts). Several
machines need that folder on a shared filesystem.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from db.engine import session_scope
from db.models import Image
from workbench.captions.base import Captioner, CaptionerError, open_rgb, settings_key
from workbench.captions.dataset_prompts import DatasetPromptSettings, dataset_prompts
from workbench.datasets import get_dataset
from workbench.formats.images import image_file
from workbench.progress import ProgressFn, StopFn, check_stop, report
from workbench.settings import Settings

log = logging.getLogger(__name__)

CAPTIONERS = ("dataset", "clip-fast", "clip-classic", "clip-best", "clip-negative", "blip", "kosmos2")


@dataclass
class RunReport:
    """What a run did: images captioned here, skipped as already done, and the total."""

    captioned: int = 0
    skipped: int = 0
    total: int = 0
    stored: int = 0
    seconds: float = 0.0
    sources: list[str] = field(default_factory=list)
    process: int = 0
    processes: int = 1

    @property
    def images_per_second(self) -> float:
        """Throughput of this process."""
        return self.captioned / self.seconds if self.seconds else 0.0


class Eta:
    """Rate and time left for progress messages ("12/40 images, 3.1 img/s, ETA 9 s")."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def message(self, done: int, total: int | None) -> str:
        """The message for ``done`` of ``total``."""
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 and done else 0.0
        text = f"{done}/{total if total is not None else '?'} images"
        if rate:
            text += f", {rate:.2f} img/s"
            if total:
                text += f", ETA {max(0, total - done) / rate:.0f} s"
        return text


@dataclass
class Shard:
    """This process's place among the processes of a run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = lambda: None

    @property
    def is_main(self) -> bool:
        """Whether this process merges results into the store."""
        return self.rank == 0


def current_shard() -> Shard:
    """This process's shard: from accelerate's state under ``accelerate launch``, else a single one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Shard()
    import torch
    from accelerate import PartialState

    # Without a GPU the processes still talk (gloo), e.g. `accelerate launch --multi_gpu` on CPUs.
    state = PartialState(cpu=not torch.cuda.is_available())
    return Shard(state.process_index, state.num_processes, state.wait_for_everyone)


def captioner_model_kind(captioner: str) -> str | None:
    """The model registry kind a captioner's ``--model`` names (``None``: it takes no model)."""
    if captioner.startswith("clip-"):
        return "clip"
    return {"blip": "caption", "kosmos2": "kosmos2"}.get(captioner)


def make_captioner(kind: str, *, engine: Engine, settings: Settings, dataset: str, model: str | None = None,
                   batch_size: int = 8, options: dict[str, Any] | None = None) -> Captioner:
    """The captioner for a CLI/page choice (``clip-fast`` ..., ``blip``, ``kosmos2``); ``options`` are
    its settings (e.g. ``caption_model``, ``prefix``, ``vocabulary``, ``data_path``)."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if kind.startswith("clip-"):
        from workbench.captions.interrogator import ClipInterrogatorCaptioner, InterrogatorSettings
        from workbench.captions.vocabulary import fashion_vocabulary, load_extra_vocabulary

        modes = options.pop("modes", None) or [kind.removeprefix("clip-")]
        options = {**tiny_clip_defaults(model or InterrogatorSettings().clip_model), **options}
        s = InterrogatorSettings(**({"clip_model": model} if model else {}), modes=modes, **options)
        fashion = None
        if s.vocabulary != "art":
            with session_scope(engine) as session:
                fashion = fashion_vocabulary(session, dataset, load_extra_vocabulary(settings))
        return ClipInterrogatorCaptioner(s, batch_size=batch_size, fashion=fashion,
                                         cache_dir=Path(settings.data_dir) / "cache" / "clip-interrogator")
    if kind == "blip":
        from workbench.captions.blip import BlipCaptioner, BlipSettings

        return BlipCaptioner(BlipSettings(**({"model": model} if model else {}), **options), batch_size=batch_size)
    if kind == "kosmos2":
        from workbench.captions.kosmos2 import Kosmos2Captioner, Kosmos2Settings

        return Kosmos2Captioner(Kosmos2Settings(**({"model": model} if model else {}), **options), batch_size=batch_size)
    raise CaptionerError(f"unknown captioner {kind!r}; choose from {', '.join(CAPTIONERS)}")


def uses_tiny_model(captioner: Captioner) -> bool:
    """Whether any model of ``captioner`` is a tiny random-weight test model (its captions say so)."""
    from workbench.models import is_tiny, resolve

    settings = getattr(captioner, "settings", None)
    refs = [(getattr(settings, "clip_model", None), "clip"), (getattr(settings, "caption_model", None), "caption"),
            (getattr(settings, "model", None), "kosmos2" if "kosmos2" in captioner.sources else "caption")]
    return any(is_tiny(path) for ref, kind in refs if ref and Path(path := resolve(ref, kind)).exists())


def tiny_clip_defaults(clip_model: str) -> dict[str, Any]:
    """For a tiny test CLIP: its own short label lists and the tiny BLIP as caption model (the
    package's 100k flavours would take minutes to embed); nothing for other models."""
    from workbench.models import resolve, tiny_info

    source = Path(resolve(clip_model, "clip"))
    info = tiny_info(source) if source.exists() else {}
    out: dict[str, Any] = {}
    if info.get("labels"):
        out["data_path"] = str(source / info["labels"])
    if info.get("caption_model"):
        out["caption_model"] = info["caption_model"]
    return out


def store_dataset_prompts(engine: Engine, dataset_name: str, prompt_settings: DatasetPromptSettings | None = None,
                          progress: ProgressFn | None = None) -> RunReport:
    """Store every image's dataset prompt as a caption of source ``dataset`` (skipping stored ones)."""
    from workbench.captions.store import done_image_ids, save_captions

    prompt_settings = prompt_settings or DatasetPromptSettings()
    values = prompt_settings.model_dump()
    key = settings_key("annotations", values)
    start = time.monotonic()
    with session_scope(engine) as session:
        dataset = get_dataset(session, dataset_name)
        prompts = dataset_prompts(session, dataset.id, prompt_settings)
        done = done_image_ids(session, dataset.id, "dataset", key)
        rows = [{"image_id": i, "source": "dataset", "model": "annotations", "settings": values,
                 "settings_key": key, "text": text} for i, text in prompts.items() if i not in done]
        stored = save_captions(session, dataset.id, rows)
    report(progress, len(prompts), len(prompts))
    return RunReport(captioned=len(rows), skipped=len(done), total=len(prompts), stored=stored,
                     seconds=time.monotonic() - start, sources=["dataset"])


def _shard_dir(settings: Settings, dataset_id: int, keys: dict[str, str]) -> Path:
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]
    return Path(settings.data_dir) / "captions" / "shards" / f"{dataset_id}-{digest}"


def merge_shards(engine: Engine, folder: Path) -> int:
    """Merge every shard file of a run folder into the store, then remove them; returns rows added."""
    from workbench.captions.store import save_captions

    added = 0
    for path in sorted(folder.glob("rank-*.jsonl")):
        rows = []
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut off by a killed process
                    log.warning("%s: skipped an incomplete line", path)
        by_dataset: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            by_dataset.setdefault(row.pop("dataset_id"), []).append(row)
        with session_scope(engine) as session:
            for dataset_id, part in by_dataset.items():
                added += save_captions(session, dataset_id, part)
        path.unlink()
    return added


def run_captioning(engine: Engine, settings: Settings, dataset_name: str, captioner: Captioner, *,
                   progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                   shard: Shard | None = None, limit: int | None = None, run_name: str = "") -> RunReport:
    """Caption the dataset's images that ``captioner`` has not captioned yet, a batch at a time.

    Results are saved after every batch (one process: straight into the store; several: into this
    process's shard file, merged by the main process at the end), so cancelling (``should_stop``,
    checked between batches) loses at most the batch in flight.
    """
    shard = shard or current_shard()
    keys = {source: settings_key(captioner.model, captioner.settings_for(source)) for source in captioner.sources}
    with session_scope(engine) as session:
        dataset = get_dataset(session, dataset_name)
        dataset_id, root = dataset.id, Path(dataset.images_root)
    folder = _shard_dir(settings, dataset_id, keys)
    if shard.is_main and folder.exists():
        merge_shards(engine, folder)  # what an earlier, stopped run left behind
    shard.barrier()
    from workbench.captions.store import done_image_ids

    with session_scope(engine) as session:
        images = list(session.execute(select(Image.id, Image.file_name).where(Image.dataset_id == dataset_id)
                                      .order_by(Image.id)).all())
        done = [done_image_ids(session, dataset_id, source, key) for source, key in keys.items()]
    complete = set.intersection(*done) if done else set()
    todo = [(i, name) for i, name in images if i not in complete]
    if limit is not None:
        todo = todo[:limit]
    mine = todo[shard.rank::shard.world]
    result = RunReport(skipped=len(complete), total=len(images), sources=list(captioner.sources),
                       process=shard.rank, processes=shard.world)
    settings_of = {source: captioner.settings_for(source) for source in captioner.sources}
    tiny = uses_tiny_model(captioner)
    shard_file = None
    if shard.world > 1:
        folder.mkdir(parents=True, exist_ok=True)
        shard_file = folder / f"rank-{shard.rank}.jsonl"
    label = (run_name or "run") + (f"/rank-{shard.rank}" if shard.world > 1 else "")
    start = time.monotonic()
    eta = Eta()
    report(progress, 0, len(mine))
    batch_size = max(1, captioner.batch_size)
    try:
        for first in range(0, len(mine), batch_size):
            check_stop(should_stop)
            batch = mine[first:first + batch_size]
            pictures = []
            for _, file_name in batch:
                path = image_file(root, file_name)
                if path is None:
                    raise CaptionerError(f"dataset {dataset_name!r}: image {file_name!r} leads out of its images folder {root}")
                try:
                    pictures.append(open_rgb(path))
                except OSError as exc:
                    raise CaptionerError(f"dataset {dataset_name!r}: cannot read image {root / file_name}: {exc}") from exc
            outputs = captioner.caption_batch(pictures)
            rows = []
            for source, results in outputs.items():
                for (image_id, _), res in zip(batch, results):
                    rows.append({
                        "dataset_id": dataset_id, "image_id": image_id, "source": source, "model": captioner.model,
                        "settings": settings_of[source], "settings_key": keys[source], "text": res.text,
                        "extra": {**res.extra, **({"random_weights": True} if tiny else {})}, "run": label,
                        "phrases": [{"text": p.text, "start": p.start, "end": p.end, "box": list(p.box)} for p in res.phrases],
                    })
            if shard_file is not None:
                with shard_file.open("a", encoding="utf-8") as handle:
                    handle.write("".join(json.dumps(row) + "\n" for row in rows))
            else:
                from workbench.captions.store import save_captions

                with session_scope(engine) as session:
                    result.stored += save_captions(session, dataset_id, [{k: v for k, v in r.items() if k != "dataset_id"} for r in rows])
            result.captioned += len(batch)
            report(progress, result.captioned, len(mine))
            log.info("captions %s: %s", ",".join(captioner.sources), eta.message(result.captioned, len(mine)))
    finally:
        result.seconds = time.monotonic() - start
    shard.barrier()
    if shard.is_main and folder.exists():
        result.stored += merge_shards(engine, folder)
    return result
