"""Importers: iMaterialist 2019/2020 CSV, COCO instances (Fashionpedia), plain image folders."""

from workbench.formats.coco import import_coco
from workbench.formats.folder import import_folder
from workbench.formats.images import ImageProblem, check_image
from workbench.formats.imat2019 import import_imat2019
from workbench.formats.store import ImportReport, ImportSourceError, Rejection, StrictImportError

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
