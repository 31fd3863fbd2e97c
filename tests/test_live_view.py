"""The live view moves, also on a busy machine: a trainer records by time as well as by steps, and the Train page
draws what it has (a lone point as a marker) and ticks the elapsed time between records."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, run_cli, texts

from cifarnet.analysis.comparison import caption
from cifarnet.config import make_config
from cifarnet.runs.experiments import list_experiments, newest_pending
from cifarnet.runs.folders import create_run, read_run
from cifarnet.runs.monitor import clock, describe, elapsed_now, ended_text
from cifarnet.runs.records import read_metrics, write_json
from cifarnet.training.engine import RECORD_EVERY_S
from cifarnet.ui import charts
from cifarnet.wording import plural, with_article

# 500 images in batches of 25: 20 steps, a record by steps every 4 of them
STEADY = ["--subset", "50", "--epochs", "1", "--batch-size", "25", "--eval-subset", "10", "--no-tta", "--quiet"]


@pytest.mark.slow
def test_a_trainer_records_after_its_first_step_and_then_by_time(tmp_path, data_dir):
    runs = tmp_path / "runs"
    done = run_cli("train", *STEADY, "--runs-dir", str(runs), "--data-dir", str(data_dir), timeout=900)
    assert done.returncode == 0, done.stderr
    (run,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    train = [r for r in read_metrics(run / "metrics.jsonl")[0] if r["kind"] == "train"]
    assert train[0]["step"] == 1  # the first point right after the first step, not after four
    gaps = [b["time"] - a["time"] for a, b in zip(train, train[1:])]
    assert statistics.median(gaps) <= 2 * RECORD_EVERY_S, gaps
    steps = [r["step"] for r in train]
    assert steps == sorted(set(steps)) and steps[-1] == 20  # one record a step at most, and the epoch's last


# -- the Train page and the pages around it ---------------------------------------------------------------------


def _run_with_status(runs_dir: Path, name: str, **status) -> Path:
    path = create_run(make_config({"name": name, "epochs": 1, "subset": 20, "batch_size": 16}), runs_dir)
    write_json(path / "status.json", {"pid": None, **status})
    return path


def _experiment(runs_dir: Path, name: str, runs: list[Path]) -> None:
    folder = runs_dir / ".experiments"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        folder / f"{name}.json",
        {"name": name, "vary": {"norm": ["bn"]}, "seeds": [0], "variants": {"norm=bn": [p.name for p in runs]}},
    )


def test_a_running_experiment_is_shown_even_when_a_newer_one_has_ended(runs_dir):
    waiting = _run_with_status(runs_dir, "old-bn", status="queued")
    _experiment(runs_dir, "old", [waiting])
    time.sleep(0.02)
    _experiment(runs_dir, "new", [_run_with_status(runs_dir, "new-bn", status="cancelled")])
    assert [e.name for e in list_experiments(runs_dir)][:2] == ["new", "old"]
    shown_now = newest_pending(runs_dir)
    assert shown_now is not None and shown_now.name == "old"  # its queued run stays within reach of a Cancel


def test_the_runs_page_cancels_a_queued_run_and_never_offers_a_training_one_for_deletion(app, runs_dir):
    queued = _run_with_status(runs_dir, "waiting", status="queued")
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "cifarnet"])  # its process
    try:
        training = _run_with_status(runs_dir, "training", status="running", pid=trainer.pid)
        _run_with_status(runs_dir, "ended", status="stopped", progress={"step": 3, "total_steps": 40})
        assert read_run(training).status == "running"
        at = app("runs")
        (cancel_box, delete_box) = [box for box in at.selectbox if box.label in ("Queued run", "Your run")]
        assert cancel_box.options == ["waiting"]
        assert not {"waiting", "training"} & set(delete_box.options) and "ended" in delete_box.options
        next(b for b in at.button if b.label == "Cancel run").click().run()
        assert not at.exception and read_run(queued).status == "cancelled"
    finally:
        trainer.kill()
        trainer.wait()


def test_the_train_page_says_why_it_shows_a_run_after_writing_its_address(app, runs_dir):
    _run_with_status(runs_dir, "ended", status="stopped", progress={})
    at = app("train")
    assert at.query_params["run"] == "ended"
    at.run()  # the next refresh reads the address the page wrote itself
    captions = texts(at.caption)
    assert "Shown because it is the newest run; none is training." in captions
    assert "Shown because the page's address names it" not in captions
    bar = at.get("progress")[0].proto.text
    assert bar == "stopped before its first step", bar


def test_the_elapsed_time_ticks_between_records():
    record = {"status": "running", "updated": 1000.0, "progress": {"elapsed_s": 12.0}}
    assert elapsed_now(record, 1000.0) == 12.0 and elapsed_now(record, 1004.5) == 16.5
    assert elapsed_now({"status": "starting"}, 1004.5) is None  # before the first record: unknown, not zero
    assert clock(elapsed_now(record, 1049.0)) == "1:01"


def test_the_train_page_refreshes_its_live_view_every_refresh_period():
    """The elapsed metric ticks only if the page redraws between records: its fragment runs on a timer."""
    source = (ROOT / "app_pages" / "train.py").read_text()
    assert "@st.fragment(run_every=REFRESH_S if polling else None)" in source and "elapsed_now(" in source


def test_ended_runs_say_how_far_they_got_in_words():
    assert ended_text("stopped", {}) == "stopped before its first step"
    assert ended_text("stopped", {"step": 3, "total_steps": 40}) == "stopped after 3 of 40 steps"
    assert ended_text("failed", {"step": 1}) == "failed after 1 step"


def test_counts_and_articles_read_as_english():
    assert plural(1, "epoch") == "1 epoch" and plural(2, "epoch") == "2 epochs" and plural(0.5, "epoch") == "0.5 epochs"
    assert with_article("airplane") == "an airplane" and with_article("truck") == "a truck"
    assert with_article("automobile") == "an automobile" and with_article("") == "a "
    one = describe(make_config({"epochs": 1, "subset": 1, "batch_size": 10}))
    assert "1 epoch of 1 step (1 in all)" in one and "epochs" not in one


def test_a_lone_point_is_drawn_as_a_marker():
    frame = pd.DataFrame({"step": [1], "metric": ["train_loss"], "value": [2.3], "run": ["r"]})
    (trace,) = charts.curve_figure(frame, "step", "metric", "Loss", "loss").data
    assert "markers" in trace.mode


def test_activation_statistics_name_each_model_in_a_legend_inside_the_figure():
    relu = pd.DataFrame(
        {
            "model": ["BN", "BN", "LN", "LN"],
            "#": [1, 2, 1, 2],
            "layer": ["a", "b", "a", "b"],
            "mean": [0.1] * 4,
            "std": [0.2] * 4,
            "zeros": [0.5] * 4,
        }
    )
    norm = pd.DataFrame(
        {
            "model": ["BN", "LN"],
            "#": [1, 1],
            "layer": ["n", "n"],
            **{f"{stat}_{when}": [0.3, 0.4] for stat in ("channel", "image") for when in ("before", "after")},
        }
    )
    colors = {"BN": "#1f77b4", "LN": "#ff7f0e"}
    for fig in (charts.relu_stats_figure(relu, colors), charts.norm_spread_figure(norm, colors)):
        assert sorted(t.name for t in fig.data if t.showlegend is not False) == ["BN", "LN"]
        assert fig.layout.legend.yref == "container" and 0 <= fig.layout.legend.y <= 1  # on the canvas


def test_gallery_captions_say_whose_confidence_each_is():
    row = pd.Series({"true": "cat", "a": [("cat", 0.93)], "b": [("dog", 0.80)]})
    text = caption(row, "BN", "LN", str)
    assert "BN says :green[cat (93% sure)]" in text and "LN says :red[dog (80% sure)]" in text
