"""Export command: write the curated set in a trainer's format (``export``)."""

from __future__ import annotations

import typer

app = typer.Typer()
