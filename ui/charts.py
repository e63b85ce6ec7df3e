"""Plotly figures of the EDA aggregates, and reading a chart click back as a drill-down.

Every clickable figure carries the key of each element in ``customdata`` so that a selection
event maps back to exactly the images behind it (:func:`drill_from_points`). No streamlit here.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from plotly.colors import qualitative

from workbench.eda import Drill, EdaResult

BAR_HEIGHT = 18
MARGIN = {"l": 10, "r": 10, "t": 30, "b": 10}


def _hex(i: int) -> str:
    # Plotly's Dark24: distinct and dark enough to read on white (supercategory colours).
    return qualitative.Dark24[i % len(qualitative.Dark24)]


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=height, margin=MARGIN,
                      clickmode="event+select", dragmode=False,
                      legend={"orientation": "h", "y": -0.08})
    return fig


def _label_every_bar(fig: go.Figure, names: pd.Series) -> None:
    # Left to itself plotly labels only every other bar of a long category axis; the bars are
    # tall enough (BAR_HEIGHT) for every name, so name each one.
    fig.update_yaxes(tickmode="array", tickvals=list(names), ticktext=list(names), automargin=True)


def category_bars(result: EdaResult, measure: str = "masks") -> go.Figure:
    """Horizontal bars per category (masks or images), coloured by supercategory."""
    table = result.categories[result.categories[measure] > 0].sort_values(measure)
    fig = go.Figure()
    for i, (sup, part) in enumerate(table.groupby("supercategory", sort=True)):
        fig.add_bar(y=part["category"], x=part[measure], orientation="h", name=sup or "(none)",
                    marker_color=_hex(i), customdata=part[["category"]].to_numpy(),
                    hovertemplate="%{y}: %{x} " + measure + "<extra>%{fullData.name}</extra>")
    fig.update_layout(barmode="stack", yaxis={"categoryorder": "total ascending"})
    _label_every_bar(fig, table["category"])
    return _layout(fig, f"Categories ({measure}), by supercategory",
                   140 + BAR_HEIGHT * max(len(table), 1))


def attribute_bars(result: EdaResult, top: int = 40) -> go.Figure:
    """Horizontal bars of the most used attributes, coloured by attribute supercategory."""
    table = result.attributes[result.attributes["masks"] > 0].nlargest(top, "masks")
    table = table.sort_values("masks")
    fig = go.Figure()
    for i, (sup, part) in enumerate(table.groupby("supercategory", sort=True)):
        fig.add_bar(y=part["attribute"], x=part["masks"], orientation="h", name=sup or "(none)",
                    marker_color=_hex(i + 7), customdata=part[["attribute"]].to_numpy(),
                    hovertemplate="%{y}: %{x} masks<extra>%{fullData.name}</extra>")
    fig.update_layout(barmode="stack", yaxis={"categoryorder": "total ascending"})
    _label_every_bar(fig, table["attribute"])
    return _layout(fig, f"Attributes (top {top} by masks), by supercategory",
                   140 + BAR_HEIGHT * max(len(table), 1))


def cooccurrence_map(result: EdaResult) -> go.Figure:
    """The category x attribute co-occurrence as a grid of clickable squares (a heatmap).

    Plotly heatmap cells cannot be selected, so each cell is a square scatter marker, which
    can: a click selects exactly that (category, attribute) pair.
    """
    co = result.cooccurrence
    cats = sorted(co["category"].unique()) if len(co) else []
    atts = sorted(co["attribute"].unique()) if len(co) else []
    height = 160 + 16 * max(len(cats), 1)
    width_px = 1100
    size = max(4, min(14, int((width_px - 200) / max(len(atts), 1)) - 2,
                      int((height - 160) / max(len(cats), 1)) - 2))
    fig = go.Figure(go.Scatter(
        x=co["attribute"], y=co["category"], mode="markers",
        marker={"symbol": "square", "size": size, "color": co["masks"], "colorscale": "Viridis",
                "showscale": True, "colorbar": {"title": "masks"}},
        customdata=co[["category", "attribute"]].to_numpy(),
        hovertemplate="%{y} × %{x}: %{marker.color} masks<extra></extra>",
    ))
    fig.update_xaxes(categoryorder="array", categoryarray=atts, tickangle=-60, tickfont={"size": 9})
    fig.update_yaxes(categoryorder="array", categoryarray=cats[::-1], tickfont={"size": 10})
    return _layout(fig, "Attribute × category (masks carrying both)", height + 120)


def simple_bars(table: pd.DataFrame, x: str, y: str, title: str, key: str,
                xtitle: str | None = None) -> go.Figure:
    """Vertical bars of ``y`` per ``x`` whose clicks give ``key`` = the x value."""
    fig = go.Figure(go.Bar(x=table[x].astype(str) if key != "masks" else table[x], y=table[y],
                           customdata=table[[x]].to_numpy(), marker_color="#4c78a8",
                           hovertemplate="%{x}: %{y}<extra></extra>"))
    fig.update_xaxes(title=xtitle or x)
    fig.update_yaxes(title=y)
    return _layout(fig, title, 300)


def size_map(result: EdaResult) -> go.Figure:
    """Image widths x heights, binned (a density heatmap)."""
    t = result.image_sizes
    fig = go.Figure(go.Heatmap(
        x=(t["width_from"] + t["width_to"]) / 2, y=(t["height_from"] + t["height_to"]) / 2,
        z=t["images"], colorscale="Blues", colorbar={"title": "images"},
        hovertemplate="width %{x}, height %{y}: %{z} images<extra></extra>",
    ))
    fig.update_xaxes(title="width (px)")
    fig.update_yaxes(title="height (px)")
    fig.update_layout(dragmode=False)
    return _layout(fig, "Image sizes", 340)


def aspect_bars(result: EdaResult) -> go.Figure:
    """Aspect ratio (width / height) histogram."""
    t = result.aspect_ratios
    fig = go.Figure(go.Bar(x=(t["aspect_from"] + t["aspect_to"]) / 2, y=t["images"],
                           width=(t["aspect_to"] - t["aspect_from"]) * 0.95, marker_color="#72b7b2",
                           hovertemplate="%{x:.2f}: %{y} images<extra></extra>"))
    fig.update_xaxes(title="width / height")
    fig.update_yaxes(title="images")
    return _layout(fig, "Aspect ratios", 340)


def area_boxes(result: EdaResult) -> go.Figure:
    """Mask area as a fraction of the image, per category (box from precomputed quantiles)."""
    t = result.area_fraction.sort_values("median")
    fig = go.Figure(go.Box(
        y=t["category"], q1=t["q1"], median=t["median"], q3=t["q3"], lowerfence=t["p05"],
        upperfence=t["p95"], mean=t["mean"], orientation="h", marker_color="#e45756",
        name="area / image", customdata=t[["category"]].to_numpy(),
    ))
    fig.update_xaxes(title="mask area / image area (whiskers: 5th-95th percentile)",
                     tickformat=".0%")
    return _layout(fig, "Mask area as a fraction of the image", 140 + BAR_HEIGHT * max(len(t), 1))


def drill_from_points(kind: str, points: list[dict[str, Any]]) -> Drill | None:
    """The drill-down of the FIRST selected point of a chart of ``kind``; None when empty."""
    if not points:
        return None
    point = points[0]
    data = point.get("customdata")
    if isinstance(data, list | tuple):
        values = list(data)
    elif data is not None:
        values = [data]
    else:  # no customdata came back: fall back on the axis label
        values = [point.get("y") if kind in ("category", "attribute") else point.get("x")]
    if kind == "category":
        return Drill(category=str(values[0]))
    if kind == "attribute":
        return Drill(attribute=str(values[0]))
    if kind == "cell":
        return Drill(category=str(values[0]), attribute=str(values[1]))
    if kind == "masks":
        return Drill(masks=int(values[0]))
    if kind == "split":
        return Drill(split=str(values[0]))
    if kind.startswith("facet:"):
        return Drill(facet=kind.removeprefix("facet:"), facet_value=values[0])
    raise ValueError(f"unknown chart kind {kind!r}")


def map_scatter(frame: pd.DataFrame, colour: str, method: str) -> go.Figure:
    """The dataset map: one point per image (``customdata``: its id), one trace per ``colour`` value;
    box and lasso select images."""
    fig = go.Figure()
    for i, (value, part) in enumerate(frame.groupby(colour, sort=True)):
        fig.add_trace(go.Scattergl(
            x=part["x"], y=part["y"], mode="markers", name=str(value), marker={"size": 7, "color": _hex(i)},
            customdata=part[["id"]].to_numpy(), text=part["file_name"],
            hovertemplate="%{text}<extra>" + str(value) + "</extra>"))
    fig.update_xaxes(showticklabels=False, title=None)
    fig.update_yaxes(showticklabels=False, title=None)
    _layout(fig, f"Dataset map ({method.upper()} of the image embeddings)", 520)
    fig.update_layout(dragmode="lasso", clickmode="event+select")
    return fig


def drill_from_map(points: list[dict[str, Any]]) -> Drill | None:
    """The images of every point selected on the map (box or lasso); None when nothing is."""
    ids = []
    for point in points:
        data = point.get("customdata")
        value = data[0] if isinstance(data, list | tuple) else data
        if value is not None:
            ids.append(int(value))
    return Drill(image_ids=tuple(sorted(set(ids)))) if ids else None
