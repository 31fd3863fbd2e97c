"""Train: launch a run with the sidebar's settings and follow it live."""

import time

import streamlit as st

from cifarnet.analysis.curves import curves_frame, lr_schedule
from cifarnet.data.augment import preview_grid
from cifarnet.data.images import one_per_class
from cifarnet.errors import CifarnetError, shorten, shown
from cifarnet.runs.early_stop import RULES
from cifarnet.runs.experiments import (
    VARIABLE,
    experiment_rows,
    experiment_runs,
    load_experiment,
    newest_pending,
    parse_seeds,
    parse_vary,
    pending,
)
from cifarnet.runs.folders import RunInfo, read_run, request_stop, run_path
from cifarnet.runs.launch import resume_run, start_run
from cifarnet.runs.monitor import (
    LINKED_REASON,
    Choice,
    choose_run,
    clock,
    describe,
    elapsed_now,
    ended_text,
    is_pending,
    live_run_ids,
    progress_fraction,
    progress_text,
)
from cifarnet.runs.queue import cancel_run, ensure_worker
from cifarnet.runs.records import load_run_config
from cifarnet.runs.status import FAILURES, LIVE, PENDING, RESUMABLE, Status
from cifarnet.runs.sweep import start_sweep
from cifarnet.ui import access, charts
from cifarnet.ui.app import page_path
from cifarnet.ui.common import (
    cached_synthetic,
    data_dir,
    data_panel,
    data_ready,
    dataset,
    header,
    literal,
    message,
    runs_dir,
)
from cifarnet.ui.query import RUN_PARAM
from cifarnet.ui.sidebar import current_config

OWN_KEY = "train_own_run"  # (run id, how): the run this tab launched, resumed or picked
EXPERIMENT_KEY = "train_experiment"  # the experiment this tab launched (its name)
NOTICE_KEY = "train_notice"  # a toast a button callback leaves for the next run (callbacks draw nothing)
ADDRESSED_KEY = "train_addressed"  # (run id, why): a run this tab put in its own address, and why it showed it
REFRESH_S = 1.5
NO_SETTING = "—"  # a second or third setting left out
VARY_ROWS = (
    ("Setting", "Values, comma-separated"),
    ("Second setting", "Its values"),
    ("Third setting", "Their values"),
)

header(
    "Train",
    "Launch a run with the sidebar's settings, or an experiment: the same settings with the norm (or "
    "another setting) varied, its runs queued. Each run trains in its own process: switch pages or reload, "
    "and this tab still follows the run it launched (the address names it).",
)

cfg, error = current_config()
folder = runs_dir()  # None while the runs folder cannot be used (a notice above the page says why)
if cfg is None:
    st.error(f"Fix the sidebar setting before launching: {message(error)}", icon=":material/warning:")
else:
    st.markdown(f"**Launch will train:** {describe(cfg)}")
ready = data_ready()
if not ready:
    data_panel(f"Training needs the CIFAR-10 data set, and it is not in the data folder {shown(data_dir())}.")
blocked = cfg is None or not ready or folder is None
offered = access.allowed()  # else the notice above the page says why no control is here


def queue_experiment(vary: dict | None, seeds: list[int] | None = None, rule: str = "off") -> None:
    """Queue an experiment of the sidebar's settings; this tab then follows its first run and its table."""
    try:
        access.require()
        experiment = start_sweep(
            cfg, vary, seeds=seeds, name=cfg.name or None, runs_dir=folder, data_dir=data_dir(), early_stop=rule
        )
    except CifarnetError as exc:
        st.error(message(exc), icon=":material/warning:")
        return
    st.session_state[EXPERIMENT_KEY] = experiment.name
    st.session_state[OWN_KEY] = (next(iter(experiment.variants.values()))[0].name, "launched")
    st.toast(f"Queued experiment {literal(experiment.name)}", icon=":material/science:")


if offered:
    launch_col, compare_col, vary_col = st.columns(3)
    if launch_col.button(
        "Launch run", type="primary", icon=":material/rocket_launch:", disabled=blocked, width="stretch"
    ):
        try:
            access.require()
            launched = start_run(cfg, folder, data_dir())
        except CifarnetError as exc:
            st.error(message(exc), icon=":material/warning:")
        else:
            st.session_state[OWN_KEY] = (launched, "launched")
            st.toast(f"Started run {literal(launched)}", icon=":material/rocket_launch:")
    if compare_col.button(
        "Compare norms",
        icon=":material/science:",
        disabled=blocked,
        width="stretch",
        help="These settings with BN, LN and GN: an experiment of three runs, queued under the "
        "limit of simultaneous runs",
    ):
        queue_experiment(None)
    with vary_col.popover("Vary a setting", icon=":material/tune:", disabled=blocked, width="stretch"):
        specs = []
        for number, (label, values_label) in enumerate(VARY_ROWS):  # a second and third setting make a grid
            left, right = st.columns([2, 3])
            options = VARIABLE if number == 0 else (NO_SETTING, *VARIABLE)
            field = left.selectbox(
                label, options, index=options.index("norm") if number == 0 else 0, key=f"vary_field_{number}"
            )
            values = right.text_input(
                values_label,
                placeholder="e.g. bn,ln,gn or 0.05,0.1",
                key=f"vary_values_{number}",
                disabled=field == NO_SETTING,
            )
            specs += [] if field == NO_SETTING else [f"{field}={values}"]
        seeds = st.text_input("Seeds, space-separated", placeholder=f"{cfg.seed if cfg else 0}")
        rule = st.selectbox(
            "Early stopping",
            RULES,
            help="Stop runs clearly behind the others at the same step: "
            "median = the median stopping rule, asha = successive halving",
        )
        if st.button("Launch experiment", type="primary", icon=":material/science:"):
            try:
                vary, seed_list = parse_vary(specs), parse_seeds(seeds.split()) if seeds.strip() else None
            except CifarnetError as exc:
                st.error(message(exc), icon=":material/warning:")
            else:
                queue_experiment(vary, seed_list, rule)


def cancel(run_id: str) -> None:
    """Button callback: the queued run ``run_id`` never starts."""
    try:
        access.require()
        cancel_run(run_id, folder)
    except CifarnetError as exc:  # started or deleted meanwhile
        st.session_state[NOTICE_KEY] = str(exc)
    else:
        st.session_state[NOTICE_KEY] = f"Cancelled {shorten(run_id)}: it will not start."


def own_experiment():
    """The experiment this tab launched, else the newest one still running (after a reload or a restart); None
    when there is neither, or its record is gone."""
    name = st.session_state.get(EXPERIMENT_KEY)
    try:
        return None if folder is None else load_experiment(name, folder) if name else newest_pending(folder)
    except CifarnetError:
        return None


waiting = (experiment := own_experiment()) is not None and pending(experiment_runs(experiment))


@st.fragment(run_every=REFRESH_S if waiting else None)
def experiment_table() -> None:
    """The runs of the experiment this tab launched, with their status; refreshed while any waits or trains."""
    shown_experiment = own_experiment()
    if shown_experiment is None:
        return
    runs = experiment_runs(shown_experiment)  # read once: both the pending check and the table use it
    if pending(runs) != waiting:
        st.rerun(scope="app")
    try:
        ensure_worker(folder)  # a queue worker that died (kill -9) is replaced at the next refresh
    except CifarnetError as exc:
        st.warning(f"Queued runs cannot start: {literal(exc)}", icon=":material/warning:")
    rows = experiment_rows(runs)
    st.subheader(f"Experiment {literal(shown_experiment.name)}")
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent")
        },
    )
    queued = [row["run"] for row in rows if row["status"] == Status.QUEUED]
    if queued:
        st.caption("Queued runs start by themselves as running ones end, with or without this page open.")
    if queued and offered:
        for column, run_id in zip(st.columns(min(len(queued), 4)) * 8, queued):
            column.button(
                f"Cancel {literal(run_id)}",
                key=f"cancel-{run_id}",
                icon=":material/cancel:",
                on_click=cancel,
                args=(run_id,),
                width="stretch",
            )


experiment_table()


def chosen() -> Choice:
    """The run to show: this tab's own, else the address's, else the newest live one, else the newest."""
    if folder is None:
        return Choice(None, "the runs folder cannot be used")
    choice = choose_run(st.session_state.get(OWN_KEY), st.query_params.get(RUN_PARAM), folder)
    addressed = st.session_state.get(ADDRESSED_KEY)
    if addressed and addressed[0] == choice.run_id and choice.why == LINKED_REASON:
        return Choice(choice.run_id, addressed[1])  # the page wrote that address itself: the first reason holds
    return choice


def follow(run_id: str, how: str) -> None:
    """Button callback: this tab now follows ``run_id``."""
    st.session_state[OWN_KEY] = (run_id, how)


def stop(run_id: str) -> None:
    """Button callback, bound to the run on screen when the button was drawn: never another one."""
    try:
        access.require()
        request_stop(run_id, folder)
    except CifarnetError as exc:  # deleted meanwhile
        st.session_state[NOTICE_KEY] = str(exc)
    else:
        st.session_state[NOTICE_KEY] = (
            f"Stop requested for {shorten(run_id)}: it ends after its step and keeps a checkpoint."
        )


polling = (followed := chosen().run_id) is not None and is_pending(followed, folder)
if cfg is not None:  # folded while a run trains, so its progress and curves fit on one screen
    with st.expander("Learning-rate schedule of these settings", expanded=not polling, icon=":material/show_chart:"):
        st.plotly_chart(charts.lr_figure(lr_schedule(cfg)), width="stretch")
        st.caption("The learning rate at each step (the schedule is stepped per batch).")


# Streamlit's pattern for a streaming fragment: ``run_every`` is set only while the shown run trains;
# when that changes, a full rerun declares the fragment again with the other setting.
@st.fragment(run_every=REFRESH_S if polling else None)
def followed_run() -> None:
    """The run this tab follows, with its progress and curves; refreshed while it trains."""
    choice = chosen()
    if choice.run_id is None:
        st.info(
            f"No run yet. Launch one above; its curves appear here and update every {REFRESH_S:g} seconds.",
            icon=":material/hourglass_empty:",
        )
        return
    try:
        info = read_run(run_path(choice.run_id, folder))
    except CifarnetError:  # deleted meanwhile
        st.session_state.pop(OWN_KEY, None)
        st.rerun(scope="app")
    if (info.status in PENDING) != polling:
        st.rerun(scope="app")
    if st.query_params.get(RUN_PARAM) != info.run_id:
        st.query_params[RUN_PARAM] = info.run_id
        st.session_state[ADDRESSED_KEY] = (info.run_id, choice.why)
    if NOTICE_KEY in st.session_state:
        st.toast(message(st.session_state.pop(NOTICE_KEY)), icon=":material/stop_circle:")
    _title(info, choice)
    others = [run_id for run_id in live_run_ids(folder) if run_id != info.run_id]
    for other in others:
        note, button = st.columns([4, 1], vertical_alignment="center")
        note.caption(f"Also training: {literal(other)}.")
        button.button("Show it", key=f"show-{other}", on_click=follow, args=(other, "picked"), width="stretch")
    progress = info.progress
    st.progress(
        progress_fraction(progress),
        text=progress_text(progress)
        if info.status in LIVE
        else "waiting for a free slot"
        if info.status == Status.QUEUED
        else ended_text(info.status, progress),
    )
    _status_note(info)
    loss_col, acc_col, numbers = st.columns([5, 5, 2])
    numbers.metric("train loss", f"{progress['train_loss']:.3f}" if "train_loss" in progress else "–")
    numbers.metric("train accuracy", f"{100 * progress['train_acc']:.1f}%" if "train_acc" in progress else "–")
    test = info.final_acc
    numbers.metric(
        "test accuracy",
        "–" if test is None else f"{100 * test:.1f}%",
        help="On the evaluation subset during training; on the full test set once finished",
    )
    numbers.metric(
        "elapsed",
        clock(elapsed_now(info.status_record, time.time()) if info.status in LIVE else progress.get("elapsed_s")),
    )  # ticks at each refresh, between records
    frame = curves_frame([info], ("train_loss", "test_loss", "train_acc", "test_acc"))
    if frame.empty:
        loss_col.caption("Waiting for the first logged steps...")
        return
    loss_col.plotly_chart(
        charts.curve_figure(
            frame[frame["metric"].str.endswith("loss")], "step", "metric", "Loss", "cross-entropy loss"
        ),
        width="stretch",
    )
    acc_col.plotly_chart(
        charts.curve_figure(frame[frame["metric"].str.endswith("acc")], "step", "metric", "Accuracy", "accuracy (%)"),
        width="stretch",
    )
    st.caption(
        "Train numbers average the batches since the previous point (with augmentation); test numbers "
        "are evaluations on held-out images (dots). A widening gap between them is overfitting."
    )


def _title(info: RunInfo, choice: Choice) -> None:
    """Which run this is and why it is the one shown, with the one action that fits its status."""
    title, action = st.columns([4, 1], vertical_alignment="center")
    processes = f" · {info.world_size} processes" if info.world_size > 1 else ""
    title.subheader(f"Run {literal(info.run_id)} · {info.status}{processes}")
    if info.status in LIVE and offered:
        action.button(
            "Stop run",
            icon=":material/stop_circle:",
            width="stretch",
            key=f"stop-{info.run_id}",
            on_click=stop,
            args=(info.run_id,),
        )
    elif (
        info.status in RESUMABLE
        and not info.pretrained
        and offered
        and action.button("Resume run", icon=":material/play_circle:", width="stretch", key=f"resume-{info.run_id}")
    ):
        try:
            access.require()
            resume_run(info.run_id, folder, data_dir())
        except CifarnetError as exc:
            st.error(message(exc), icon=":material/warning:")
        else:
            follow(info.run_id, "resumed")
            st.toast(f"Resuming {literal(info.run_id)} from its last checkpoint", icon=":material/play_circle:")
            st.rerun(scope="app")
    try:
        settings = describe(load_run_config(info.path))
    except CifarnetError:
        settings = "its settings are unreadable"
    with title:
        st.caption(f"Shown because {choice.why}. {settings}.")
    action.page_link(page_path("runs"), label="All runs", icon=":material/monitoring:")


def _status_note(info) -> None:
    """One line on how the run ended, with the trainer's own words for failures."""
    error = info.status_record.get("error")
    if info.status == Status.FINISHED:
        st.success(
            f"Finished: {100 * (info.final_acc or 0):.2f}% on the full test set. Compare it on the Runs "
            "page, or look at its mistakes on the Misclassified page.",
            icon=":material/check_circle:",
        )
    elif info.status == Status.STOPPED:
        st.warning(
            "Stopped on request. Its checkpoint is kept: **Resume run** continues from the step it reached.",
            icon=":material/stop_circle:",
        )
    elif info.status == Status.STOPPED_EARLY:
        reason = info.status_record.get("reason")
        st.warning(
            f"Stopped early by its sweep's rule: {message(reason or 'no reason recorded')}. Its checkpoint is kept: "
            "**Resume run** trains it on.",
            icon=":material/stop_circle:",
        )
    elif info.status == Status.QUEUED:
        st.info("Queued: it starts by itself when one of the running runs ends.", icon=":material/schedule:")
    elif info.status == Status.CANCELLED:
        st.info("Cancelled before it started.", icon=":material/cancel:")
    elif info.status in FAILURES:
        st.error(f"The run {info.status}: {message(error or 'no reason recorded')}", icon=":material/error:")
    if info.damage:
        st.warning(f"Damaged records: {message('; '.join(info.damage))}", icon=":material/warning:")


followed_run()

st.divider()
st.subheader("Augmentation preview")
st.caption(
    "What the network sees during training with the sidebar's augmentation switches. "
    "The first column is the original test image; each other column is an independent random draw."
)
if cfg is not None:
    data = dataset() if ready else None
    if data is None:
        data = cached_synthetic()
        st.caption("(showing synthetic pattern images until the data set is available)")
    seed = st.session_state.setdefault("preview_seed", 0)
    grid = preview_grid(one_per_class(data.test_x, data.test_y, 4), cfg, seed=seed, rows=4, cols=8, scale=4)
    st.image(grid)
    if st.button("New random draw", icon=":material/casino:"):
        st.session_state["preview_seed"] = seed + 1
        st.rerun()
