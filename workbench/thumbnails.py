"""A disk cache of photo thumbnails and rendered conditioning masks, keyed by content.

Paging through a gallery or the inspector decodes each photo and renders each mask once:
the second time the file is already under ``settings.data_dir/cache``.

Keys are content, not names, so a stale entry is never served:
- a thumbnail: the image's checksum when the import hashed it, otherwise its file size and
  modification time (what a changed file changes), plus the requested size;
- a mask: the image's annotations (ids, areas and run-length text digest), the image size,
  the scheme's name AND version, and the output size.
Entries are written beside their target and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
from io import BytesIO
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Annotation, Dataset, Image
from workbench.files import write_atomically
from workbench.formats.images import ImageProblem, resolve_image_path
from workbench.masks import encode_palette_png, render_image_mask
from workbench.schemes import get_scheme, scheme_for_dataset

THUMBNAIL_QUALITY = 85


class ImageMissing(FileNotFoundError):
    """An image whose file is gone (moved or deleted after import); the message says where."""


@dataclass(frozen=True)
class CachedMask:
    """A rendered mask in the cache: its palette PNG, legend and what the scheme left out."""

    path: Path
    legend: dict[str, str]
    unmapped: list[str]
    scheme_name: str
    scheme_version: int
    hit: bool

    def rgb(self) -> np.ndarray:
        """The mask in its palette colours, ``(h, w, 3)`` uint8."""
        with PILImage.open(self.path) as im:
            return np.asarray(im.convert("RGB"))

    def values(self) -> np.ndarray:
        """The class values, ``(h, w)`` uint8."""
        with PILImage.open(self.path) as im:
            return np.asarray(im)

    def colours(self) -> dict[int, tuple[int, int, int]]:
        """The colour of every value in the legend, as the PNG's palette has it."""
        with PILImage.open(self.path) as im:
            flat = im.getpalette() or []
        return {int(v): tuple(flat[3 * int(v) : 3 * int(v) + 3]) for v in self.legend}


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]


def image_file(dataset: Dataset, image: Image) -> Path:
    """The photo's path; :class:`ImageMissing` (naming the path and the fix) when it is gone."""
    try:
        path = resolve_image_path(Path(dataset.images_root), image.file_name)
    except ImageProblem as exc:
        raise ImageMissing(str(exc)) from None
    if not path.is_file():
        raise ImageMissing(
            f"image {image.file_name!r} of dataset {dataset.name!r} is missing: {path} does not "
            f"exist (moved or deleted after import). Put the file back, or re-import the dataset "
            f"from where its images are now"
        )
    return path


class ThumbnailCache:
    """Thumbnails (JPEG) and rendered masks (palette PNG) under one cache folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def for_settings(cls, settings) -> ThumbnailCache:
        """The cache of a workbench: ``settings.data_dir / "cache"``."""
        return cls(Path(settings.data_dir) / "cache")

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / key[:2] / f"{key}{suffix}"

    # -- photos ----------------------------------------------------------------------------

    def thumbnail_key(self, image: Image, path: Path, max_side: int) -> str:
        """The content key of a thumbnail of ``image`` at ``max_side`` pixels."""
        if image.checksum:
            content = f"sha256:{image.checksum}"
        else:
            stat = path.stat()
            content = f"stat:{stat.st_size}:{stat.st_mtime_ns}:{path}"
        return _digest("thumb", content, max_side)

    def thumbnail(self, dataset: Dataset, image: Image, max_side: int = 256) -> Path:
        """A JPEG of the photo whose longer side is at most ``max_side`` pixels (cached)."""
        source = image_file(dataset, image)
        target = self._path("thumbs", self.thumbnail_key(image, source, max_side), ".jpg")
        if target.is_file():
            return target
        try:
            with PILImage.open(source) as im:
                # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale: a 3000 px photo costs a
                # fraction of a full decode.
                im.draft("RGB", (max_side, max_side))
                im = im.convert("RGB")
                im.thumbnail((max_side, max_side), PILImage.Resampling.LANCZOS)
                buffer = BytesIO()
                im.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageMissing(
                f"image {image.file_name!r} of dataset {dataset.name!r} cannot be read "
                f"({source}: {exc}); replace the file or re-import the dataset"
            ) from None
        write_atomically(target, buffer.getvalue())
        return target

    # -- masks -----------------------------------------------------------------------------

    def mask_key(self, session: Session, image: Image, scheme_name: str, scheme_version: int,
                 size: tuple[int, int] | None, legend: dict[str, str] | None = None) -> str:
        """The content key of ``image``'s mask under a scheme version at ``size`` (``legend``:
        the classes the scheme has for the image's dataset, where they can differ, as ``fine``'s)."""
        rows = session.execute(
            select(Annotation.id, Annotation.category_id, Annotation.area, Annotation.counts)
            .where(Annotation.image_id == image.id).order_by(Annotation.id)
        ).all()
        runs = hashlib.sha256()
        for ann_id, cat, area, counts in rows:
            runs.update(f"{ann_id}:{cat}:{area}:".encode())
            runs.update(counts.encode())
        return _digest("mask", image.id, image.width, image.height, runs.hexdigest(),
                       scheme_name, scheme_version, size, json.dumps(legend, sort_keys=True))

    def mask(self, session: Session, image: Image, scheme_name: str,
             size: tuple[int, int] | None = None) -> CachedMask:
        """``image``'s conditioning mask under the latest version of a scheme (cached)."""
        scheme = scheme_for_dataset(session, get_scheme(session, scheme_name), image.dataset_id)
        version = scheme.version
        key = self.mask_key(session, image, scheme_name, version, size, scheme.definition.legend())
        png = self._path("masks", key, ".png")
        meta = png.with_suffix(".json")
        if png.is_file() and meta.is_file():
            info = json.loads(meta.read_text(encoding="utf-8"))
            return CachedMask(png, info["legend"], info["unmapped"], scheme_name, version, True)
        rendered = render_image_mask(session, image.id, scheme_name, size=size,
                                     scheme_version=version)
        write_atomically(png, encode_palette_png(rendered))
        write_atomically(meta, json.dumps({"legend": rendered.legend,
                                        "unmapped": rendered.unmapped}).encode())
        return CachedMask(png, rendered.legend, rendered.unmapped, scheme_name, version, False)
