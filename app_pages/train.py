"""Train: launch a run with the sidebar's settings and follow it live."""

import streamlit as st

from cifarnet.augment import AugmentSpec, preview_grid
from cifarnet.curves import curves_frame, lr_schedule
from cifarnet.errors import CifarnetError, shown
from cifarnet.images import one_per_class
from cifarnet.launch import resume_run, start_run
from cifarnet.monitor import clock, describe, newest_live_run, progress_fraction, progress_text
from cifarnet.runs import LIVE, read_run, request_stop, run_path
from cifarnet.ui import charts
from cifarnet.ui.common import cached_synthetic, data_dir, data_panel, data_ready, dataset, header, literal, runs_dir
from cifarnet.ui.sidebar import current_config

WATCH_KEY = "watch_run"
REFRESH_S = 1.5

header("Train", "Launch a training run with the settings in the sidebar. It trains in its own process, so "
       "you can switch pages, reload or open a second tab: the live run is picked up again from the runs folder.")

cfg, error = current_config()
launch_col, lr_col = st.columns([3, 2], gap="large")
with launch_col:
    if cfg is None:
        st.error(f"Fix the sidebar setting before launching: {literal(error)}", icon=":material/warning:")
    else:
        st.markdown(f"**This run:** {describe(cfg)}")
    ready = data_ready()
    if not ready:
        data_panel(f"Training needs the CIFAR-10 data set, and it is not in the data folder {shown(data_dir())}.")
    folder = runs_dir()
    if st.button("Launch run", type="primary", icon=":material/rocket_launch:",
                 disabled=cfg is None or not ready or folder is None):
        try:
            st.session_state[WATCH_KEY] = start_run(cfg, folder, data_dir())
        except CifarnetError as exc:
            st.error(literal(exc), icon=":material/warning:")
        else:
            st.toast(f"Started run {literal(st.session_state[WATCH_KEY])}", icon=":material/rocket_launch:")
with lr_col:
    if cfg is not None:
        st.plotly_chart(charts.lr_figure(lr_schedule(cfg)), width="stretch")
        st.caption("The learning rate this configuration will use at each step (the schedule is stepped per batch).")


@st.fragment(run_every=REFRESH_S)
def live_run() -> None:
    """The newest live run (any tab, any session), else the one this session launched last."""
    folder = runs_dir()
    run_id = (newest_live_run(folder) if folder else None) or st.session_state.get(WATCH_KEY)
    if run_id is None:
        st.info("No run yet. Launch one above; its curves appear here and update every "
                f"{REFRESH_S:g} seconds. Past runs are on the Runs page.", icon=":material/hourglass_empty:")
        return
    try:
        info = read_run(run_path(run_id, folder))
    except CifarnetError:
        st.session_state.pop(WATCH_KEY, None)  # deleted meanwhile
        return
    progress = info.progress
    title, stop_col = st.columns([4, 1], vertical_alignment="center")
    title.subheader(f"Run {literal(run_id)} · {info.status}")
    if info.status in LIVE and stop_col.button("Stop run", icon=":material/stop_circle:", width="stretch"):
        request_stop(run_id, folder)
        st.toast("Stop requested: the run ends after its current step and keeps a checkpoint.",
                 icon=":material/stop_circle:")
    if info.status in ("stopped", "failed") and stop_col.button("Resume run", icon=":material/play_circle:",
                                                                  width="stretch"):
        try:
            resume_run(run_id, folder, data_dir())
        except CifarnetError as exc:
            st.error(literal(exc), icon=":material/warning:")
        else:
            st.toast(f"Resuming {literal(run_id)} from its last checkpoint", icon=":material/play_circle:")
    st.progress(progress_fraction(progress), text=progress_text(progress) if info.status in LIVE
                else f"{info.status} after {progress.get('step', 0)} of {progress.get('total_steps', '?')} steps")
    _status_note(info)
    cols = st.columns(4)
    cols[0].metric("train loss", f"{progress['train_loss']:.3f}" if "train_loss" in progress else "–")
    cols[1].metric("train accuracy", f"{100 * progress['train_acc']:.1f}%" if "train_acc" in progress else "–")
    test = info.final_acc
    cols[2].metric("test accuracy", "–" if test is None else f"{100 * test:.1f}%",
                   help="On the evaluation subset during training; on the full test set once finished")
    cols[3].metric("elapsed", clock(progress.get("elapsed_s")))
    frame = curves_frame([info], ("train_loss", "test_loss", "train_acc", "test_acc"))
    if frame.empty:
        st.caption("Waiting for the first logged steps...")
        return
    loss_col, acc_col = st.columns(2)
    loss_col.plotly_chart(charts.curve_figure(frame[frame["metric"].str.endswith("loss")], "step", "metric",
                                              "Loss", "cross-entropy loss"), width="stretch")
    acc_col.plotly_chart(charts.curve_figure(frame[frame["metric"].str.endswith("acc")], "step", "metric",
                                             "Accuracy", "accuracy (%)"), width="stretch")
    st.caption("Train numbers average the batches since the previous point (with augmentation); test numbers "
               "are evaluations on held-out images (dots). A widening gap between them is overfitting.")


def _status_note(info) -> None:
    """One line on how the run ended, with the trainer's own words for failures."""
    error = info.status_record.get("error")
    if info.status == "finished":
        st.success(f"Finished: {100 * (info.final_acc or 0):.2f}% on the full test set. Compare it on the Runs "
                   "page, or look at its mistakes on the Misclassified page.", icon=":material/check_circle:")
    elif info.status == "stopped":
        st.warning("Stopped on request. Its checkpoint is kept: **Resume run** continues from the step it "
                   "reached.", icon=":material/stop_circle:")
    elif info.status in ("failed", "diverged"):
        st.error(f"The run {info.status}: {literal(error or 'no reason recorded')}", icon=":material/error:")


live_run()

st.divider()
st.subheader("Augmentation preview")
st.caption("What the network sees during training with the sidebar's augmentation switches. "
           "The first column is the original test image; each other column is an independent random draw.")
if cfg is not None:
    data = dataset() if ready else None
    if data is None:
        data = cached_synthetic()
        st.caption("(showing synthetic pattern images until the data set is available)")
    seed = st.session_state.setdefault("preview_seed", 0)
    grid = preview_grid(one_per_class(data.test_x, data.test_y, 4), AugmentSpec.from_config(cfg), seed=seed,
                        rows=4, cols=8, scale=4)
    st.image(grid)
    if st.button("New random draw", icon=":material/casino:"):
        st.session_state["preview_seed"] = seed + 1
        st.rerun()
