"""Checks on image files named by a dataset: inside the folder, present, sane, the right size."""

from __future__ import annotations

import hashlib
import io
import posixpath
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from workbench.guard import file_name_problem, printable

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
CHECK_MODES = ("full", "header", "none")


class ImageProblem(ValueError):
    """An image file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class ImageInfo:
    """What a check learnt about an image file (``None`` where the mode did not look)."""

    width: int | None
    height: int | None
    checksum: str | None = None
    file_size: int | None = None


def image_path_parts(file_name: str) -> list[str]:
    """The folders and file name of ``file_name`` relative to an images folder; refuses names
    that are absolute or leave the folder (string work only: it runs once per imported image)."""
    problem = file_name_problem(file_name)
    if problem:
        raise ImageProblem(f"{printable(file_name)[:80]!r}: {problem}")
    normalised = file_name.replace("\\", "/")
    if not normalised or normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        raise ImageProblem(f"{file_name!r}: image paths must be relative to the images folder")
    if posixpath.normpath(normalised).split("/")[0] == "..":
        raise ImageProblem(f"{file_name!r}: path leaves the images folder")
    return [part for part in normalised.split("/") if part not in ("", ".")]


def resolve_image_path(images_root: Path, file_name: str) -> Path:
    """The file ``file_name`` inside ``images_root``; refuses names that leave the folder, by
    their text or through a symlink (the path is resolved, links followed, and must stay inside)."""
    path = images_root.joinpath(*image_path_parts(file_name))
    try:
        inside = path.resolve().is_relative_to(images_root.resolve())
    except (OSError, RuntimeError) as exc:  # a symlink loop, a path the OS refuses
        raise ImageProblem(f"{path}: cannot be resolved ({exc})") from exc
    if not inside:
        raise ImageProblem(f"{path}: a symlink to {path.resolve()}, outside the images folder {images_root}: "
                           "copy the file into the folder instead")
    return path


def image_file(images_root: Path, file_name: str) -> Path | None:
    """The file ``file_name`` inside ``images_root`` (see :func:`resolve_image_path`), or None
    where the name or a symlink leads out of the folder: what readers of stored images use."""
    try:
        return resolve_image_path(images_root, file_name)
    except ImageProblem:
        return None


def check_image(
    images_root: Path, file_name: str, *, mode: str = "full", max_pixels: int = 89_478_485
) -> ImageInfo:
    """Check one image file; raise :class:`ImageProblem` with a clear reason.

    ``none`` only checks the path, ``header`` reads the size from the header, ``full`` also
    hashes the bytes (SHA-256) and decodes the image at reduced scale, which finds truncated
    and corrupt files at a fraction of a full decode's cost.
    """
    if mode not in CHECK_MODES:
        raise ValueError(f"image check mode must be one of {CHECK_MODES}, not {mode!r}")
    if mode == "none":
        image_path_parts(file_name)
        return ImageInfo(None, None)
    path = resolve_image_path(images_root, file_name)
    if not path.is_file():
        raise ImageProblem(f"image file not found: {path}")
    checksum = size = None
    source: Path | io.BytesIO = path
    if mode == "full":
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageProblem(f"{path}: cannot be read ({exc.strerror or exc})") from exc
        checksum, size = hashlib.sha256(data).hexdigest(), len(data)
        source = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise ImageProblem(_bomb_message(path, width, height, max_pixels))
                if mode == "full":
                    im.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                    im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageProblem(f"{path}: refused as a decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageProblem(f"{path}: not a readable image (corrupt or unknown format)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageProblem):
            raise
        raise ImageProblem(f"{path}: corrupt image ({exc})") from exc
    return ImageInfo(width, height, checksum, size)


def _bomb_message(path: Path, width: int, height: int, max_pixels: int) -> str:
    return (
        f"{path}: {width}x{height} = {width * height} pixels is over the decompression-bomb "
        f"limit of {max_pixels} (setting WORKBENCH_MAX_IMAGE_PIXELS)"
    )


def iter_image_files(images_root: Path) -> list[str]:
    """Image file names under ``images_root`` (relative, POSIX separators), sorted."""
    return sorted(
        p.relative_to(images_root).as_posix()
        for p in images_root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
