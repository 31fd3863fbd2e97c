"""Issue 25 (section 1 and two of section 2): the queue never strands a run, and nothing is created before
everything is checked.

An experiment is refused whole, with nothing created, for anything its trainers would refuse (run limit, device,
data) or a runs folder whose queue files are folders or links; a failure part-way leaves nothing. A queued run
starts whatever happened to the queue worker (``kill -9``) or to one run's start (a full disk writing its pid),
and the first run starts within two seconds. A ``STOP`` left for a trainer is not obeyed by a later one with the
same pid.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, TINY_FLAGS, processes_of, run_cli, wait_for

from cifarnet import CifarnetError
from cifarnet.config import make_config
from cifarnet.errors import WriteError
from cifarnet.runs import experiments as experiments_mod
from cifarnet.runs import launch as launch_mod
from cifarnet.runs import records as records_mod
from cifarnet.runs.experiments import launch_experiment, list_experiments, parse_vary, plan_experiment, start_experiment
from cifarnet.runs.folders import read_run, request_stop, trainer_alive, trainer_identity
from cifarnet.runs.launch import start_run
from cifarnet.runs.queue import ensure_worker, serve
from cifarnet.runs.records import QUEUE_LOCK_FILE, QUEUE_LOG_FILE
from cifarnet.runs.slots import max_live_runs, take_slot


def visible(runs_dir: Path) -> list[str]:
    """What a reader of the runs folder sees: run folders and experiment records (hidden staging aside)."""
    if not runs_dir.exists():
        return []
    runs = [p.name for p in runs_dir.iterdir() if not p.name.startswith(".")]
    records = [p.name for p in (runs_dir / ".experiments").glob("*")] if (runs_dir / ".experiments").is_dir() else []
    staged = [p.name for p in runs_dir.glob(".new-*")]
    return runs + records + staged


@pytest.fixture(autouse=True)
def reap(runs_dir):
    """Every trainer and worker a test started ends with it: tests wait for runs to start, not to finish (the
    final evaluation takes minutes on a busy machine)."""
    yield
    for word in (b"queue", b"--resume"):
        for pid in processes_of(runs_dir, word):
            os.kill(pid, signal.SIGKILL)


def started(path: Path) -> bool:
    """Whether the run in ``path`` has left the queue with a live trainer."""
    info = read_run(path)
    return info.status in ("starting", "running") and trainer_alive(path, info.status_record)


@pytest.mark.parametrize(
    "env, flags, message",
    [
        ({"CIFARNET_MAX_RUNS": "abc"}, [], "CIFARNET_MAX_RUNS='abc' is not a whole number"),
        ({"CIFARNET_MAX_RUNS": "0"}, [], "CIFARNET_MAX_RUNS='0' is out of range; allowed: 1 to"),
        ({"CIFARNET_MAX_RUNS": "-1"}, [], "CIFARNET_MAX_RUNS='-1' is not a whole number"),
        ({"CIFARNET_MAX_RUNS": "1_0"}, [], "CIFARNET_MAX_RUNS='1_0' is not a whole number"),
        ({}, ["--vary", "device=cpu,cuda"], "device='cuda' was requested but no CUDA GPU is available"),
        ({}, ["--data-dir", "MISSING"], "does not exist"),
    ],
)
@pytest.mark.heavy
def test_compare_refuses_what_its_trainers_would_before_anything_exists(
    env, flags, message, runs_dir, data_dir, tmp_path
):
    if "device=cpu,cuda" in flags and torch.cuda.is_available():
        pytest.skip("this machine has CUDA: every device of the list exists")
    flags = [str(tmp_path / "no-such-data") if flag == "MISSING" else flag for flag in flags]
    data = [] if "--data-dir" in flags else ["--data-dir", str(data_dir)]
    result = run_cli("compare", *TINY_FLAGS, "--name", "x", "--runs-dir", str(runs_dir), *data, *flags, env=env)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not runs_dir.exists()  # no run, no record, not even the folder


def test_the_run_limit_takes_plain_digits_and_empty_is_the_default(monkeypatch):
    for raw, limit in (("", 2), ("3", 3), ("007", 7)):
        monkeypatch.setenv("CIFARNET_MAX_RUNS", raw)
        assert max_live_runs() == limit
    for raw in ("1_0", "+3", " 3", "3 ", "3.0", "\u0663", "1e3", "9" * 5000, "1001"):
        monkeypatch.setenv("CIFARNET_MAX_RUNS", raw)
        with pytest.raises(CifarnetError, match="CIFARNET_MAX_RUNS=.*allowed"):
            max_live_runs()


def test_a_failure_part_way_through_creating_an_experiment_leaves_nothing(runs_dir, data_dir, monkeypatch):
    """The disk fills while the third run's records are written: the two before it and the record go too."""
    real, written = records_mod.write_json, []

    def filling(path: Path, payload: dict) -> None:
        written.append(path)
        if len(written) == 5:  # config.json of the third run
            raise WriteError.of(path, OSError(errno.ENOSPC, "No space left on device"))
        real(path, payload)

    monkeypatch.setattr(records_mod, "write_json", filling)
    with pytest.raises(WriteError, match="No space left on device"):
        start_experiment(make_config(TINY), None, None, "full", runs_dir, data_dir)
    assert len(written) == 5 and visible(runs_dir) == []
    assert not processes_of(runs_dir, b"--resume") and not processes_of(runs_dir, b"queue")


def test_a_name_taken_while_an_experiment_is_created_leaves_nothing_of_it(runs_dir, data_dir):
    plan = plan_experiment(make_config(TINY), None, None, "race", runs_dir, data_dir)
    theirs = runs_dir / "race-norm-ln-s0"  # another process makes a run of that name meanwhile
    theirs.mkdir(parents=True)
    (theirs / "mine.txt").write_text("not yours")
    with pytest.raises(CifarnetError, match="'race-norm-ln-s0' was created meanwhile"):
        launch_experiment(plan, runs_dir, data_dir)
    assert visible(runs_dir) == ["race-norm-ln-s0"] and (theirs / "mine.txt").read_text() == "not yours"
    assert not processes_of(runs_dir, b"--resume")


def test_the_first_run_starts_within_two_seconds_of_the_click(runs_dir, data_dir):
    began = time.monotonic()
    experiment = start_experiment(make_config(TINY), parse_vary(["lr=0.05,0.06"]), None, "now", runs_dir, data_dir)
    first = next(iter(experiment.variants.values()))[0]
    wait_for(lambda: started(first), timeout=2, every=0.05)
    assert time.monotonic() - began < 2


def start_held(runs_dir: Path, data_dir: Path, name: str, count: int):
    """An experiment of ``count`` tiny runs under a limit of one whose slot this test holds: all of them wait."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    slot = take_slot(runs_dir)
    values = ",".join(f"0.0{5 + i}" for i in range(count))
    experiment = start_experiment(make_config(TINY), parse_vary([f"lr={values}"]), None, name, runs_dir, data_dir)
    return slot, [paths[0] for paths in experiment.variants.values()]


@pytest.mark.heavy
def test_a_killed_worker_is_replaced_when_a_run_ends(runs_dir, data_dir, monkeypatch):
    """``kill -9`` of the queue worker while a run trains: that run's end starts a new worker, no command needed."""
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "1")
    experiment = start_experiment(
        make_config({**TINY, "epochs": 400}), parse_vary(["lr=0.05,0.06"]), None, "w", runs_dir, data_dir
    )
    first, second = (paths[0] for paths in experiment.variants.values())
    worker = wait_for(lambda: processes_of(runs_dir, b"queue"), timeout=60)[0]
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not processes_of(runs_dir, b"queue") or None, timeout=30)
    wait_for(lambda: read_run(first).status == "running", timeout=300)
    assert read_run(second).status == "queued"
    request_stop(first.name, runs_dir)
    wait_for(lambda: read_run(first).status == "stopped", timeout=300)
    wait_for(lambda: started(second), timeout=120)


@pytest.mark.heavy
def test_a_worker_killed_while_nothing_trains_is_replaced_by_the_next_command(runs_dir, data_dir, monkeypatch):
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "1")
    slot, (first,) = start_held(runs_dir, data_dir, "c", 1)
    worker = wait_for(lambda: processes_of(runs_dir, b"queue"), timeout=60)[0]
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not processes_of(runs_dir, b"queue") or None, timeout=30)
    os.close(slot)  # the slot frees; no worker, no trainer is left to notice
    time.sleep(2)
    assert read_run(first).status == "queued"
    listed = run_cli("runs", "--runs-dir", str(runs_dir))
    assert listed.returncode == 0 and "c-lr-0.05-s0" in listed.stdout, listed.stderr
    wait_for(lambda: started(first), timeout=120)


def test_asking_again_while_the_worker_loads_starts_no_second_one(runs_dir, data_dir, monkeypatch):
    """``compare`` and the Train page ask for a worker twice a second; one that is still loading its libraries
    already holds the queue lock, so no second one starts."""
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "1")
    slot, _ = start_held(runs_dir, data_dir, "o", 1)  # its launcher started a worker
    for _ in range(10):
        assert ensure_worker(runs_dir) is False
        time.sleep(0.05)
    assert len(processes_of(runs_dir, b"queue")) == 1
    os.close(slot)


def test_a_full_disk_writing_a_pid_fails_that_run_and_the_worker_goes_on(runs_dir, data_dir, monkeypatch):
    """The worker (here in this process, so the disk can fill under it) records the run ``failed`` with the
    reason, even when the atomic status write fails too, and starts the next run."""
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "1")
    monkeypatch.setattr(experiments_mod, "ensure_worker", lambda *_: False)  # this test is the worker
    slot, (unlucky, lucky) = start_held(runs_dir, data_dir, "d", 2)
    os.close(slot)
    real_file, real_json, full = launch_mod.write_file, records_mod.write_json, {unlucky}

    def no_space(path: Path) -> WriteError:
        return WriteError.of(path, OSError(errno.ENOSPC, "No space left on device"))

    def write_file(path: Path, content: bytes) -> None:
        if path.parent in full:
            raise no_space(path)
        real_file(path, content)

    def write_json(path: Path, payload: dict) -> None:
        if path.parent in full:
            raise no_space(path)
        real_json(path, payload)

    monkeypatch.setattr(launch_mod, "write_file", write_file)
    monkeypatch.setattr(records_mod, "write_json", write_json)
    serve(runs_dir)  # returns once nothing waits: it did not die of the first run
    failed = read_run(unlucky)
    assert failed.status == "failed" and "pid: No space left on device" in failed.status_record["error"], failed
    assert started(lucky)
    time.sleep(1)
    assert read_run(unlucky).status == "failed" and not processes_of(unlucky, b"--resume")  # its trainer ended


def plant(runs_dir: Path, name: str, kind: str, outside: Path) -> str:
    """A folder or a link (to a file outside the runs folder, or to nothing there yet) named ``name``; returns how
    the refusal calls it."""
    if kind == "folder":
        (runs_dir / name).mkdir()
        return "a folder"
    if kind == "link":
        outside.write_text("theirs")
    (runs_dir / name).symlink_to(outside)
    return "a symbolic link"


@pytest.mark.parametrize("name", [QUEUE_LOCK_FILE, QUEUE_LOG_FILE])
@pytest.mark.parametrize("kind", ["folder", "link", "dangling link"])
def test_queue_files_that_are_folders_or_links_are_refused(name, kind, runs_dir, data_dir, tmp_path):
    runs_dir.mkdir()
    outside = tmp_path / "outside"
    what = plant(runs_dir, name, kind, outside)
    with pytest.raises(CifarnetError, match=f"{name} is {what}; it must be a plain file"):
        start_experiment(make_config(TINY), None, None, "f", runs_dir, data_dir)
    assert visible(runs_dir) == []
    assert (outside.read_text() == "theirs") if kind == "link" else not outside.exists()


@pytest.mark.parametrize("name", [QUEUE_LOCK_FILE, QUEUE_LOG_FILE])
@pytest.mark.heavy
def test_a_queue_file_turned_link_under_waiting_runs_is_refused_and_said(
    name, runs_dir, data_dir, tmp_path, monkeypatch
):
    """Runs wait, no worker lives, and then the file becomes a link: no worker is started through it, nothing is
    written outside, and ``cifarnet runs`` still lists, saying why the queue cannot go on."""
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "1")
    monkeypatch.setattr(experiments_mod, "ensure_worker", lambda *_: False)
    slot, _ = start_held(runs_dir, data_dir, "g", 1)
    os.close(slot)
    (runs_dir / name).unlink(missing_ok=True)
    outside = tmp_path / "outside"
    what = plant(runs_dir, name, "link", outside)
    with pytest.raises(CifarnetError, match=f"{name} is {what}"):
        ensure_worker(runs_dir)
    listed = run_cli("runs", "--runs-dir", str(runs_dir))
    assert listed.returncode == 0 and "g-lr-0.05-s0" in listed.stdout, listed.stderr
    assert (
        listed.stderr == f"cifarnet: queued runs cannot start: {runs_dir / name} is {what}; it must be a plain "
        "file (remove it and try again)\n"
    )
    assert outside.read_text() == "theirs" and not processes_of(runs_dir, b"queue")


def test_an_experiment_record_naming_paths_outside_the_runs_folder_is_damage(runs_dir):
    (runs_dir / ".experiments").mkdir(parents=True)
    (runs_dir / "mine").mkdir()
    (runs_dir / ".experiments" / "bad.json").write_text(
        json.dumps(
            {
                "name": "bad",
                "vary": {"norm": ["bn"]},
                "seeds": [0],
                "variants": {"norm=bn": ["../..", "/etc", "mine", 7, "a/../../b"]},
            }
        )
    )
    experiment = list_experiments(runs_dir)[0]
    assert experiment.name == "bad" and experiment.variants == {"norm=bn": [runs_dir / "mine"]}
    assert len(experiment.damage) == 4 and "'../..'" in experiment.damage[0] and "'/etc'" in experiment.damage[1]


@pytest.mark.heavy
def test_a_leftover_stop_for_a_reused_pid_is_not_obeyed(runs_dir, data_dir):
    """A ``STOP`` written for an earlier trainer that had this trainer's pid (what a request named, pid alone, before
    start times) is removed, not obeyed; a request made for this trainer is."""
    run_id = start_run(make_config({**TINY, "epochs": 400}), runs_dir, data_dir)
    path = runs_dir / run_id

    def step() -> int:
        return read_run(path).progress.get("step", 0)

    info = wait_for(lambda: (i := read_run(path)).status == "running" and step() > 0 and i, timeout=180)
    pid = info.status_record["pid"]
    (path / "STOP").write_text(str(pid))
    wait_for(lambda: not (path / "STOP").exists(), timeout=60)
    before = step()
    wait_for(lambda: step() > before + 2 or read_run(path).status != "running", timeout=120)
    assert read_run(path).status == "running"
    assert trainer_identity(pid) != str(pid) and trainer_identity(pid) != trainer_identity(os.getpid())
    request_stop(run_id, runs_dir)
    assert (path / "STOP").read_text() == trainer_identity(pid)
    wait_for(lambda: read_run(path).status == "stopped", timeout=120)
