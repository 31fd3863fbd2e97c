"""Issue 17 (backend and launch): experiments queue their runs under the run limit, start them by themselves, can
cancel a queued one, survive a killed trainer, and refuse a bad ``--vary`` before anything starts."""

from __future__ import annotations

import json
import os
import signal
from types import SimpleNamespace

import pytest
from conftest import (
    TINY,
    TINY_FLAGS,
    fixture_run,
    most_trainers_while,
    run_cli,
    start_cli,
    trainer_processes,
    wait_for,
    write_experiment,
)

from cifarnet import CifarnetError, cli
from cifarnet.config import make_config
from cifarnet.recipes import FIRST_RECIPE, recipe_config
from cifarnet.runs.experiments import (
    experiment_rows,
    experiment_runs,
    list_experiments,
    load_experiment,
    newest_pending,
    parse_vary,
    pending,
    plan_experiment,
    start_experiment,
)
from cifarnet.runs.folders import read_run
from cifarnet.runs.queue import cancel_run
from cifarnet.runs.records import write_json
from cifarnet.runs.status import Status


@pytest.mark.slow
def test_experiment_queues_under_the_limit_and_a_cancelled_run_never_starts(runs_dir, data_dir, monkeypatch):
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "1")
    compare = start_cli(
        "compare",
        "--vary",
        "lr=0.05,0.06,0.07,0.08",
        *TINY_FLAGS,
        "--name",
        "q",
        "--runs-dir",
        str(runs_dir),
        "--data-dir",
        str(data_dir),
    )
    try:
        last = runs_dir / "q-lr-0.08-s0"
        wait_for(last.is_dir, timeout=120)
        cancelled = run_cli("cancel", last.name, "--runs-dir", str(runs_dir))
        assert cancelled.returncode == 0, cancelled.stderr
        most, out, err = most_trainers_while(compare, runs_dir)  # only one trainer at any moment
    finally:
        if compare.poll() is None:
            compare.kill()
    assert compare.returncode == 0, out + err
    assert most == 1
    runs = {p.name: read_run(p) for p in runs_dir.iterdir() if not p.name.startswith(".")}
    assert {run_id: info.status for run_id, info in runs.items()} == {
        "q-lr-0.05-s0": "finished",
        "q-lr-0.06-s0": "finished",
        "q-lr-0.07-s0": "finished",
        "q-lr-0.08-s0": "cancelled",
    }
    assert not runs["q-lr-0.08-s0"].metrics and not (last / "log.txt").exists()  # it never started
    assert "q-lr-0.05-s0 (lr=0.05): finished, test accuracy" in out and "q-lr-0.08-s0 (lr=0.08): cancelled" in out
    record = json.loads((runs_dir / ".experiments" / "q.json").read_text())
    assert record["vary"] == {"lr": [0.05, 0.06, 0.07, 0.08]} and record["seeds"] == [0]
    assert record["variants"]["lr=0.06"] == ["q-lr-0.06-s0"]
    short = recipe_config(FIRST_RECIPE)  # without --recipe a comparison gets a newcomer's budget, not an hour's
    assert {k: runs["q-lr-0.05-s0"].config[k] for k in ("arch", "crop_pad")} == {
        "arch": short.arch,
        "crop_pad": short.crop_pad,
    }
    assert list_experiments(runs_dir)[0].name == "q"
    again = run_cli("cancel", "q-lr-0.05-s0", "--runs-dir", str(runs_dir))
    assert again.returncode == 2 and "is finished; only a queued run can be cancelled" in again.stderr
    assert not trainer_processes(runs_dir)


@pytest.mark.slow
def test_a_killed_trainer_does_not_stall_the_queue(runs_dir, data_dir, monkeypatch):
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "1")
    experiment = start_experiment(make_config(TINY), parse_vary(["epochs=200,1"]), None, "k", runs_dir, data_dir)
    long, short = (paths[0] for paths in experiment.variants.values())
    wait_for(lambda: read_run(long).status == "running", timeout=180)
    assert read_run(short).status == "queued"
    os.kill(read_run(long).status_record["pid"], signal.SIGKILL)
    wait_for(lambda: read_run(short).status == "finished", timeout=300)
    assert read_run(long).status == "failed" and "ended without reporting" in read_run(long).status_record["error"]


@pytest.mark.parametrize(
    "vary, message",
    [
        ("nrm=bn,ln", "--vary 'nrm=bn,ln': no setting 'nrm'; allowed: arch, norm,"),
        ("norm=bn,xn", "--vary 'norm=bn,xn': norm='xn' is not known; allowed: bn, gn, ln"),
        ("lr=", "--vary 'lr=' has no values; give one or more, comma-separated"),
        ("gn_groups=1,2,4,8,16,32,64,128,3", None),
    ],
)
@pytest.mark.heavy
def test_bad_vary_is_refused_before_anything_starts(vary, message, runs_dir):
    extra = ["--seeds", "0", "1", "2", "3"] if message is None else []  # 9 values x 4 seeds = 36 runs
    result = run_cli("compare", "--vary", vary, *extra, "--runs-dir", str(runs_dir))
    message = message or "the experiment would train 36 runs; allowed: at most 32"
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_every_run_is_checked_before_any_is_created(runs_dir):
    """A value fine alone but not with the others (gn_groups=3 with GN's channels) refuses the whole plan."""
    with pytest.raises(CifarnetError, match="gn_groups"):
        plan_experiment(make_config({**TINY, "norm": "gn"}), parse_vary(["gn_groups=2,3"]), None, "g", runs_dir)
    assert not runs_dir.exists()
    with pytest.raises(CifarnetError, match="repeats a value"):
        parse_vary(["lr=0.1,0.10"])


def test_cancel_refuses_what_is_not_queued(runs_dir):
    runs_dir.mkdir()
    with pytest.raises(CifarnetError, match="shipped run; only a queued run can be cancelled"):
        cancel_run("s9-bn", runs_dir)


def test_a_missing_run_stays_listed_as_missing_and_is_never_waited_for(runs_dir, monkeypatch, capsys):
    """The one reader keeps a run whose folder is gone, as missing, in every view of the experiment; once the
    other runs have ended the experiment is no longer pending, and ``compare`` stops following it."""
    fixture_run(runs_dir, "done", "bn", 0, test=0.8, train=0.9, tta=0.8, wall=10.0)
    waits = fixture_run(runs_dir, "waits", "ln", 0, test=0.8, train=0.9, tta=0.8, wall=10.0, status="queued")
    write_experiment(runs_dir, "m", {"norm=bn": ["done", "gone"], "norm=ln": ["waits"]})
    runs = experiment_runs(load_experiment("m", runs_dir))
    assert [(label, info.run_id, info.status) for label, info in runs] == [
        ("norm=bn", "done", "finished"),
        ("norm=bn", "gone", Status.MISSING),
        ("norm=ln", "waits", "queued"),
    ]
    assert pending(runs) and newest_pending(runs_dir).name == "m"  # the queued run, not the missing one
    rows = {row["run"]: row for row in experiment_rows(runs)}
    assert rows["gone"]["status"] == Status.MISSING and rows["gone"]["variant"] == "norm=bn"  # the Train page's table
    assert rows["gone"]["test accuracy"] == "–" and rows["gone"]["progress"] == 0.0

    write_json(waits / "status.json", {"status": "cancelled", "pid": None})
    experiment = load_experiment("m", runs_dir)
    assert not pending(experiment_runs(experiment)) and newest_pending(runs_dir) is None
    monkeypatch.setattr(cli, "time", SimpleNamespace(sleep=lambda _: pytest.fail("compare waits for a missing run")))
    assert cli._follow(experiment, str(runs_dir)) == 0
    assert "gone (norm=bn): missing (its run folder is missing)" in capsys.readouterr().out
