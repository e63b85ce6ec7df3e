"""Models of the people-flagging work: person proposals and curator decisions on them."""

from __future__ import annotations
