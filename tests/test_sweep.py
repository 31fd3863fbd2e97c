"""Issue 27: sweeps (grid x random draws x seeds) as experiments, refused in one line before anything starts, capped
unless raised deliberately; early stopping judged at equal steps (median rule, ASHA), recorded as ``stopped early``
with its reason; the Compare page's run-by-run views (best value and its step, filters, smoothing)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import (
    HAND_MADE,
    TINY,
    TINY_FLAGS,
    hand_made_run,
    hand_made_sweep,
    most_trainers_while,
    run_cli,
    start_cli,
    texts,
    wait_for,
)

from cifarnet import CifarnetError
from cifarnet.analysis.comparison import load_comparison
from cifarnet.analysis.sweep_view import BEST, BEST_STEP, FINAL, Filter, best_eval, differing, placed, run_table
from cifarnet.cli import main
from cifarnet.config import make_config
from cifarnet.runs.early_stop import asha_reason, judge, median_reason
from cifarnet.runs.experiments import load_experiment
from cifarnet.runs.folders import read_run
from cifarnet.runs.queue import enqueue, ensure_worker
from cifarnet.runs.records import EXPERIMENTS_FOLDER, write_json
from cifarnet.runs.status import Status
from cifarnet.runs.sweep import parse_random, plan_sweep

# -- plans and refusals ---------------------------------------------------------------------------


def test_a_sweep_is_grid_times_draws_times_seeds_and_reproducible(runs_dir, data_dir):
    count, ranges = parse_random(["3", "weight_decay=log:1e-5:1e-3"])
    base = make_config(TINY)
    plan = plan_sweep(
        base, {"norm": ["bn", "gn"], "lr": [0.05, 0.1]}, ranges, count, [0, 1], "s", runs_dir, data_dir=data_dir
    )
    assert len(plan.runs) == 2 * 2 * 3 and all(len(configs) == 2 for configs in plan.runs.values())
    decays = plan.vary["weight_decay"]
    assert len(decays) == 3 and all(1e-5 <= d <= 1e-3 for d in decays)
    assert plan.extra["sweep"]["random"] == {"weight_decay": "log:1e-05:0.001"}
    again = plan_sweep(
        base, {"norm": ["bn", "gn"], "lr": [0.05, 0.1]}, ranges, count, [0, 1], "s2", runs_dir, data_dir=data_dir
    )
    assert again.vary == plan.vary  # the draws are seeded: the same plan twice
    first = next(iter(plan.runs.values()))[0]
    assert (first.norm, first.lr, first.seed) == ("bn", 0.05, 0) and first.name.startswith("s-norm-bn-lr-0.05-")
    assert not runs_dir.exists()  # planning creates nothing


@pytest.mark.parametrize(
    "args, message",
    [
        (["--grid", "lr=0.1,0.2", "--random", "2", "lr=log:0.01:0.5"], "lr is both in --grid and --random"),
        (["--random", "4", "lr=log:0:1"], "--random 'lr=log:0:1': lr=0.0 is out of range"),
        (["--random", "4", "lr=cubic:0.01:1"], "scale 'cubic' is not known; allowed: log, uniform"),
        (["--random", "4", "norm=log:1:2"], "norm is not a number; give its values with --grid"),
        (["--random", "four", "lr=log:0.01:1"], "give the number of draws first"),
        (["--random", "4", "lr=log:0.5:0.1"], "the low bound must be below the high one"),
        (
            ["--grid", "norm=bn,ln,gn", "--grid", "lr=0.01,0.02,0.05,0.1", "--seeds", "0", "1", "2"],
            (
                "the experiment would train 36 runs; allowed: at most 32 (fewer values or seeds, or raise the cap with "
                "--max-runs)"
            ),
        ),
        (["--grid", "norm=bn,ln", "--max-runs", "0"], "--max-runs '0' is not allowed; allowed: a whole number from 1"),
        (["--grid", "norm=bn,xn"], "norm='xn' is not known"),
    ],
)
def test_bad_sweep_specs_are_refused_in_one_line_before_anything_starts(args, message, runs_dir, capsys):
    assert main(["sweep", *args, "--runs-dir", str(runs_dir)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_the_cap_is_raised_deliberately(runs_dir, data_dir):
    grid = {"norm": ["bn", "ln", "gn"], "lr": [0.01, 0.02, 0.05, 0.1]}
    with pytest.raises(CifarnetError, match="at most 32"):
        plan_sweep(make_config(TINY), grid, seeds=[0, 1, 2], name="big", runs_dir=runs_dir, data_dir=data_dir)
    plan = plan_sweep(
        make_config(TINY), grid, seeds=[0, 1, 2], name="big", runs_dir=runs_dir, max_runs=36, data_dir=data_dir
    )
    assert sum(map(len, plan.runs.values())) == 36


# -- early stopping on a constructed case ---------------------------------------------------------

GOOD = {2: 0.30, 4: 0.45, 6: 0.55, 8: 0.60}


def curve(offset: float) -> dict[int, float]:
    return {step: value + offset for step, value in GOOD.items()}


def test_the_rules_stop_the_far_worse_run_and_no_other():
    """Three runs with fair learning rates (a little apart) and one with a far worse one, judged at every step
    against the others that reached it: the median rule stops the bad one and no other; ASHA stops it too (and,
    by design, keeps only the top third of the fair ones)."""
    fair = [curve(0.0), curve(0.02), curve(-0.03)]
    bad = dict.fromkeys(GOOD, 0.1)
    for step in GOOD:
        assert median_reason(bad, fair, step) is not None
        assert asha_reason(bad, fair, step) is not None
        for i, run in enumerate(fair):
            others = [*fair[:i], *fair[i + 1 :], bad]
            assert median_reason(run, others, step) is None, (i, step)
    assert "is below 80% of the median 30.0% of the 3 other runs" in median_reason(bad, fair, 2)
    assert "not in the top 1 of the 4 runs that reached it" in asha_reason(bad, fair, 2)
    assert median_reason(bad, fair[:1], 2) is None  # one other run is not enough to judge by
    assert median_reason(bad, [{2: 0.5}], 4) is None  # nor are runs that have not reached the step


@pytest.mark.heavy
def test_a_real_trainer_behind_its_peers_ends_stopped_early_with_the_reason(runs_dir, data_dir, monkeypatch):
    """The trainer judges itself after its first evaluation against two hand-made runs far ahead at that step."""
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "1")
    peers = [hand_made_run(runs_dir, f"peer{i}", dict.fromkeys(range(1, 9), 0.99)) for i in range(2)]
    queued = enqueue(make_config({**TINY, "name": "behind", "epochs": 2, "eval_every": 1}), runs_dir, data_dir)
    folder = runs_dir / EXPERIMENTS_FOLDER
    folder.mkdir()
    write_json(
        folder / "es.json",
        {
            "name": "es",
            "vary": {"lr": [0.05]},
            "seeds": [0],
            "early_stop": "median",
            "variants": {"lr=0.05": ["behind", *(p.name for p in peers)]},
        },
    )
    ensure_worker(runs_dir)
    wait_for(lambda: read_run(queued).status not in ("queued", "starting", "running"), timeout=400, every=0.5)
    info = read_run(queued)
    assert info.status == Status.STOPPED_EARLY, info.status_record
    assert info.status_record["reason"].startswith("median rule: best test accuracy ")
    assert "of the 2 other runs at that step" in info.status_record["reason"]
    assert info.progress["step"] == 1 and (queued / "last.pt").is_file() and not (queued / "STOP").exists()
    assert judge(peers[0], 1) is None  # the peers, far ahead, are never behind
    table = run_table(load_comparison(load_experiment("es", runs_dir)))
    assert table.set_index("run").loc["behind", "why"] == info.status_record["reason"]
    # Resumed by hand it trains on, is judged again at its next evaluation, and a stop by the rule is no error.
    resumed = run_cli("train", "--resume", str(queued), "--data-dir", str(data_dir), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert read_run(queued).status == Status.STOPPED_EARLY and read_run(queued).progress["step"] == 2


@pytest.mark.slow
def test_a_two_setting_sweep_runs_one_trainer_at_a_time_and_finishes(runs_dir, data_dir, monkeypatch):
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "1")
    sweep = start_cli(
        "sweep",
        "--grid",
        "norm=gn,ln",
        "--grid",
        "lr=0.05",
        "--early-stop",
        "median",
        *TINY_FLAGS,
        "--name",
        "two",
        "--runs-dir",
        str(runs_dir),
        "--data-dir",
        str(data_dir),
    )
    most, out, err = most_trainers_while(sweep, runs_dir)  # only one trainer at any moment
    assert sweep.returncode == 0, out + err
    assert most == 1
    record = json.loads((runs_dir / EXPERIMENTS_FOLDER / "two.json").read_text())
    assert record["vary"] == {"norm": ["gn", "ln"], "lr": [0.05]} and record["early_stop"] == "median"
    statuses = {run_id: read_run(runs_dir / run_id).status for ids in record["variants"].values() for run_id in ids}
    assert statuses == {"two-norm-gn-lr-0.05-s0": "finished", "two-norm-ln-lr-0.05-s0": "finished"}
    assert "experiment two: 2 run(s), at most 1 at a time" in err


# -- the Compare page's run-by-run views -----------------------------------------------------------


@pytest.fixture
def sweep_runs(runs_dir):
    hand_made_sweep(runs_dir)
    return load_experiment("sw", runs_dir)


def test_the_run_table_has_the_best_value_and_its_step(sweep_runs):
    table = run_table(load_comparison(sweep_runs)).set_index("run")
    assert table.loc["bn-slow", BEST] == 70.0 and table.loc["bn-slow", BEST_STEP] == 20  # not the last (65 at 30)
    assert table.loc["gn-fast", "status"] == Status.STOPPED_EARLY and table.loc["gn-fast", "why"] == "median rule: x"
    assert table.loc["gn-fast", BEST] == 10.0 and pd.isna(table.loc["gn-fast", FINAL])
    assert differing(table.reset_index()) == ["norm", "lr"]
    kept = Filter({"lr": (0.01, 0.1)}, {"norm": ["gn"]}).keep(table.reset_index())
    assert table.reset_index()[kept]["run"].tolist() == ["gn-slow"]
    assert best_eval(read_run(sweep_runs.variants["norm=bn lr=0.05"][0])) == (0.70, 20)


def test_a_missing_run_stays_in_the_run_table_whatever_the_filters(sweep_runs, runs_dir):
    """A run whose folder is gone has no settings: it is listed as missing, makes no setting look varied, and no
    filter hides it."""
    record = json.loads((runs_dir / EXPERIMENTS_FOLDER / "sw.json").read_text())
    record["variants"]["norm=gn lr=0.6"].append("gn-gone")
    write_json(runs_dir / EXPERIMENTS_FOLDER / "sw.json", record)
    table = run_table(load_comparison(load_experiment("sw", runs_dir)))
    assert table.set_index("run").loc["gn-gone", "status"] == Status.MISSING
    assert placed(table).tolist() == [True] * len(HAND_MADE) + [False]
    assert differing(table) == ["norm", "lr"]
    kept = Filter({"lr": (0.01, 0.1)}, {"norm": ["gn"]}).keep(table)
    assert table[kept]["run"].tolist() == ["gn-slow", "gn-gone"]


def test_compare_page_filters_the_runs_and_opens_one(sweep_runs, app):
    at = app("compare", experiment="sw")
    runs = next(frame for frame in at.dataframe if "best at step" in frame.value.columns)
    assert sorted(runs.value["run"]) == sorted(HAND_MADE) and list(runs.value.columns[3:5]) == ["norm", "lr"]
    next(s for s in at.multiselect if s.label == "norm").set_value(["bn"]).run()
    runs = next(frame for frame in at.dataframe if "best at step" in frame.value.columns)
    assert sorted(runs.value["run"]) == ["bn-fast", "bn-slow"]
    next(t for t in at.toggle if t.label == "Only settings that differ").set_value(False).run()
    runs = next(frame for frame in at.dataframe if "best at step" in frame.value.columns)
    assert "weight_decay" in runs.value.columns
    assert not at.exception


def test_train_page_varies_a_second_setting_and_refuses_its_bad_value(runs_dir, app):
    at = app("train", subset="20", epochs="1", batch_size="50")
    next(box for box in at.selectbox if box.label == "Setting").set_value("lr")
    next(box for box in at.text_input if box.label == "Values, comma-separated").set_value("0.05,0.1")
    next(box for box in at.selectbox if box.label == "Second setting").set_value("norm").run()
    next(box for box in at.text_input if box.label == "Its values").set_value("bn,xn")
    next(b for b in at.button if b.label == "Launch experiment").click().run()
    assert not at.exception and "--vary 'norm=bn,xn': norm='xn' is not known" in texts(at.error)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
