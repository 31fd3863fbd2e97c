"""Misclassified: the test images a run got wrong, its confusion matrix and per-class accuracy."""

from pathlib import Path

import streamlit as st

from cifarnet.analysis.curves import run_label
from cifarnet.analysis.misclassified import (
    caption,
    cell_from_selection,
    confusion_frame,
    filter_mistakes,
    labels_match,
    mistakes,
    page_count,
    page_of,
    per_class_frame,
    runs_with_predictions,
    tiles,
)
from cifarnet.errors import shown
from cifarnet.runs.records import read_predictions
from cifarnet.ui import charts
from cifarnet.ui.common import data_panel, dataset, header, literal, runs
from cifarnet.ui.inside import gallery_overlays, inside_link

COLUMNS, ROWS = 8, 4
SCALE = 3  # 96-pixel tiles: 8 of them fit side by side, unshrunk, in the main column of a 1400-pixel window
ANY = "any"
TRUE_KEY, PRED_KEY, CELL_KEY = "mis_true", "mis_pred", "mis_cell"

header(
    "Misclassified",
    "Where a trained model goes wrong. The confusion matrix counts, for every true class "
    "(rows), which class the model predicted (columns); below are the test images themselves.",
)

candidates = {run_label(info): info for info in runs_with_predictions(runs())}
if not candidates:
    st.info(
        "No run has test-set predictions yet; they are written when a run finishes.", icon=":material/hourglass_empty:"
    )
    st.stop()
label = st.selectbox("Run", list(candidates), help="Runs that finished (shipped runs included)")
info = candidates[label]
classes = info.results["classes"]
st.session_state.setdefault(TRUE_KEY, ANY)
st.session_state.setdefault(PRED_KEY, ANY)

matrix_col, class_col = st.columns([3, 2], gap="large")
event = matrix_col.plotly_chart(
    charts.confusion_figure(confusion_frame(info.results)),
    width="stretch",
    on_select="rerun",
    selection_mode="points",
    key=f"confusion_{label}",
)
class_col.plotly_chart(charts.per_class_figure(per_class_frame(info.results)), width="stretch")
cell = cell_from_selection(event, classes)
if cell is not None and cell != st.session_state.get(CELL_KEY):
    st.session_state[TRUE_KEY], st.session_state[PRED_KEY] = cell  # a new click picks the filters below
st.session_state[CELL_KEY] = cell

st.subheader("Misclassified test images")
filters = st.columns([3, 3, 3, 2], vertical_alignment="bottom")
true = filters[0].selectbox("True class", [ANY, *classes], key=TRUE_KEY)
predicted = filters[1].selectbox("Predicted class", [ANY, *classes], key=PRED_KEY)
cam = filters[3].toggle(
    "Grad-CAM",
    key="mis_cam",
    help="Draw over each picture where the model found the evidence "
    "for the class it (wrongly) predicted, at its last block",
)

predictions = read_predictions(info.path)
if predictions is None:
    st.warning(
        f"The predictions file of {literal(label)} is unreadable, so its images cannot be listed.",
        icon=":material/warning:",
    )
    st.stop()
data = dataset()
if data is None:
    st.stop()
if not labels_match(predictions, data.test_y):
    data_panel(
        f"The test set in {shown(Path(data.source))} is not the one this run was evaluated on (its labels "
        "differ), so its pictures would not match the predictions. Point to the real CIFAR-10 to see them."
    )
    st.stop()

wrong = mistakes(predictions, classes)
shown = filter_mistakes(wrong, None if true == ANY else true, None if predicted == ANY else predicted)
per_page = COLUMNS * ROWS
pages = page_count(len(shown), per_page)
page = filters[2].number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, step=1)
st.caption(
    f"{len(shown):,} of {len(wrong):,} mistakes on {len(predictions['labels']):,} test images, most "
    "confident first. Each picture is titled **predicted** / **actual**, then the model's top-3 "
    f"probabilities. Pixels are enlarged {SCALE}x ({32 * SCALE}x{32 * SCALE}) without smoothing: this is all "
    "the network sees. Click a picture to look inside the network for it."
)
if shown.empty:
    note = " (a diagonal cell: those are correct predictions)" if true == predicted != ANY else ""
    st.info(f"No mistakes for this filter{note}.", icon=":material/done_all:")
    st.stop()
part = page_of(shown, page, per_page)
pictures = gallery_overlays(info, data, part, classes, SCALE) if cam else tiles(data.test_x, part, scale=SCALE)
for start in range(0, len(part), COLUMNS):  # one row of columns per grid row: a wrapped caption moves only its row
    for column, picture, (_, row) in zip(
        st.columns(COLUMNS), pictures[start : start + COLUMNS], part.iloc[start : start + COLUMNS].iterrows()
    ):
        column.image(picture, width=32 * SCALE, link=inside_link(info, int(row["index"])))
        column.caption(caption(row, literal))
