"""The Compare page's run-by-run figures: parallel coordinates of a sweep and smoothed curves over their raw shadow.

Text from records (setting values, run ids) reaches Plotly only escaped: Plotly renders a subset of HTML in
labels and legends.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from cifarnet.analysis.curves import X_AXES
from cifarnet.analysis.sweep_view import BEST, FINAL, Filter, numeric
from cifarnet.ui.charts import HEIGHT, LEGEND_ROW, _faded, run_colors, styled

SHADOW_ALPHA = 0.25  # the raw curve under its smoothed line


def _log_axis(values: pd.Series) -> bool:
    """A number setting spread over more than a factor of ten (learning rates, weight decays) reads on a log axis."""
    low, high = values.min(), values.max()
    return bool(low > 0 and high / low > 10)


def _dimension(table: pd.DataFrame, name: str, chosen: Filter) -> dict:
    """One axis of the parallel coordinates, with the filter's range on it as the brush Plotly draws."""
    if name in (BEST, FINAL) or numeric(table, name):
        values = pd.to_numeric(table[name], errors="coerce").astype(float)
        low, high = chosen.ranges.get(name, (None, None))
        if name not in (BEST, FINAL) and _log_axis(values):
            ticks = sorted(values.unique())
            dimension = {
                "label": f"{name} (log)",
                "values": np.log10(values),
                "tickvals": np.log10(ticks),
                "ticktext": [format(t, "g") for t in ticks],
            }
            if low is not None:
                dimension["constraintrange"] = [math.log10(low), math.log10(high)]
            return dimension
        dimension = {"label": name, "values": values.fillna(-1 if name in (BEST, FINAL) else 0)}
        if low is not None:
            dimension["constraintrange"] = [low, high]
        return dimension
    texts = table[name].map(str)  # NaN (a setting a run lacks) as text too
    kinds = sorted(texts.unique())
    codes = texts.map({text: i for i, text in enumerate(kinds)})
    dimension = {
        "label": name,
        "values": codes,
        "tickvals": list(range(len(kinds))),
        "ticktext": [html.escape(k) for k in kinds],
        "range": [-0.5, len(kinds) - 0.5],
    }
    if name in chosen.allowed:
        kept = [i for i, text in enumerate(kinds) if text in {str(v) for v in chosen.allowed[name]}]
        dimension["constraintrange"] = [[i - 0.4, i + 0.4] for i in kept] or [[-0.5, -0.4]]
    return dimension


def parallel_figure(table: pd.DataFrame, settings: list[str], chosen: Filter) -> go.Figure:
    """Every run as a line through its varied settings to its best and final test accuracy (a run without a
    value on an accuracy axis sits at -1), coloured by its best; the runs outside the filter are greyed."""
    dims = [_dimension(table, name, chosen) for name in [*settings, BEST, FINAL]]
    for dim in dims:
        dim["label"] = html.escape(str(dim["label"]))
    best = pd.to_numeric(table[BEST], errors="coerce").fillna(0.0)
    fig = go.Figure(
        go.Parcoords(
            dimensions=dims,
            line={"color": best, "colorscale": "Viridis", "showscale": True, "colorbar": {"title": {"text": "best %"}}},
            unselected={"line": {"color": "#ccc", "opacity": 0.35}},
        )
    )
    fig.update_layout(
        template="plotly_white", height=HEIGHT + 40, margin={"l": 60, "r": 60, "t": 60, "b": 20}, font={"size": 12}
    )
    return fig


def shadowed_curves_figure(
    raw: pd.DataFrame, smoothed: pd.DataFrame, x: str, title: str, y_title: str, log_x: bool = False
) -> go.Figure:
    """One smoothed line per run over its raw curve, drawn faint in the same colour (the "shadow")."""
    fig = go.Figure()
    colors = run_colors(list(dict.fromkeys(raw["run"])))
    for run, part in raw.groupby("run", sort=False):
        name, color = html.escape(str(run)), colors[run]
        fig.add_trace(
            go.Scatter(
                x=part[x],
                y=part["value"],
                mode="lines",
                line={"width": 1, "color": _faded(color, SHADOW_ALPHA)},
                legendgroup=name,
                showlegend=False,
                hoverinfo="skip",
                name=f"{name} (raw)",
            )
        )
        line = smoothed[smoothed["run"] == run]
        fig.add_trace(
            go.Scatter(
                x=line[x],
                y=line["value"],
                mode="lines",
                name=name,
                legendgroup=name,
                line={"width": 2, "color": color},
                customdata=[run] * len(line),
            )
        )
    lines = raw["run"].nunique()
    fig = styled(fig, title, X_AXES[x], y_title, HEIGHT + LEGEND_ROW * max(0, lines - 2))
    if log_x:
        fig.update_xaxes(type="log")
    return fig
