"""Runs: every run in one table; overlay their curves; export; cancel a queued run; delete your own."""

import streamlit as st

from cifarnet.analysis.curves import METRICS, X_AXES, curves_csv, curves_frame, run_label, runs_table, smooth
from cifarnet.errors import CifarnetError
from cifarnet.runs.folders import SHIPPED_TRIO, delete_run
from cifarnet.runs.queue import cancel_run
from cifarnet.runs.status import ENDED, LIVE, Status
from cifarnet.ui import access, charts
from cifarnet.ui.common import PARAMS_COLUMN, header, literal, message, runs

header(
    "Runs",
    "Every training run: the shipped networks (s10 with BatchNorm, LayerNorm and GroupNorm, two seeds "
    "each, and s9 with each norm, every norm on one recipe and budget per network) and the runs you launched. "
    "Pick runs to overlay their learning curves.",
)

REFRESH_S = 3
BEST_HELP = (
    "Best evaluation during training (including the final one). Short runs evaluate on a subset of "
    "the test set, so this can be above the final accuracy on all 10,000 images"
)
COLUMNS = [
    "run",
    "status",
    "norm",
    "ws",
    "final_acc",
    "best_acc",
    "tta_acc",
    "duration_s",
    "arch",
    "gn_groups",
    "epochs",
    "batch_size",
    "processes",
    "optimizer",
    "lr",
    "schedule",
    "subset",
    "params",
    "created",
    "notes",
]
all_runs = runs()
by_label = {run_label(info): info for info in all_runs}
live = any(info.status in LIVE for info in all_runs)


# Streamlit's pattern for a streaming fragment: it reruns on a timer only while a run trains; when the last
# one ends, a full rerun declares it again without the timer.
@st.fragment(run_every=REFRESH_S if live else None)
def table_and_curves() -> None:
    """The table and the chosen curves; re-read every few seconds while a run is training."""
    fresh = runs()
    if live and not any(info.status in LIVE for info in fresh):
        st.rerun(scope="app")
    labels = {run_label(info): info for info in fresh}
    table = runs_table(fresh)
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_order=COLUMNS,
        placeholder="–",
        column_config={
            "ws": st.column_config.TextColumn(
                "weight std.", help="which convs are weight-standardised: all, all except the depthwise ones, or off"
            ),
            "final_acc": st.column_config.NumberColumn(
                "final acc",
                format="%.2f%%",
                help="Full test set (10,000 images) at the end; while a run trains, its last evaluation",
            ),
            "best_acc": st.column_config.NumberColumn("best acc", format="%.2f%%", help=BEST_HELP),
            "tta_acc": st.column_config.NumberColumn(
                "flip-TTA acc",
                format="%.2f%%",
                help="Final accuracy when each image's prediction is averaged "
                "with its mirror's; – where the run did not measure it",
            ),
            "duration_s": st.column_config.NumberColumn("duration (s)", format="%.0f"),
            "params": PARAMS_COLUMN,
            "processes": st.column_config.NumberColumn(
                "processes",
                help="how many processes trained the run (data-parallel when more than one; its last start)",
            ),
            "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
            "notes": st.column_config.TextColumn("notes", width="large"),
        },
    )
    st.caption(
        "**final acc** is measured on the full test set; **best acc** is the best evaluation during training, "
        "which short runs make on a small subset of it (eval_subset images per class), so it can lie above "
        "the final figure. The shipped runs were measured on an offline JPEG copy: a slightly lossy "
        "re-encoding of CIFAR-10."
    )
    if live:
        st.caption(f"A run is training: this table and the curves refresh every {REFRESH_S} seconds.")
    st.download_button(
        "Download table (CSV)",
        table.to_csv(index=False).encode(),
        "cifarnet-runs.csv",
        "text/csv",
        icon=":material/download:",
    )
    troubled = table[table["notes"] != ""]
    if not troubled.empty:
        with st.expander(
            f"{len(troubled)} run(s) with errors or damaged files", expanded=True, icon=":material/warning:"
        ):
            for _, row in troubled.iterrows():
                st.markdown(f"**{literal(row['run'])}** ({row['status']}): {message(row['notes'])}")

    st.subheader("Compare learning curves")
    shipped = [label for label, info in labels.items() if info.pretrained and info.run_id in SHIPPED_TRIO]
    chosen = st.multiselect("Runs", list(labels), default=shipped, placeholder="choose runs to overlay")
    metrics = st.pills(
        "Metrics",
        list(METRICS),
        default=["test_acc", "train_loss"],
        selection_mode="multi",
        format_func=lambda m: METRICS[m][0],
    )
    controls = st.columns([2, 3, 1], gap="large")
    x_axis = controls[0].segmented_control("x-axis", list(X_AXES), default="epoch") or "epoch"
    weight = controls[1].slider(
        "Smoothing",
        0.0,
        0.99,
        0.0,
        0.01,
        help="Exponential moving average of each curve (0 = raw points, 0.9 = strong)",
    )
    log_y = controls[2].toggle("log y", help="Logarithmic y-axis: useful for losses and the learning rate")
    raw = curves_frame([labels[label] for label in chosen if label in labels], metrics or ())
    frame = smooth(raw, weight)
    if not chosen or not metrics:
        st.info("Choose at least one run and one metric.", icon=":material/touch_app:")
        return
    if frame.empty:
        st.info("The chosen runs have no records for these metrics yet.", icon=":material/hourglass_empty:")
        return
    colors = charts.run_colors(chosen)
    cols = st.columns(2)
    for i, metric in enumerate(metrics):
        part = frame[frame["metric"] == metric]
        cols[i % 2].plotly_chart(
            charts.curve_figure(part, x_axis, "run", METRICS[metric][0], METRICS[metric][0], log_y, colors),
            width="stretch",
            key=f"curve_{metric}",
        )
    st.caption(
        "Test metrics are measured at each evaluation (dots); train metrics average the batches between "
        "log points, with augmentation switched on, which is why train accuracy can sit below test accuracy."
    )
    st.download_button(
        "Download these curves (CSV)",
        curves_csv(raw),
        "cifarnet-curves.csv",
        "text/csv",
        icon=":material/download:",
        help="The recorded values of the chosen runs and metrics, one "
        "row per point; smoothing changes the charts only, never the file",
    )


table_and_curves()

queued = [label for label, info in by_label.items() if info.status == Status.QUEUED]
if queued and access.allowed():
    st.subheader("Cancel a queued run")
    col_pick, col_button = st.columns([5, 1], vertical_alignment="bottom")
    waiting = col_pick.selectbox("Queued run", queued)
    if col_button.button("Cancel run", icon=":material/cancel:", width="stretch"):
        try:
            access.require()
            cancel_run(by_label[waiting].run_id)
        except CifarnetError as exc:  # started or deleted meanwhile
            st.error(literal(exc), icon=":material/warning:")
        else:
            st.toast(f"Cancelled {literal(waiting)}: it will not start.", icon=":material/cancel:")
            st.rerun()

own = [label for label, info in by_label.items() if not info.pretrained and info.status in ENDED]
if own and access.allowed():  # else the notice above the page says why
    st.subheader("Delete a run")
    col_pick, col_confirm, col_button = st.columns([3, 2, 1], vertical_alignment="bottom")
    victim = col_pick.selectbox("Your run", own)
    sure = col_confirm.checkbox("Yes, delete its folder")
    if col_button.button("Delete", icon=":material/delete:", disabled=not sure, width="stretch"):
        try:
            access.require()
            delete_run(by_label[victim].run_id)
        except CifarnetError as exc:
            st.error(message(exc), icon=":material/warning:")
        else:
            st.toast(f"Deleted {literal(victim)}", icon=":material/delete:")
            st.rerun()
    st.caption("Shipped runs cannot be deleted, nor can a run that is training or queued: stop or cancel it first.")
