"""Models of exports and training jobs."""

from __future__ import annotations
