"""The Compare page's run-by-run panel: filters on the varied settings drawn as the brushes of a parallel-coordinates
plot, the runs table (best value and its step, "only settings that differ"), and smoothed curves with a log-x switch;
selecting a run in the table or a point of its curve links to it on the Train page.

Streamlit reports selections of points, boxes and lassos back to the script, but not a brush dragged on a Plotly
parallel-coordinates axis (Plotly's parcoords fires no selection event). So the brushes are set here, one range
slider or value list per varied setting, and the plot draws them on its axes (``constraintrange``): the runs
outside are greyed in the plot and left out of the table and the curves.
"""

from __future__ import annotations

import streamlit as st

from cifarnet.analysis.comparison import Comparison
from cifarnet.analysis.curves import METRICS, smooth
from cifarnet.analysis.sweep_view import (
    BEST,
    BEST_STEP,
    FINAL,
    IDENTITY,
    SETTINGS,
    Filter,
    differing,
    numeric,
    placed,
    run_curves,
    run_table,
)
from cifarnet.runs.experiments import spelled
from cifarnet.ui.app import page_path
from cifarnet.ui.query import RUN_PARAM
from cifarnet.ui.sweep_charts import parallel_figure, shadowed_curves_figure

CURVE_CHOICES = ("test_acc", "train_loss", "test_loss", "train_acc")
X_CHOICES = ("step", "epoch", "time")


def _filters(table, settings: list[str], key: str) -> Filter:
    """One control per varied setting: a range slider over its values, or the values to keep."""
    ranges, allowed = {}, {}
    for column, name in zip(st.columns(max(1, len(settings))), settings):
        if numeric(table, name):
            values = sorted(table[name].astype(float).unique())
            low, high = column.select_slider(
                name, values, value=(values[0], values[-1]), format_func=spelled, key=f"{key}_range_{name}"
            )
            ranges[name] = (low, high)
        else:
            kinds = sorted({str(value) for value in table[name]})  # NaN (a setting a run lacks) too
            allowed[name] = column.multiselect(name, kinds, default=kinds, key=f"{key}_values_{name}")
    return Filter(ranges, allowed)


def _open_link(run_id: str) -> None:
    st.page_link(
        page_path("train"), label=f"Open run {run_id}", icon=":material/open_in_new:", query_params={RUN_PARAM: run_id}
    )


def runs_view(comparison: Comparison, key: str) -> None:
    """The whole panel for one experiment (``key`` keeps its widgets apart from another experiment's)."""
    table = run_table(comparison)
    if table.empty:
        return
    varied = differing(table)
    axes = [name for name in varied if name != "seed"]
    drawn = table[placed(table)]  # a missing run has no settings to filter or draw; the table still lists it
    chosen = _filters(drawn, axes, key) if axes else Filter({}, {})
    if axes:
        st.plotly_chart(parallel_figure(drawn, axes, chosen), width="stretch", key=f"{key}_parallel")
        st.caption(
            "Each line is a run: its varied settings, then its best and final test accuracy (-1: none yet). "
            "The controls above are the brushes on the axes: runs outside them are greyed here and left "
            "out of the table and curves below."
        )
    kept = table[chosen.keep(table)].reset_index(drop=True)
    only = st.toggle("Only settings that differ", value=True, key=f"{key}_only")
    columns = [*IDENTITY, *(varied if only else SETTINGS), BEST, BEST_STEP, FINAL, "why"]
    event = st.dataframe(
        kept[columns],
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key=f"{key}_runs",
        column_config={
            BEST: st.column_config.NumberColumn(
                BEST, format="%.2f %%", help="The highest test accuracy of any evaluation"
            ),
            BEST_STEP: st.column_config.NumberColumn(BEST_STEP, help="The step it came at"),
            FINAL: st.column_config.NumberColumn(FINAL, format="%.2f %%", help="Full test set, once finished"),
            "why": st.column_config.TextColumn("why", help="Why a run ended early"),
        },
    )
    st.caption(f"{len(kept)} of {len(table)} runs. Select a row to open its run.")
    if event.selection.rows:
        _open_link(kept.iloc[event.selection.rows[0]]["run"])
    curves(comparison, list(kept["run"]), key)


def curves(comparison: Comparison, runs: list[str], key: str) -> None:
    """The chosen metric of every kept run, smoothed over its raw curve, against step, epoch or time."""
    metric_col, x_col, weight_col, log_col = st.columns([2, 2, 3, 1], vertical_alignment="bottom")
    metric = metric_col.selectbox("Curve", CURVE_CHOICES, format_func=lambda m: METRICS[m][0], key=f"{key}_metric")
    x = x_col.segmented_control("x-axis", X_CHOICES, default="step", key=f"{key}_x") or "step"
    weight = weight_col.slider(
        "Smoothing",
        0.0,
        0.99,
        0.6,
        0.01,
        key=f"{key}_smoothing",
        help="Exponential moving average; the raw curve stays as a faint shadow",
    )
    log_x = log_col.toggle("log x", key=f"{key}_logx")
    raw = run_curves(comparison, runs, metric)
    if raw.empty:
        st.info("No kept run has recorded this curve yet.", icon=":material/hourglass_empty:")
        return
    fig = shadowed_curves_figure(raw, smooth(raw, weight), x, METRICS[metric][0], METRICS[metric][0], log_x)
    event = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode="points", key=f"{key}_curves")
    points = event.selection.points if event else []
    picked = next((p.get("customdata") for p in points if p.get("customdata")), None)
    if isinstance(picked, list):
        picked = picked[0]
    if picked in runs:
        _open_link(picked)
    elif not points:
        st.caption("Click a point of a curve to open its run. Smoothing 0 draws the raw curves alone.")
