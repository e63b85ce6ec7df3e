"""Models of the caption work: captions per source, their versions, and mixing recipes."""

from __future__ import annotations
