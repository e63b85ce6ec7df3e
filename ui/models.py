"""Choosing a model on a page: a picker over the model registry, ready ones first, missing ones marked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st
from sqlalchemy import Engine

from db.engine import session_scope
from workbench.models import TINY_LABEL, ModelStatus, list_models
from workbench.settings import Settings

MARKS = {"ready": "✅", "unchecked": "🟢", "missing": "❌", "broken": "⚠️"}


def model_label(m: ModelStatus) -> str:
    """"✅ tiny-sd · ready · tiny" style text for a model in a picker."""
    text = f"{MARKS.get(m.state, '')} {m.spec.name} · {m.state}"
    if m.tiny:
        text += " · tiny (random weights)"
    elif m.spec.hub_id or m.spec.spec:
        text += f" · {m.spec.spec or m.spec.hub_id}"
    return text


def model_picker(kind: str, settings: Settings, engine: Engine, *, label: str, key: str,
                 other_label: str | None = None, default: str | None = None, container=st,
                 help: str | None = None, none: str | None = None,
                 only: Callable[[ModelStatus], bool] | None = None) -> str | None:
    """A selectbox of the registry's ``kind`` models (key ``<key>_pick``: ready ones first, missing
    ones marked, with their fix shown when picked) and under it a text input (key ``key``) for a hub id
    or path that, when filled, is used instead. Returns the registry name or the typed text, and
    shows the random-weights mark when that is a tiny test model. ``none``: the label of a first
    option that picks nothing (returns ``None``); ``only``: offer just the models it accepts."""
    from workbench.models import is_tiny, resolve

    with session_scope(engine) as session:
        models = [m for m in list_models(session, settings, kind) if only is None or only(m)]
    by_name = {m.spec.name: m for m in models}
    names = [m.spec.name for m in models if m.ready] + [m.spec.name for m in models if not m.ready]
    options: list[str | None] = [None, *names] if none else list(names)
    index = options.index(default) if default in names and by_name[default].ready else 0
    choice = container.selectbox(label, options, index=index, key=f"{key}_pick", help=help,
                                 format_func=lambda n: none if n is None else model_label(by_name[n]))
    typed = container.text_input(other_label or f"{label}: or a hub id / local path instead", key=key,
                                 placeholder="leave empty to use the model picked above").strip()
    if typed:
        local = resolve(typed, kind)
        if Path(local).exists() and is_tiny(local):
            container.warning(f"{TINY_LABEL}: output from this model is noise, for trying the pipeline only.",
                              icon="🎲")
        return typed
    if choice is None:
        return None
    chosen = by_name[choice]
    if chosen.tiny:
        container.warning(f"{TINY_LABEL}: output from this model is noise, for trying the pipeline only.",
                          icon="🎲")
    elif not chosen.ready:
        container.error(f"{choice} is {chosen.state}: {chosen.reason}. Fix: {chosen.fix}")
    return choice
