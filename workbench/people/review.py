"""What the review page draws: the photo, its garment masks, and the proposals with their coverage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from sqlalchemy.orm import Session

from db.models import Dataset, Image
from db.people import PersonProposal
from workbench.formats.images import image_file
from workbench.people.queue import proposals_for

MASK_ALPHA = 0.45
# Proposal outline colours: red = probably unlabelled, amber = unsure, green = labelled.
UNLABELLED, UNSURE, LABELLED = (230, 40, 40), (240, 170, 0), (40, 170, 60)


@dataclass
class ShownProposal:
    """A proposal as the page lists it."""

    id: int
    detector: str
    kind: str
    box: list[float]
    score: float
    coverage: float | None
    unlabelled_score: float
    random_weights: bool = False

    @property
    def label(self) -> str:
        """``opencv body · conf 0.83 · covered 2% · unlabelled 0.81`` (and the tiny-model mark)."""
        covered = f" · covered {100 * self.coverage:.0f}%" if self.coverage is not None else ""
        return (f"#{self.id} {self.detector} {self.kind} · conf {self.score:.2f}{covered}"
                f" · unlabelled {self.unlabelled_score:.2f}"
                + (" · random weights (tiny test model)" if self.random_weights else ""))


def shown_proposals(session: Session, image_id: int) -> list[ShownProposal]:
    """The image's stored proposals, most probably unlabelled first."""
    return [_shown(p) for p in proposals_for(session, image_id)]


def _shown(p: PersonProposal) -> ShownProposal:
    return ShownProposal(p.id, p.detector, p.kind, [p.box_x, p.box_y, p.box_w, p.box_h], p.score, p.coverage,
                         p.unlabelled_score, bool((p.details or {}).get("random_weights")))


def review_image(session: Session, image_id: int, proposals: list[ShownProposal], *,
                 regions: list[list[float]] = (), masks: bool = True, max_side: int = 900) -> PILImage.Image:
    """The photo with garment masks tinted over it and each proposal outlined and labelled.

    ``regions`` (boxes already marked for masking) are drawn hatched in white.
    """
    from workbench.masks import render_image_mask

    image = session.get(Image, image_id)
    dataset = session.get(Dataset, image.dataset_id)
    path = image_file(Path(dataset.images_root), image.file_name)
    try:
        if path is None:  # a symlink leading out of the images folder: not shown
            raise FileNotFoundError(image.file_name)
        with PILImage.open(path) as src:
            photo = np.asarray(src.convert("RGB"), dtype=np.float32)
    except OSError:
        photo = np.full((image.height, image.width, 3), 90, np.float32)  # the file is gone: masks only
    if masks:
        rendered = render_image_mask(session, image_id, "fine")
        colours = rendered.colourised().astype(np.float32)
        if colours.shape[:2] == photo.shape[:2]:
            on = rendered.array > 0
            photo[on] = (1 - MASK_ALPHA) * photo[on] + MASK_ALPHA * colours[on]
    picture = PILImage.fromarray(photo.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    width = max(2, round(max(picture.size) / 250))
    font = ImageFont.load_default(size=max(12, round(max(picture.size) / 45)))
    for region in regions:
        x, y, w, h = region
        draw.rectangle([x, y, x + w, y + h], outline=(255, 255, 255), width=width)
        for k in range(0, int(w + h), 12):
            draw.line([(x + min(k, w), y + max(0, k - w)), (x + max(0, k - h), y + min(k, h))],
                      fill=(255, 255, 255), width=1)
    for p in proposals:
        x, y, w, h = p.box
        colour = LABELLED if p.kind == "labelled" else (
            UNLABELLED if p.unlabelled_score >= 0.5 else UNSURE if p.unlabelled_score >= 0.2 else LABELLED)
        draw.rectangle([x, y, x + w, y + h], outline=colour, width=width)
        covered = f" {100 * p.coverage:.0f}%" if p.coverage is not None and p.kind != "labelled" else ""
        text = f"#{p.id} {p.kind}{covered}"
        box = draw.textbbox((x + 3, y + 3), text, font=font)
        draw.rectangle(box, fill=colour)
        draw.text((x + 3, y + 3), text, fill=(255, 255, 255), font=font)
    scale = min(1.0, max_side / max(picture.size))
    if scale < 1.0:
        picture = picture.resize((round(picture.width * scale), round(picture.height * scale)))
    return picture
