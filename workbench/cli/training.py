"""Training commands: export the curated set (``export``) and run or watch training (``train ...``)."""

from __future__ import annotations

import typer

app = typer.Typer()
