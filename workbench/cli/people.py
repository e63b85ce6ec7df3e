"""People commands: detect unlabelled people, list and decide flags (``people ...``)."""

from __future__ import annotations

import typer

app = typer.Typer()
