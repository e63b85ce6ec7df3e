"""Plain-folder importer: every image under a folder, with its size and checksum, no annotations."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from workbench.formats.images import iter_image_files
from workbench.formats.store import DatasetWriter, ImportReport, ImportSourceError
from workbench.progress import ProgressFn, StopFn, report
from workbench.settings import get_settings
from workbench.taxonomy import Taxonomy

FORMAT = "folder"


def import_folder(
    engine: Engine,
    *,
    images_dir: str | Path,
    name: str,
    image_check: str | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> ImportReport:
    """Import every image file under ``images_dir`` (recursively) as an unannotated dataset.

    Idempotent: files already stored are skipped. Unreadable files (corrupt, decompression
    bombs) are rejected with their file name and the import goes on. ``should_stop`` is
    checked after each batch of files.
    """
    settings = get_settings()
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ImportSourceError(f"{images_dir}: images folder not found")
    check = image_check or settings.image_check
    # The size is all a folder import learns about an image, so it always reads the header.
    if check == "none":
        check = "header"
    files = iter_image_files(images_dir)
    sizes = [_file_size(images_dir / f) for f in files]
    total, done = sum(sizes), 0
    writer = DatasetWriter(
        engine,
        name=name,
        format=FORMAT,
        images_root=images_dir,
        taxonomy=Taxonomy(categories=[]),
        sources={"images": str(images_dir)},
        image_check=check,
        max_pixels=settings.max_image_pixels,
    )
    try:
        step = settings.import_batch_rows
        for start in range(0, len(files), step):
            writer.add_images((f, None, None) for f in files[start : start + step])
            done += sum(sizes[start : start + step])
            report(progress, done, total)
            writer.stop_if_asked(should_stop)
        report(progress, total, total)
        return writer.finish()
    except BaseException:
        writer.close()
        raise


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # gone since the listing: the image check reports it
