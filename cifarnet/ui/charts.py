"""Plotly figures for the dashboard, all in one visual style.

Every chart goes through :func:`styled`, so fonts, margins, legend placement and
colours match from page to page and a run keeps its colour across charts. Plotly draws a
subset of HTML in every title, legend, tick and hover label (``<a href>`` makes a link), so
each name from a record (run, variant, class) goes through :func:`label` first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cifarnet.analysis.curves import METRICS, X_AXES
from cifarnet.ui.common import literal

PALETTE = px.colors.qualitative.D3
ACCENT = PALETTE[0]
HEIGHT = 340
LEGEND_ROW = 20  # pixels a figure grows for each line beyond two that are overlaid (their legend needs room)


def label(text: object) -> str:
    """A name from a record as Plotly text: cut and HTML-escaped (:func:`cifarnet.ui.common.literal`)."""
    return literal(text, html=True)


def styled(fig: go.Figure, title: str, x_title: str, y_title: str, height: int = HEIGHT) -> go.Figure:
    """The shared look: white template, compact margins, legend at the bottom of the figure.

    At the bottom, not above the plot: a legend of many runs wraps onto several lines, and above the plot it
    grew into the title. Plotly widens the bottom margin to fit it.
    """
    fig.update_layout(
        template="plotly_white",
        title={"text": title, "x": 0, "font": {"size": 15}},
        height=height,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        font={"size": 12},
        legend={"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 0, "x": 0, "title": None},
        hovermode="x unified",
        colorway=PALETTE,
    )
    fig.update_xaxes(title=x_title, showgrid=True, gridcolor="#eee", zeroline=False)
    fig.update_yaxes(title=y_title, showgrid=True, gridcolor="#eee", zeroline=False)
    return fig


def run_colors(runs: Sequence[str]) -> dict[str, str]:
    """A fixed colour per run for the whole page, so the same run matches across charts."""
    return {run: PALETTE[i % len(PALETTE)] for i, run in enumerate(runs)}


def curve_figure(
    frame: pd.DataFrame,
    x: str,
    by: str,
    title: str,
    y_title: str,
    log_y: bool = False,
    colors: dict[str, str] | None = None,
    height: int = HEIGHT,
) -> go.Figure:
    """Lines from a long curves frame, one per value of ``by`` (``run`` or ``metric``).

    Test metrics get markers: they are sparse evaluations, and the dots show where they were taken; so does a
    curve of one point (a run's first record).
    """
    fig = go.Figure()
    for name, part in frame.groupby(by, sort=False):
        sparse = set(part["metric"]) <= {m for m, (_, kind) in METRICS.items() if kind == "eval"}
        name_shown = METRICS[name][0] if by == "metric" else label(name)
        markers = sparse or len(part) == 1  # a lone point has no line to draw: without a marker, bare axes
        fig.add_trace(
            go.Scatter(
                x=part[x],
                y=part["value"],
                name=name_shown,
                mode="lines+markers" if markers else "lines",
                marker={"size": 6},
                line={"width": 2, "color": (colors or {}).get(name)},
            )
        )
    fig = styled(fig, title, X_AXES[x], y_title, height + LEGEND_ROW * max(0, len(fig.data) - 2))
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def lr_figure(frame: pd.DataFrame) -> go.Figure:
    """The learning rate a configuration will follow, step by step."""
    fig = go.Figure(
        go.Scatter(
            x=frame["step"],
            y=frame["lr"],
            mode="lines",
            line={"width": 2, "color": ACCENT},
            fill="tozeroy",
            name="learning rate",
        )
    )
    return styled(fig, "Learning-rate schedule", X_AXES["step"], "learning rate", height=240)


def rf_figure(frame: pd.DataFrame, image_size: int = 32) -> go.Figure:
    """Receptive field after each layer for one or more architectures, against the image size."""
    fig = go.Figure()
    for i, (arch, part) in enumerate(frame.groupby("arch", sort=False)):
        fig.add_trace(
            go.Scatter(
                x=part["#"],
                y=part["rf"],
                name=str(arch),
                mode="lines+markers",
                line={"width": 2, "color": PALETTE[i]},
                customdata=part[["layer", "kernel", "stride", "dilation", "size"]],
                hovertemplate="%{customdata[0]}<br>k=%{customdata[1]} s=%{customdata[2]} d=%{customdata[3]}"
                "<br>map %{customdata[4]} px<br>RF %{y} px<extra>%{fullData.name}</extra>",
            )
        )
    fig.add_hline(
        y=image_size,
        line_dash="dash",
        line_color="#888",
        annotation_text=f"image: {image_size} px",
        annotation_position="top left",
    )
    fig = styled(fig, "Receptive field after each layer", "layer (in order of computation)", "receptive field (px)")
    fig.update_layout(hovermode="closest")
    return fig


def rf_square_figure(image: np.ndarray, rf: int, jump: int, map_size: int) -> go.Figure:
    """The field of one output at the image centre drawn over a 32x32 picture.

    Parts of the square outside the picture fall on zero padding: pixels the network never
    sees but that still take room in the field. Dots mark where the layer's ``map_size`` x
    ``map_size`` outputs are centred (``jump`` pixels apart).
    """
    size = image.shape[0]
    centre = size / 2
    half = rf / 2
    reach = max(half, centre) + 2
    fig = go.Figure(go.Image(z=image, x0=0.5, y0=0.5, dx=1, dy=1, hoverinfo="skip"))
    fig.add_shape(
        type="rect",
        x0=centre - half,
        x1=centre + half,
        y0=centre - half,
        y1=centre + half,
        line={"color": PALETTE[3], "width": 3},
    )
    fig.add_shape(type="rect", x0=0, x1=size, y0=0, y1=size, line={"color": "#444", "width": 1, "dash": "dot"})
    centres = centre + (np.arange(map_size) - (map_size - 1) / 2) * jump
    xs, ys = np.meshgrid(centres, centres)
    fig.add_trace(
        go.Scatter(
            x=xs.ravel(),
            y=ys.ravel(),
            mode="markers",
            marker={"size": 3 if map_size > 16 else 5, "color": PALETTE[3], "opacity": 0.7},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    fig = styled(fig, f"What one output sees: a {rf}x{rf} square", "", "", height=380)
    fig.update_xaxes(range=[centre - reach, centre + reach], showgrid=False, showticklabels=False, zeroline=False)
    fig.update_yaxes(
        range=[centre + reach, centre - reach], showgrid=False, showticklabels=False, zeroline=False, scaleanchor="x"
    )
    fig.update_layout(hovermode=False)
    return fig


def confusion_figure(frame: pd.DataFrame) -> go.Figure:
    """Counts per (true, predicted) pair; the diagonal is correct, everything else a mistake.

    The colour scale tops out at the largest mistake count: the diagonal saturates, and
    the off-diagonal cells (the interesting ones) spread over the whole scale. Plotly
    cannot select heatmap cells, so an invisible square marker sits on each cell to
    carry the click (Streamlit's ``on_select``).
    """
    counts = frame.to_numpy()
    off_diagonal = counts[~np.eye(len(counts), dtype=bool)]
    # a click reports positions (cifarnet.analysis.misclassified.cell_from_selection)
    positions = list(range(len(counts)))
    names = [label(name) for name in frame.columns]
    predicted, true = np.meshgrid(positions, positions)
    fig = go.Figure(
        [
            go.Heatmap(
                z=counts,
                x=positions,
                y=positions,
                colorscale="Blues",
                zmin=0,
                zmax=max(int(off_diagonal.max(initial=0)), 1),
                text=counts,
                texttemplate="%{text}",
                textfont={"size": 10},
                showscale=False,
                hoverinfo="skip",
            ),
            go.Scatter(
                x=predicted.ravel(),
                y=true.ravel(),
                mode="markers",
                customdata=np.stack(
                    [counts.ravel(), np.array(names)[true.ravel()], np.array(names)[predicted.ravel()]], 1
                ),
                marker={"symbol": "square", "size": 34, "color": "rgba(0,0,0,0)"},
                selected={"marker": {"opacity": 1}},
                unselected={"marker": {"opacity": 1}},
                showlegend=False,
                hovertemplate="true %{customdata[1]}, predicted %{customdata[2]}: %{customdata[0]} images"
                "<extra></extra>",
            ),
        ]
    )
    fig = styled(fig, "Confusion matrix (click a cell to see its images)", "predicted class", "true class", 460)
    fig.update_yaxes(autorange="reversed", showgrid=False, tickvals=positions, ticktext=names)
    fig.update_xaxes(showgrid=False, tickangle=-40, tickvals=positions, ticktext=names)
    fig.update_layout(hovermode="closest", clickmode="event+select", dragmode=False)
    return fig


def per_class_figure(frame: pd.DataFrame) -> go.Figure:
    """Accuracy of each class as a bar, sorted so the hardest classes stand out."""
    data = frame.sort_values("accuracy")
    fig = go.Figure(
        go.Bar(
            x=data["accuracy"],
            y=[label(name) for name in data["class"]],
            orientation="h",
            marker_color=ACCENT,
            text=[f"{v:.1f}%" for v in data["accuracy"]],
            textposition="auto",
        )
    )
    fig = styled(fig, "Per-class accuracy", "accuracy (%)", "", 460)
    fig.update_xaxes(range=[0, 100])
    fig.update_layout(hovermode="closest")
    return fig


def topk_figure(pairs: Sequence[tuple[str, float]]) -> go.Figure:
    """The model's most probable classes as horizontal bars, the top one on top."""
    names = [label(name) for name, _ in pairs][::-1]
    values = [100 * p for _, p in pairs][::-1]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=names,
            orientation="h",
            marker_color=ACCENT,
            text=[f"{v:.1f}%" for v in values],
            textposition="auto",
        )
    )
    fig = styled(fig, "Class probabilities", "probability (%)", "", height=80 + 36 * len(pairs))
    fig.update_xaxes(range=[0, 100])
    fig.update_layout(hovermode="closest")
    return fig


def bar_figure(frame: pd.DataFrame, x: str, y: str, title: str, x_title: str, y_title: str) -> go.Figure:
    """A plain bar chart in the shared style (parameters per block, per layer kind)."""
    fig = go.Figure(
        go.Bar(
            x=frame[x],
            y=frame[y],
            marker_color=ACCENT,
            text=[f"{v:,}" for v in frame[y]],
            textposition="outside",
            cliponaxis=False,
        )
    )
    fig = styled(fig, title, x_title, y_title, height=300)
    fig.update_layout(hovermode="closest")
    fig.update_yaxes(range=[0, 1.15 * max(frame[y].max(), 1)])
    return fig


def relu_stats_figure(frame: pd.DataFrame, colors: dict[str, str]) -> go.Figure:
    """Mean, spread and fraction of zeros after each ReLU, one line per model (``model`` column)."""
    panels = (("mean", "mean"), ("std", "standard deviation"), ("zeros", "fraction of zeros"))
    fig = make_subplots(rows=1, cols=3, subplot_titles=[title for _, title in panels], horizontal_spacing=0.07)
    for model, part in frame.groupby("model", sort=False):
        for col, (column, _) in enumerate(panels, 1):
            fig.add_trace(
                go.Scatter(
                    x=part["#"],
                    y=part[column],
                    name=label(model),
                    legendgroup=label(model),
                    showlegend=col == 1,
                    mode="lines+markers",
                    marker={"size": 5},
                    line={"width": 2, "color": colors.get(model)},
                    customdata=part[["layer"]],
                    hovertemplate="%{customdata[0]}: %{y:.3f}<extra>%{fullData.name}</extra>",
                ),
                row=1,
                col=col,
            )
    fig = styled(fig, "After each ReLU", "", "", height=360)
    fig.update_xaxes(title="ReLU (in order of computation)", dtick=2 if frame["#"].max() <= 16 else 4)
    return _legend_below(fig)


def _legend_below(fig: go.Figure) -> go.Figure:
    """Subplot titles take the room above the plots, so these figures carry their legend below: at the bottom of
    the figure as :func:`styled` places it, under the axis titles (placed on the plot area, below its axis title,
    it fell outside the figure and no line said which model it was)."""
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(hovermode="closest", margin={"t": 70, "b": 10})
    return fig


def norm_spread_figure(frame: pd.DataFrame, colors: dict[str, str]) -> go.Figure:
    """How much per-channel and per-image means differ, before (dashed) and after (solid) each norm."""
    panels = (("channel", "spread of per-channel means"), ("image", "spread of per-image means"))
    fig = make_subplots(rows=1, cols=2, subplot_titles=[title for _, title in panels], horizontal_spacing=0.08)
    for model, part in frame.groupby("model", sort=False):
        for col, (stat, _) in enumerate(panels, 1):
            for when, dash in (("before", "dot"), ("after", "solid")):
                fig.add_trace(
                    go.Scatter(
                        x=part["#"],
                        y=part[f"{stat}_{when}"],
                        name=label(model),
                        legendgroup=label(model),
                        showlegend=col == 1 and when == "after",
                        mode="lines+markers",
                        marker={"size": 5},
                        line={"width": 2, "dash": dash, "color": colors.get(model)},
                        customdata=part[["layer"]],
                        hovertemplate=f"%{{customdata[0]}} {when}: %{{y:.3f}}<extra>%{{fullData.name}}</extra>",
                    ),
                    row=1,
                    col=col,
                )
    fig = styled(
        fig,
        "Around each norm: its input (dotted) and its normalised output (solid), in units of their standard deviation",
        "",
        "",
        height=390,
    )
    fig.update_xaxes(title="norm layer (in order of computation)", dtick=1 if frame["#"].max() <= 12 else 4)
    return _legend_below(fig)


def _faded(color: str, alpha: float = 0.18) -> str:
    """A ``#rrggbb`` colour as a see-through ``rgba`` (for seed bands under their line)."""
    red, green, blue = (int(color.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({red},{green},{blue},{alpha})"


def spread_figure(frame: pd.DataFrame, x: str, title: str, y_title: str, colors: dict[str, str]) -> go.Figure:
    """One line per variant (the mean over its seeds) over a band from its lowest to its highest seed.

    ``frame`` is one metric of :func:`cifarnet.analysis.comparison.spread_curves`. The band is drawn as one closed shape
    (upper edge forwards, lower edge back), which Plotly fills without a second trace to pair with.
    """
    fig = go.Figure()
    sparse = set(frame["metric"]) <= {m for m, (_, kind) in METRICS.items() if kind == "eval"}
    for variant, part in frame.groupby("variant", sort=False):
        color, name = colors.get(variant, ACCENT), label(variant)
        if (part["seeds"] > 1).any():
            fig.add_trace(
                go.Scatter(
                    x=pd.concat([part[x], part[x][::-1]]),
                    y=pd.concat([part["high"], part["low"][::-1]]),
                    fill="toself",
                    fillcolor=_faded(color),
                    mode="none",
                    legendgroup=name,
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=part[x],
                y=part["mean"],
                name=name,
                legendgroup=name,
                mode="lines+markers" if sparse else "lines",
                marker={"size": 5},
                line={"width": 2, "color": color},
                customdata=part[["low", "high", "seeds"]],
                hovertemplate="%{y:.3f} (seeds %{customdata[0]:.3f} to %{customdata[1]:.3f}, "
                "n=%{customdata[2]})<extra>%{fullData.name}</extra>",
            )
        )
    lines = len(frame["variant"].unique())
    return styled(fig, title, X_AXES[x], y_title, HEIGHT + LEGEND_ROW * max(0, lines - 2))


def per_class_bars_figure(frame: pd.DataFrame, colors: dict[str, str]) -> go.Figure:
    """Each class's accuracy as a group of bars, one per variant, with its seeds' standard deviation as a whisker."""
    fig = go.Figure()
    for variant, part in frame.groupby("variant", sort=False):
        fig.add_trace(
            go.Bar(
                x=[label(name) for name in part["class"]],
                y=part["mean"],
                name=label(variant),
                marker_color=colors.get(variant),
                error_y={"type": "data", "array": part["std"].fillna(0), "thickness": 1.2, "width": 3},
                hovertemplate="%{x}: %{y:.1f}%<extra>%{fullData.name}</extra>",
            )
        )
    fig = styled(fig, "Per-class accuracy (mean over seeds; whisker: standard deviation)", "", "accuracy (%)", 380)
    low = max(0.0, float((frame["mean"] - frame["std"].fillna(0)).min()) - 5)
    fig.update_yaxes(range=[low, 100])
    fig.update_layout(barmode="group", hovermode="closest")
    return fig


def confusion_difference_figure(frame: pd.DataFrame, a: str, b: str) -> go.Figure:
    """``a``'s confusion counts minus ``b``'s: blue where ``a`` has more, red where ``b`` has more.

    On the diagonal blue is good for ``a`` (more right); off it, blue means ``a`` makes that mistake more often.
    The colour scale is symmetric around zero and, as in :func:`confusion_figure`, tops out at the largest
    difference off the diagonal: the diagonal (each row's differences summed) saturates, the mistakes spread over
    the scale. Variant and class names come from records, so they are escaped (:func:`label`).
    """
    values = frame.to_numpy()
    off_diagonal = np.abs(values[~np.eye(len(values), dtype=bool)])
    reach = max(float(off_diagonal.max(initial=0)), 1.0)
    text = [[format(round(v, 1) + 0.0, "g") for v in row] for row in values]  # 16.5, -0.5, 3 (never -0)
    names = [label(name) for name in frame.columns]
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=names,
            y=[label(name) for name in frame.index],
            colorscale="RdBu",
            zmid=0,
            zmin=-reach,
            zmax=reach,
            text=text,
            texttemplate="%{text}",
            textfont={"size": 10},
            colorbar={"thickness": 12},
            hovertemplate="true %{y}, predicted %{x}: %{z:+.1f} images<extra></extra>",
        )
    )
    fig = styled(
        fig,
        f"Confusion difference: {label(a)} minus {label(b)} (images, mean over seeds)",
        "predicted class",
        "true class",
        460,
    )
    fig.update_yaxes(autorange="reversed", showgrid=False)
    fig.update_xaxes(showgrid=False, tickangle=-40)
    fig.update_layout(hovermode="closest")
    return fig
