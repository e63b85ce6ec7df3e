"""Controllability of a trained ControlNet: does it dress people as its masks say?

For one checkpoint, the masks and prompts of its training export's validation split (the
manifest's items with ``split=validation``, their prompts from ``metadata.jsonl`` /
``prompt.json``) each condition N generations with fixed seeds; a segmenter reads the generated
images back into the same scheme, and the agreement with the conditioning mask is scored as
dataset-level per-class IoU and mIoU (the measure of the ControlNet and ControlNet++ papers).
The defaults follow their protocol (UniPC, 20 steps, guidance 7.5, 512 px) so numbers compare.

Beside it: the same segmenter on the real validation photos (the ceiling: a perfect ControlNet
cannot score above what the judge reads off real photos), and a CLIP score between prompt and
image when a CLIP model is given. Generation reuses :mod:`workbench.generate` (mask fitting,
control input, pipeline), segmentation :mod:`workbench.segment`, IoU
:mod:`workbench.segment.metrics`. A result is a :class:`db.evaluations.Evaluation` row; the
worst cases are kept as mask | generated | segmentation PNGs under ``data_dir/evaluations/``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image as PILImage
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.evaluations import Evaluation
from workbench.files import write_atomically
from workbench.progress import ProgressFn, StopFn, check_stop, report
from workbench.segment.metrics import ConfusionMatrix, iou_report

EVALUATIONS_DIR = "evaluations"


class EvaluateError(ValueError):
    """An evaluation that cannot run; the message names the thing and the fix."""


class EvaluateRequest(BaseModel):
    """What decides an evaluation (stored with its result)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(description="A training run's checkpoint-N folder, its output folder, or a ControlNet folder.")
    segmenter: str = Field("u2net-cloth", description="SegFormer folder or hub id, or u2net-cloth[:PATH].")
    base_model: str | None = Field(None, description="Default: the base model the ControlNet was trained on.")
    split: str = "validation"
    per_mask: int = Field(1, ge=1, le=100, description="Images generated per mask (seeds seed, seed+1, ...).")
    seed: int = Field(0, ge=0)
    steps: int = Field(20, ge=1, le=1000)
    guidance: float = Field(7.5, ge=0.0, le=50.0)
    scheduler: Literal["unipc", "ddim", "euler-a", "dpm++2m"] = "unipc"
    resolution: int = Field(512, ge=8, le=4096)
    limit: int | None = Field(None, ge=1, description="At most this many masks (the first of the split).")
    clip_model: str | None = Field(None, description="open_clip model (registry name, ARCH/TAG or folder).")
    worst: int = Field(4, ge=0, le=50, description="How many worst cases to keep as images.")
    device: str = "auto"

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        from workbench.generate import GenerateRequest

        return GenerateRequest._multiple_of_8(value)  # the one rule (and message) of generation


# -- scoring -------------------------------------------------------------------------------------------
@dataclass
class Agreement:
    """Masks against segmentations: dataset-level IoU over all pairs, and each pair's own mIoU."""

    legend: dict[str, str]  # "<value>": class name
    confusion: ConfusionMatrix = field(init=False)

    def __post_init__(self) -> None:
        values = [int(v) for v in self.legend]
        self.confusion = ConfusionMatrix(max(values) + 1, ignore_index=None)

    def add(self, mask: np.ndarray, segmentation: np.ndarray) -> float | None:
        """Count one pair into the totals; returns that pair's own mIoU (for finding worst cases)."""
        self.confusion.add(mask, segmentation)
        return ConfusionMatrix(self.confusion.num_classes, ignore_index=None).add(mask, segmentation).miou()

    def report(self) -> dict[str, Any]:
        """mIoU, mIoU without background, pixel accuracy and IoU per class name (the scheme's classes only)."""
        result = iou_report(self.confusion, {int(k): v for k, v in self.legend.items()})
        result["iou"] = {name: result["iou"][name] for _value, name in
                         sorted(self.legend.items(), key=lambda kv: int(kv[0]))}
        return result


def clip_score(clip: Any, image: PILImage.Image, prompt: str) -> float:
    """CLIPScore of an image and its prompt: 100 x max(cosine of their CLIP embeddings, 0)."""
    import torch

    with torch.inference_mode():
        pixels = clip.preprocess(image.convert("RGB")).unsqueeze(0).to(clip.device)
        image_features = clip.model.encode_image(pixels).float()
        text_features = clip.model.encode_text(clip.tokenize([prompt]).to(clip.device)).float()
        cosine = torch.nn.functional.cosine_similarity(image_features, text_features).item()
    return 100.0 * max(cosine, 0.0)


# -- what is evaluated -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A checkpoint, what it was trained on, and the export records it is evaluated on."""

    info: Any  # workbench.generate.ControlNetInfo
    run_dir: Path | None
    records: list[Any]  # train.data.Record
    base_model: str


def evaluation_target(request: EvaluateRequest) -> Target:
    """The checked checkpoint and its export's split records (clear errors for anything unusable)."""
    from train.data import DataError, read_records
    from workbench.generate import GenerateError, _training_config, resolve_controlnet

    try:
        info = resolve_controlnet(request.checkpoint)
    except GenerateError as exc:
        raise EvaluateError(str(exc)) from None
    if info.export_dir is None:
        raise EvaluateError(f"ControlNet {info.path} names no training export (no train_config.json with a "
                            "train_data_dir whose manifest.json exists beside it), so it has no validation masks to "
                            "be scored on; evaluate a checkpoint of a workbench training run whose export is still there")
    if not info.legend:
        raise EvaluateError(f"export {info.export_dir}: manifest.json names no class legend for scheme "
                            f"{info.scheme}; re-export it with the workbench (Export page or `export run`)")
    try:
        records = read_records(info.export_dir, 0.0)
    except DataError as exc:
        raise EvaluateError(f"export {info.export_dir} cannot be read: {exc}") from None
    chosen = [r for r in records if r.split == request.split]
    if not chosen:
        found = ", ".join(sorted({r.split for r in records})) or "none"
        raise EvaluateError(f"export {info.export_dir} has no {request.split!r} split (its splits: {found}); "
                            "re-export it with a validation fraction above 0 (Export page, or `export run "
                            "--validation-fraction 0.1`) and train on that export")
    base = request.base_model or info.base_model
    if not base:
        raise EvaluateError(f"ControlNet {info.path}: its training config names no base model; give one (--base)")
    run_dir, _config = _training_config(info.path)
    return Target(info, run_dir, chosen[:request.limit] if request.limit else chosen, str(base))


def evaluations_dir(data_dir: Path) -> Path:
    """Where evaluations keep their worst cases' images."""
    return Path(data_dir) / EVALUATIONS_DIR


@dataclass(order=True)
class Case:
    """One generated image's score and what it takes to show it."""

    miou: float
    index: int
    seed: int = field(compare=False)
    prompt: str = field(compare=False)
    mask: np.ndarray = field(compare=False, repr=False)
    generated: PILImage.Image = field(compare=False, repr=False)
    segmentation: np.ndarray = field(compare=False, repr=False)


def _keep_worst(cases: list[Case], case: Case, count: int) -> None:
    cases.append(case)
    cases.sort()
    del cases[count:]


def _png(image: PILImage.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_worst(cases: list[Case], palette: np.ndarray, folder: Path) -> list[dict[str, Any]]:
    """Write each worst case's mask, generated image and segmentation (colourised) and describe them."""
    saved = []
    for rank, case in enumerate(cases, start=1):
        stem = folder / f"worst{rank}-mask{case.index}-seed{case.seed}"
        files = {"mask": PILImage.fromarray(palette[case.mask]), "generated": case.generated,
                 "segmentation": PILImage.fromarray(palette[case.segmentation])}
        paths = {kind: str(write_atomically(Path(f"{stem}-{kind}.png"), _png(image))) for kind, image in files.items()}
        saved.append({"rank": rank, "miou": case.miou, "record": case.index, "seed": case.seed,
                      "prompt": case.prompt, **paths})
    return saved


# -- running it --------------------------------------------------------------------------------------------
def evaluate(engine: Engine, data_dir: Path, request: EvaluateRequest, *, segmenter: Any = None,
             progress: ProgressFn | None = None, should_stop: StopFn | None = None,
             job_id: int | None = None) -> Evaluation:
    """Generate, segment and score one checkpoint on its export's split; store and return the result.

    ``segmenter`` overrides ``request.segmenter`` with a segmenter already built (tests, the
    trainer's hook). ``progress(done, total)`` counts generated images; ``should_stop`` is
    checked between them (nothing is stored for a stopped evaluation).
    """
    from workbench.generate import (GenerateError, GenerateRequest, MaskSource, assemble, check_mask,
                                    control_tensor, file_mask, load_model, pick_device, run_pipeline)
    from workbench.segment.loaders import SegmentError
    from workbench.segment.predict import open_segmenter, to_scheme

    started = time.perf_counter()
    target = evaluation_target(request)
    info = target.info
    device, dtype = pick_device(request.device)
    try:
        judge = segmenter if segmenter is not None else open_segmenter(request.segmenter, device=str(device))
    except SegmentError as exc:
        raise EvaluateError(str(exc)) from None
    scheme_classes = {name: int(value) for value, name in info.legend.items()}
    notes: list[str] = []
    clip = None
    if request.clip_model:
        from workbench.captions.interrogator import load_clip

        clip = load_clip(request.clip_model, str(device))
    else:
        notes.append("no CLIP model given: CLIP score skipped (give --clip-model, e.g. a registry CLIP)")
    seeds = [request.seed + k for k in range(request.per_mask)]
    try:
        base = load_model("base", target.base_model, dtype)
        controlnet = load_model("controlnet", info.path, dtype)
    except GenerateError as exc:
        raise EvaluateError(str(exc)) from None
    generated, ceiling = Agreement(info.legend), Agreement(info.legend)
    worst: list[Case] = []
    clip_scores: list[float] = []
    total = len(target.records) * len(seeds)
    done = 0
    report(progress, 0, total)
    for record in target.records:
        check_stop(should_stop)
        source = MaskSource(kind="file", path=str(record.mask), photo=str(record.photo))
        generate_request = GenerateRequest(
            base_model=target.base_model, controlnets=[str(info.path)], mask=source, prompt=record.prompt,
            seeds=seeds, steps=request.steps, guidance=request.guidance, scheduler=request.scheduler,
            resolution=request.resolution, device=request.device)
        try:
            mask = file_mask(info, source, request.resolution)
            check_mask(mask, info)
        except GenerateError as exc:
            raise EvaluateError(f"export {info.export_dir}, {record.mask.name}: {exc}") from None
        prepared = assemble(generate_request, info, mask, base, [controlnet], [control_tensor(mask, info)], [1.0],
                            request.resolution, data_dir)
        try:
            if mask.photo is not None:  # the judge on the real photo, at the same geometry: the ceiling
                ceiling.add(mask.array, to_scheme(judge.predict([mask.photo])[0], judge.scheme, info.scheme,
                                                  scheme_classes))
            for seed in seeds:
                check_stop(should_stop)
                image = run_pipeline(prepared, generate_request, seed)
                segmentation = to_scheme(judge.predict([image])[0], judge.scheme, info.scheme, scheme_classes)
                score = generated.add(mask.array, segmentation)
                if request.worst:
                    _keep_worst(worst, Case(score if score is not None else 0.0, record.index, seed, record.prompt,
                                            mask.array, image, segmentation), request.worst)
                if clip is not None:
                    clip_scores.append(clip_score(clip, image, record.prompt))
                done += 1
                report(progress, done, total)
        except SegmentError as exc:
            raise EvaluateError(f"segmenter {request.segmenter}: {exc}") from None
    result, real = generated.report(), ceiling.report()
    folder = evaluations_dir(data_dir) / (time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6])
    palette = mask.palette
    settings = {**request.model_dump(exclude={"checkpoint", "segmenter", "base_model", "split"}),
                "seeds": seeds, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
                "conditioning": info.conditioning, "label": info.label}
    with session_scope(engine) as session:
        row = Evaluation(
            job_id=job_id, run_dir=str(target.run_dir.resolve()) if target.run_dir else None,
            controlnet=str(info.path), checkpoint_step=info.step, base_model=target.base_model,
            export_manifest_sha256=info.manifest_sha256, scheme=info.scheme, segmenter=str(judge.source),
            split=request.split, masks=len(target.records), images=done, miou=result["miou"],
            miou_foreground=result["miou_foreground"], pixel_accuracy=result["pixel_accuracy"], iou=result["iou"],
            clip_score=float(np.mean(clip_scores)) if clip_scores else None, ceiling_miou=real["miou"],
            ceiling=real if ceiling.confusion.matrix.any() else {}, settings=settings,
            worst_cases=save_worst(worst, palette, folder), notes=notes,
            seconds=round(time.perf_counter() - started, 3))
        session.add(row)
        session.flush()
        session.expunge(row)
    return row


# -- reading back --------------------------------------------------------------------------------------------
def list_evaluations(session: Session, *, run_dir: str | Path | None = None, limit: int = 200) -> list[Evaluation]:
    """Evaluations, newest first, optionally of one training run's output folder."""
    query = select(Evaluation).order_by(Evaluation.id.desc()).limit(limit)
    if run_dir is not None:
        query = query.where(Evaluation.run_dir == str(Path(run_dir).resolve()))
    return list(session.scalars(query))


def miou_curve(session: Session, run_dir: str | Path) -> list[dict[str, Any]]:
    """mIoU (and ceiling, CLIP score) per checkpoint step of a run: the newest evaluation of each step, by step."""
    newest: dict[int | None, Evaluation] = {}
    for row in list_evaluations(session, run_dir=run_dir):
        newest.setdefault(row.checkpoint_step, row)
    rows = sorted((r for r in newest.values() if r.checkpoint_step is not None), key=lambda r: r.checkpoint_step)
    return [{"step": r.checkpoint_step, "miou": r.miou, "ceiling_miou": r.ceiling_miou, "clip_score": r.clip_score,
             "evaluation": r.id} for r in rows]


def summary(row: Evaluation) -> dict[str, Any]:
    """An evaluation as plain data (``--json``, the page's table)."""
    return {"id": row.id, "created_at": row.created_at, "job_id": row.job_id, "run_dir": row.run_dir,
            "controlnet": row.controlnet, "checkpoint_step": row.checkpoint_step, "base_model": row.base_model,
            "export_manifest_sha256": row.export_manifest_sha256, "scheme": row.scheme, "segmenter": row.segmenter,
            "split": row.split, "masks": row.masks, "images": row.images, "miou": row.miou,
            "miou_foreground": row.miou_foreground, "pixel_accuracy": row.pixel_accuracy, "iou": row.iou,
            "clip_score": row.clip_score, "ceiling_miou": row.ceiling_miou, "ceiling": row.ceiling,
            "settings": row.settings, "worst_cases": row.worst_cases, "notes": row.notes, "seconds": row.seconds}


def evaluate_argv(request: EvaluateRequest) -> list[str]:
    """The ``python -m workbench`` arguments that run ``request`` in the foreground (what a job runs)."""
    return ["evaluate", "--request-json", request.model_dump_json()]


def start_evaluation(engine: Engine, settings: Any, request: EvaluateRequest, target: Target | None = None) -> int:
    """Start ``request`` as a background job (kind ``evaluate``); returns the job id."""
    from workbench.jobs import start_job

    target = target or evaluation_target(request)
    return start_job(engine, settings, kind="evaluate", argv=evaluate_argv(request),
                     details={"checkpoint": request.checkpoint, "images": len(target.records) * request.per_mask,
                              "output_dir": str(target.run_dir) if target.run_dir else None})


def evaluate_checkpoint_job(folder: Path, config: Any) -> str:
    """The trainer's checkpoint hook: a small evaluation of ``folder`` as a job in the store the
    environment names (``WORKBENCH_DB_URL``), at the training resolution, with ``config``'s
    ``evaluate_*`` keys (segmenter, masks, images per mask, steps). Returns the line to log; an
    evaluation that cannot start is logged, never a reason to stop training."""
    from db.engine import make_engine
    from workbench.settings import get_settings

    settings = get_settings()
    engine = make_engine(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    request = EvaluateRequest(checkpoint=str(folder), segmenter=config.evaluate_segmenter,
                              per_mask=config.evaluate_per_mask, limit=config.evaluate_limit,
                              steps=config.evaluate_inference_steps, resolution=config.resolution)
    try:
        return f"evaluation job {start_evaluation(engine, settings, request)} started"
    except EvaluateError as exc:
        return f"no evaluation: {exc}"
    finally:
        engine.dispose()
