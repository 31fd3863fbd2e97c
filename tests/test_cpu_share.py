"""Trainers share the CPU: each takes PyTorch's default thread count divided by the trainers alive (the held slots
of its runs folder, read from the kernel's lock table), and no more than the cores the rest of the machine leaves
free; it takes the whole back when the others end. Real locks and real busy programs, held by real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, TINY_QUIET_FLAGS, run_cli

from cifarnet.runs.records import read_metrics
from cifarnet.runs.slots import take_slot
from cifarnet.training import cpu_share
from cifarnet.training.cpu_share import CpuShare, CpuTimes, free_cores, held_slots, share

HOLDER = (
    "import sys, time; from pathlib import Path; from cifarnet.runs.slots import take_slot; "
    "assert take_slot(Path(sys.argv[1])) is not None; print('held', flush=True); time.sleep(600)"
)
HOG = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass"  # a busy program, bounded


def _holder(root) -> subprocess.Popen:
    """Another process holding a slot of ``root``, as a trainer does."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.heavy
def test_held_slots_counts_the_trainers_of_its_own_runs_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "3")
    root, other = tmp_path / "runs", tmp_path / "other"
    assert held_slots(root) == 0  # no trainer has started there yet
    os.close(take_slot(other))  # a slot file that nobody holds any more
    mine, holder = take_slot(root), _holder(root)
    try:
        assert held_slots(root) == 2
        assert held_slots(other) == 0
        holder.kill()
        holder.wait()
        assert held_slots(root) == 1  # the kernel dropped the dead holder's lock
    finally:
        holder.kill()
        os.close(mine)
    assert held_slots(root) == 0


def test_the_share_follows_the_trainers_alive(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "3")
    monkeypatch.setattr(cpu_share, "LOOK_EVERY_S", 0.0)
    monkeypatch.setattr(cpu_share, "DEFAULT_THREADS", 4)
    for source in ("MACHINE_TIMES", "LOAD_AVERAGE"):  # the rest of the machine unknown here: no limit from it
        monkeypatch.setattr(cpu_share, source, tmp_path / "unreadable")
    before = torch.get_num_threads()
    root = tmp_path / "runs"
    share = CpuShare(root, 0, on_cpu=True, parallel=False)
    fixed = [
        CpuShare(root, 3, on_cpu=True, parallel=False),
        CpuShare(root, 0, on_cpu=True, parallel=True),
        CpuShare(root, 0, on_cpu=False, parallel=False),
    ]  # asked for, several processes, a GPU

    def threads_now() -> int:
        share.update()
        assert share.record() == {"threads": share.threads}
        return share.threads

    slots = [take_slot(root)]
    try:
        assert threads_now() == 4 and torch.get_num_threads() == 4
        slots.append(take_slot(root))
        assert threads_now() == 2 and torch.get_num_threads() == 2
        slots.append(take_slot(root))
        assert threads_now() == 1 and torch.get_num_threads() == 1  # never below one
        for other in fixed:
            other.update()
        assert torch.get_num_threads() == 1  # none of them touches the threads
        assert fixed[2].record() == {}  # a GPU trainer's speed does not hang on its CPU threads
        for fd in slots[1:]:
            os.close(fd)
        del slots[1:]
        assert threads_now() == 4 and torch.get_num_threads() == 4  # the last one left gets the whole back
    finally:
        for fd in slots:
            os.close(fd)
        torch.set_num_threads(before)


def test_a_lock_on_a_same_numbered_file_elsewhere_is_not_a_trainer(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    mine = take_slot(root)
    try:
        inode = os.fstat(mine).st_ino
        (line,) = [
            line
            for line in cpu_share.LOCK_TABLE.read_text().splitlines()
            if line.split()[4:6] and line.split()[4] == str(os.getpid()) and line.split()[5].endswith(f":{inode}")
        ]
        device = line.split()[5].rsplit(":", 1)[0]
        elsewhere = line.replace(f"{device}:{inode}", f"{'ff:ff' if device != 'ff:ff' else 'fe:fe'}:{inode}")
        table = tmp_path / "locks"
        monkeypatch.setattr(cpu_share, "LOCK_TABLE", table)
        table.write_text(elsewhere + "\n")
        assert held_slots(root) == 0  # the same inode number on another file system is no slot of ours
        table.write_text(line + "\n" + elsewhere + "\n")
        assert held_slots(root) == 1
    finally:
        os.close(mine)


def test_free_cores_are_what_the_others_leave():
    def times(wall: float, busy: float, own: float) -> CpuTimes:
        return CpuTimes(wall=wall, busy=busy * 100, total=wall * 200, cores=2, own=own)

    start = times(0, 0, 0)
    assert free_cores(start, times(5, 10, 5)) == pytest.approx(1.0)  # we used one core, others the other
    assert free_cores(start, times(5, 6, 5)) == pytest.approx(1.8)  # others left one core and most of another
    assert free_cores(start, times(5, 10, 0)) == pytest.approx(0.0)  # two busy programs took both cores
    assert free_cores(start, times(0.1, 0, 0)) is None and free_cores(None, start) is None  # nothing to measure
    assert share(1, 0.0) == 1 and share(1, 1.0) == 1 and share(1, 1.8) == min(2, cpu_share.DEFAULT_THREADS)
    assert share(2, 2.0) == max(1, cpu_share.DEFAULT_THREADS // 2) and share(None, None) == cpu_share.DEFAULT_THREADS


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: one thread whatever runs")
def test_a_trainer_alone_beside_busy_programs_takes_one_thread(tmp_path, monkeypatch):
    """The issue's case: no other trainer, but the machine's cores busy with other work."""
    monkeypatch.setattr(cpu_share, "LOOK_EVERY_S", 0.0)
    monkeypatch.setattr(cpu_share, "DEFAULT_THREADS", os.cpu_count())
    before = torch.get_num_threads()
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(os.cpu_count())]
    try:
        time.sleep(0.3)
        alone = CpuShare(tmp_path / "runs", 0, on_cpu=True, parallel=False)
        time.sleep(1.5)  # one span of the machine's CPU time, the busy programs running through it
        alone.update()
        assert alone.threads == 1 and torch.get_num_threads() == 1
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        torch.set_num_threads(before)


def _threads_recorded(runs_dir) -> set[int]:
    (run,) = [p for p in runs_dir.iterdir() if not p.name.startswith(".")]
    return {r["threads"] for r in read_metrics(run / "metrics.jsonl")[0] if r["kind"] == "train"}


@pytest.mark.slow
def test_a_trainer_beside_another_trains_on_its_share(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "2")
    alone, beside = tmp_path / "alone", tmp_path / "beside"
    assert run_cli("train", *TINY_QUIET_FLAGS, "--runs-dir", str(alone), "--data-dir", str(data_dir)).returncode == 0
    assert _threads_recorded(alone) <= set(range(1, os.cpu_count() + 1))  # its share of a machine busy or not
    holder = _holder(beside)
    try:
        beside_run = run_cli("train", *TINY_QUIET_FLAGS, "--runs-dir", str(beside), "--data-dir", str(data_dir))
        assert beside_run.returncode == 0
    finally:
        holder.kill()
    assert max(_threads_recorded(beside)) <= max(1, os.cpu_count() // 2)
    asked = run_cli(
        "train", *TINY_QUIET_FLAGS, "--threads", "1", "--runs-dir", str(tmp_path / "asked"), "--data-dir", str(data_dir)
    )
    assert asked.returncode == 0 and _threads_recorded(tmp_path / "asked") == {1}
