"""Compare: an experiment's variants side by side, the table of the course write-up and what lies behind it."""

from collections.abc import Iterator
from pathlib import Path

import streamlit as st

from cifarnet.analysis.comparison import (
    CURVE_METRICS,
    SPREAD,
    Comparison,
    caption,
    confusion_difference,
    disagreement,
    load_comparison,
    per_class_table,
    spread_curves,
    summary_table,
)
from cifarnet.analysis.curves import METRICS
from cifarnet.analysis.misclassified import labels_match, page_count, page_of, tiles
from cifarnet.errors import shorten, shown
from cifarnet.runs.experiments import SHIPPED_NAME, list_experiments, shipped_experiment
from cifarnet.ui import charts
from cifarnet.ui.common import PARAMS_COLUMN, data_panel, dataset, header, literal, message, runs_dir
from cifarnet.ui.query import EXPERIMENT_PARAM
from cifarnet.ui.sweep_panel import runs_view

REFRESH_S = 3
COLUMNS, ROWS, SCALE = 8, 3, 3  # 96-pixel tiles, as on the Misclassified page
X_CHOICES = {"epoch": "epoch", "time": "training time"}

header(
    "Compare",
    "An experiment: the same network trained several times, changing one setting (by default the "
    "norm: BatchNorm, LayerNorm, GroupNorm) and the seed. The table is the course write-up's; below it, the "
    "curves, classes and images behind it.",
)

folder = runs_dir()
yours = [e for e in list_experiments(folder) if not e.shipped] if folder else []
experiments = {e.name: e for e in yours if e.name != SHIPPED_NAME}
experiments[SHIPPED_NAME] = shipped_experiment()
if len(experiments) <= len(yours):  # a record made by hand with the shipped one's name (new ones are refused it)
    st.warning(
        f"Your experiment record {SHIPPED_NAME}.json has the shipped experiment's name, so it is not listed "
        "here: rename the file (its runs are on the Runs page).",
        icon=":material/warning:",
    )
names = list(experiments)
linked = st.query_params.get(EXPERIMENT_PARAM)
name = st.selectbox(
    "Experiment",
    names,
    index=names.index(linked) if linked in names else 0,
    format_func=lambda n: "shipped: s10 with BN, LN and GN, seeds 0 and 1" if experiments[n].shipped else n,
    help="Your experiments (newest first), then the shipped one",
)
if st.query_params.get(EXPERIMENT_PARAM) != name:
    st.query_params[EXPERIMENT_PARAM] = name
experiment = experiments[name]


def readings(first: Comparison) -> Iterator[Comparison]:
    """This script run's comparison first (its ``pending`` sets the fragment's timer below), then a fresh one for
    each rerun of the fragment alone (its timer, its widgets): the experiment is read once per refresh, not twice."""
    yield first
    while True:
        yield load_comparison(experiment)


first = load_comparison(experiment)
pending = first.pending
comparisons = readings(first)


def table(comparison: Comparison) -> None:
    """The write-up's table: one row per variant, the best one ticked."""
    summary = summary_table(comparison)
    st.dataframe(
        summary,
        hide_index=True,
        width="stretch",
        placeholder="–",
        column_order=[
            "best",
            "variant",
            "seeds",
            "test_acc_text",
            "train_acc_text",
            "gap_text",
            "tta_acc_text",
            "params",
            "wall_s_text",
        ],
        column_config={
            "best": st.column_config.CheckboxColumn("best", help="The highest mean test accuracy"),
            "seeds": st.column_config.TextColumn(
                "seeds", help="Finished runs (in the figures) of all the variant's runs"
            ),
            "test_acc_text": st.column_config.TextColumn("test acc", help="Full test set, 10,000 images"),
            "train_acc_text": st.column_config.TextColumn(
                "train acc", help="The last epoch's training batches, with augmentation on, as the trainer logged them"
            ),
            "gap_text": st.column_config.TextColumn(
                "train − test", help="Per seed, then averaged: over-fitting shows as a large gap"
            ),
            "tta_acc_text": st.column_config.TextColumn(
                "flip-TTA acc", help="Each image's prediction averaged with its mirror's"
            ),
            "params": PARAMS_COLUMN,
            "wall_s_text": st.column_config.TextColumn("wall time", help="Training time of one run"),
        },
    )
    best = summary[summary["best"]]
    lead = (
        ""
        if best.empty
        else (f"Best: **{literal(best.iloc[0]['variant'])}** at {best.iloc[0]['test_acc_text']} test accuracy. ")
    )
    st.caption(
        f"{lead}Figures are mean ± {SPREAD}; with one seed there is no ±. Only finished runs count. "
        + (
            "The shipped runs were trained on a GPU and measured on an offline JPEG copy of CIFAR-10 "
            "(slightly lossy, within about a point of the original)."
            if comparison.experiment.shipped
            else ""
        )
    )


def curves(comparison: Comparison) -> None:
    """Test accuracy and both losses, one line per variant (mean over seeds) over its seeds' band."""
    frame = spread_curves(comparison)
    if frame.empty:
        st.info("No run of this experiment has recorded a curve yet.", icon=":material/hourglass_empty:")
        return
    x = (
        st.segmented_control("x-axis", list(X_CHOICES), default="epoch", format_func=X_CHOICES.get, key="compare_x")
        or "epoch"
    )
    colors = charts.run_colors(comparison.labels)
    for column, metric in zip(st.columns(len(CURVE_METRICS)), CURVE_METRICS):
        title = METRICS[metric][0]
        column.plotly_chart(
            charts.spread_figure(frame[frame["metric"] == metric], x, title, title, colors),
            width="stretch",
            key=f"compare_{metric}",
        )
    st.caption(
        "The line is the mean over a variant's seeds, the band runs from its lowest to its highest seed. "
        "Runs still training are drawn as far as they got; stopped or failed ones are not."
    )


def classes(comparison: Comparison) -> None:
    frame = per_class_table(comparison)
    if not frame.empty:
        st.plotly_chart(charts.per_class_bars_figure(frame, charts.run_colors(comparison.labels)), width="stretch")


def pair(comparison: Comparison) -> tuple[str, str] | None:
    """Two variants to set against each other (by default the first two)."""
    labels = comparison.labels
    if len(labels) < 2:
        st.info("This experiment has one variant: there is nothing to set it against.", icon=":material/info:")
        return None
    left, right = st.columns(2)
    a = left.selectbox("Variant A", labels, index=0, key=f"compare_a_{name}", format_func=shorten)
    b = right.selectbox("Variant B", labels, index=1, key=f"compare_b_{name}", format_func=shorten)
    if a == b:
        st.info("Choose two different variants.", icon=":material/touch_app:")
        return None
    return a, b


def difference(comparison: Comparison, a: str, b: str) -> None:
    frame = confusion_difference(comparison, a, b)
    if frame is None:
        st.info("The confusion difference needs a finished run of both variants.", icon=":material/hourglass_empty:")
        return
    st.plotly_chart(charts.confusion_difference_figure(frame, a, b), width="stretch")
    st.caption(
        f"Blue: {literal(a)} has more images in that cell, red: {literal(b)} has more. On the diagonal "
        f"blue means {literal(a)} gets more of that class right; the colours fit the mistakes off the "
        "diagonal, so the diagonal's larger numbers saturate."
    )


def gallery(comparison: Comparison, a: str, b: str) -> None:
    """The test images A gets right and B gets wrong, enlarged, with both predictions."""
    found = disagreement(comparison, a, b)
    if found.problem:
        st.info(f"No disagreement gallery: {message(found.problem)}.", icon=":material/hourglass_empty:")
        return
    images = found.images
    st.caption(
        f"{len(images):,} test images that {literal(a)} gets right in every seed and {literal(b)} gets wrong "
        f"in every seed, {literal(b)}'s most confident mistakes first. Each picture: the true class, then each "
        f"variant's prediction with its confidence (averaged over seeds). Pixels enlarged {SCALE}x."
    )
    if images.empty:
        return
    data = dataset()
    if data is None:
        st.caption("The table, curves and classes above need no data set; only these pictures do.")
        return
    if not labels_match({"labels": found.labels}, data.test_y):
        data_panel(
            f"The test set in {shown(Path(data.source))} is not the one these runs were evaluated on (its "
            "labels differ), so its pictures would not match. Point to the real CIFAR-10 to see them."
        )
        return
    per_page = COLUMNS * ROWS
    pages = page_count(len(images), per_page)
    page = st.number_input(
        f"Page (of {pages})", min_value=1, max_value=pages, value=1, step=1, key=f"compare_page_{name}_{a}_{b}"
    )
    part = page_of(images, page, per_page)
    pictures = tiles(data.test_x, part, scale=SCALE)
    for start in range(0, len(part), COLUMNS):
        for column, picture, (_, row) in zip(
            st.columns(COLUMNS), pictures[start : start + COLUMNS], part.iloc[start : start + COLUMNS].iterrows()
        ):
            column.image(picture, width=32 * SCALE)
            column.caption(caption(row, a, b, literal))


# Streamlit's pattern for a streaming fragment (as on the Runs page): it reruns on a timer only while a run of the
# experiment trains or waits; when the last one ends, a full rerun declares it again without the timer.
@st.fragment(run_every=REFRESH_S if pending else None)
def comparison_view() -> None:
    comparison = next(comparisons)
    if pending and not comparison.pending:
        st.rerun(scope="app")
    if comparison.notes:
        with st.expander(
            f"{len(comparison.notes)} run(s) not in the figures", expanded=True, icon=":material/warning:"
        ):
            st.markdown("\n".join(f"- {message(note)}" for note in comparison.notes))
    if not comparison.variants:
        st.error(f"Experiment {literal(experiment.name)} names no runs.", icon=":material/warning:")
        return
    table(comparison)
    st.subheader("Run by run")
    runs_view(comparison, f"runs_{name}")
    if comparison.pending:
        st.caption(f"A run of this experiment is training or queued: this page refreshes every {REFRESH_S} seconds.")
    st.subheader("Learning curves")
    curves(comparison)
    st.subheader("Per-class accuracy")
    classes(comparison)
    st.subheader("Two variants against each other")
    chosen = pair(comparison)
    if chosen:
        difference(comparison, *chosen)
        st.subheader("Where they disagree")
        gallery(comparison, *chosen)


comparison_view()
