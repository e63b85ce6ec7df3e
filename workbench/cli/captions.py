"""Caption commands: run captioners, list captions, mix training prompts (``captions ...``)."""

from __future__ import annotations

import typer

app = typer.Typer()
