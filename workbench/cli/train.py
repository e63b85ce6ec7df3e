"""Training commands: run, start, watch, cancel and resume ControlNet training (``train ...``)."""

from __future__ import annotations

import typer

app = typer.Typer()
