"""Where each step of the road from raw data to a trained model stands, for a dataset (Home).

This module sits above the areas it summarises (datasets, people, captions, export, training
jobs) and nothing in the library imports it, so the library has no import cycle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.jobs import Job
from db.models import Annotation
from workbench.captions.review import review_progress as captions_progress
from workbench.datasets import dataset_stats, get_dataset
from workbench.export import list_exports
from workbench.people.queue import review_progress as people_progress
from workbench.schemes import list_schemes


@dataclass
class PipelineStep:
    """Where one step of the road from raw data to a trained model stands."""

    step: str
    done: int
    total: int
    note: str

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form for JSON and tables."""
        return asdict(self)


def pipeline_status(session: Session, name: str) -> list[PipelineStep]:
    """The state of each pipeline step for a dataset, so a curator sees what is next."""
    stats = dataset_stats(session, name)
    images = stats["images"]
    annotated = session.scalar(
        select(func.count(func.distinct(Annotation.image_id))).where(
            Annotation.dataset_id == get_dataset(session, name).id
        )
    ) or 0
    schemes = len(list_schemes(session))
    people_decided, people_flagged = people_progress(session, name)
    captions_reviewed, _ = captions_progress(session, name)
    exports = list_exports(session, name)
    exports_done = sum(1 for e in exports if e.status == "finished")
    train_jobs = session.scalars(select(Job.status).where(Job.kind == "train")).all()
    return [
        PipelineStep("imported", images, images, f"{stats['annotations']} masks, "
                     f"{stats['last_import_rejected']} rows rejected in the last import"),
        PipelineStep("images with masks", annotated, images, "images that have at least one garment mask"),
        PipelineStep("mask schemes", schemes, schemes, "the four built-ins plus saved schemes (Inspect page)"),
        PipelineStep("people flags reviewed", people_decided, people_flagged,
                     "flagged images decided on the People page" if people_flagged
                     else "no image flagged yet: run a detector on the People page"),
        PipelineStep("captions reviewed", captions_reviewed, images,
                     "images with a reviewed caption: accepted, edited or rejected (Captions page)"),
        PipelineStep("exports", exports_done, len(exports), "finished exports of this dataset (Export page)"),
        PipelineStep("training jobs", sum(1 for st in train_jobs if st == "finished"), len(train_jobs),
                     "finished training jobs, all datasets (Train page)"),
    ]
