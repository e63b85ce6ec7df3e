"""Explore commands: EDA aggregates (``eda``) and mask-scheme management (``schemes``)."""

from __future__ import annotations

import typer

app = typer.Typer()
