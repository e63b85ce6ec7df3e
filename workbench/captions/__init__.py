"""Captions: dataset prompts, auto-captioners (CLIP Interrogator, BLIP, Kosmos-2), review and
mixing into training prompts.

Submodules import their heavy libraries (torch, transformers, open_clip) inside the functions
that need them, so importing this package stays cheap.
"""

from workbench.captions.mixing import recipe_version, training_prompts
from workbench.captions.review import review_progress

__all__ = ["eda_facets", "recipe_version", "review_progress", "training_prompts"]


def eda_facets():
    """Image facets for the EDA statistics (the caption review state)."""
    from workbench.captions.facets import eda_facets as facets

    return facets()
