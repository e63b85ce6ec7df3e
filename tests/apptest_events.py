"""Drive widgets AppTest has no API for (Plotly selections, data_editor edits) in page tests.

The browser sends such a widget's value as a JSON string; these helpers send the same string
for the element with the given key on the next run, the way a click in the browser would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

from db.engine import dispose_engines

ROOT = Path(__file__).resolve().parent.parent


def element(app: AppTest, key: str) -> Any:
    """The element (any kind) whose user key is ``key``."""
    for node in app._tree:
        proto_id = getattr(getattr(node, "proto", None), "id", "") or ""
        if getattr(node, "key", None) == key or (proto_id and proto_id.endswith(f"-{key}")):
            return node
    raise LookupError(f"no element with key {key!r} on the page")


def send_widget_string(app: AppTest, key: str, value: Any) -> AppTest:
    """Run the app once with ``value`` (JSON-encoded) as the widget ``key``'s browser value."""
    target = element(app, key)
    states = app._tree.get_widget_states()
    kept = [w for w in states.widgets if w.id != target.proto.id]
    del states.widgets[:]
    states.widgets.extend(kept)
    states.widgets.append(WidgetState(id=target.proto.id, string_value=json.dumps(value)))
    return app._run(states)


def click_chart(app: AppTest, key: str, customdata: list[Any], x: Any = None, y: Any = None) -> AppTest:
    """Select one point of a Plotly chart, as a click in the browser does."""
    point = {"curve_number": 0, "point_number": 0, "point_index": 0, "x": x, "y": y,
             "customdata": customdata}
    return send_widget_string(app, key, {"selection": {"points": [point], "point_indices": [0],
                                                       "box": [], "lasso": []}})


def edit_table(app: AppTest, key: str, edited_rows: dict[int, dict[str, Any]]) -> AppTest:
    """Edit cells of a ``st.data_editor`` (row position -> {column: value})."""
    return send_widget_string(app, key, {"edited_rows": {str(k): v for k, v in edited_rows.items()},
                                         "added_rows": [], "deleted_rows": []})


def chart_spec(app: AppTest, key: str) -> dict[str, Any]:
    """The Plotly figure (data + layout) a chart element sent."""
    return json.loads(element(app, key).proto.spec)


def values(data: Any) -> list[Any]:
    """A Plotly array as a list: plain JSON lists, or plotly's typed arrays (base64 + dtype)."""
    if isinstance(data, dict) and "bdata" in data:
        import base64

        import numpy as np

        array = np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"]))
        if "shape" in data:
            array = array.reshape([int(n) for n in str(data["shape"]).split(",")])
        return array.tolist()
    return list(data)


def images_captions(app: AppTest) -> list[str]:
    """Captions of every image on the page, in order."""
    out: list[str] = []
    for node in app._tree:
        if type(node).__name__ == "Image":
            out.extend(node.captions)
    return out


@pytest.fixture
def page_store(demo_engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Point the app at a private copy of the demo store (no first-start demo)."""
    url = demo_engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("WORKBENCH_DB_URL", url)
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DEMO_IMAGES", "0")
    monkeypatch.setenv("WORKBENCH_ALLOWED_ROOTS", str(tmp_path))  # paths the tests type into pages
    st.cache_resource.clear()
    st.cache_data.clear()
    yield demo_engine
    st.cache_resource.clear()
    st.cache_data.clear()
    dispose_engines()


def job_error(app: AppTest, label: str, timeout: float = 240) -> str:
    """The error box that starts with ``label`` (e.g. "Export job 3"), rerunning the page (as its
    job panel's timer would) until the job has ended and shows it."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        assert not app.exception, [e.value for e in app.exception]
        found = [e.value for e in app.error if e.value.startswith(label)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            pytest.fail(f"no error of {label} after {timeout} s: {[e.value for e in app.error]}")
        time.sleep(1)
        app.run()
