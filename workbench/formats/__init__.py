"""Importers: iMaterialist 2019/2020 CSV, COCO instances (Fashionpedia), plain image folders.

Names are loaded on first use, so a process that needs one part (an importer's parsing
process, say) does not import the others and their libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ImageProblem": "workbench.formats.images",
    "check_image": "workbench.formats.images",
    "ImportReport": "workbench.formats.store",
    "ImportSourceError": "workbench.formats.store",
    "StrictImportError": "workbench.formats.store",
    "Rejection": "workbench.formats.records",
    "import_coco": "workbench.formats.coco",
    "import_folder": "workbench.formats.folder",
    "import_imat2019": "workbench.formats.imat2019",
}

__all__ = [
    "ImageProblem",
    "ImportReport",
    "ImportSourceError",
    "Rejection",
    "StrictImportError",
    "check_image",
    "import_coco",
    "import_folder",
    "import_imat2019",
]

if TYPE_CHECKING:
    from workbench.formats.coco import import_coco
    from workbench.formats.folder import import_folder
    from workbench.formats.images import ImageProblem, check_image
    from workbench.formats.imat2019 import import_imat2019
    from workbench.formats.records import Rejection
    from workbench.formats.store import (
        ImportReport,
        ImportSourceError,
        StrictImportError,
    )


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
