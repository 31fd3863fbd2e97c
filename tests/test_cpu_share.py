"""Trainers side by side share the CPU: each takes PyTorch's default thread count divided by the trainers alive
(the held slots of its runs folder, read from the kernel's lock table), and takes the whole back when the others
end. Real locks, held by real processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from cifarnet import cpu_share
from cifarnet.cpu_share import CpuShare, held_slots
from cifarnet.records import read_metrics
from cifarnet.slots import take_slot
from conftest import ROOT, run_cli

HOLDER = ("import sys, time; from pathlib import Path; from cifarnet.slots import take_slot; "
          "assert take_slot(Path(sys.argv[1])) is not None; print('held', flush=True); time.sleep(600)")
TINY = ["--subset", "20", "--epochs", "1", "--batch-size", "50", "--eval-subset", "10", "--no-tta", "--quiet"]


def _holder(root) -> subprocess.Popen:
    """Another process holding a slot of ``root``, as a trainer does."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


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
    before = torch.get_num_threads()
    root = tmp_path / "runs"
    share = CpuShare(root, 0, on_cpu=True, parallel=False)
    fixed = [CpuShare(root, 3, on_cpu=True, parallel=False), CpuShare(root, 0, on_cpu=True, parallel=True),
             CpuShare(root, 0, on_cpu=False, parallel=False)]  # asked for, several processes, a GPU

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


def _threads_recorded(runs_dir) -> set[int]:
    (run,) = [p for p in runs_dir.iterdir() if not p.name.startswith(".")]
    return {r["threads"] for r in read_metrics(run / "metrics.jsonl")[0] if r["kind"] == "train"}


@pytest.mark.slow
def test_a_trainer_beside_another_trains_on_its_share(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "2")
    alone, beside = tmp_path / "alone", tmp_path / "beside"
    assert run_cli("train", *TINY, "--runs-dir", str(alone), "--data-dir", str(data_dir)).returncode == 0
    (whole,) = _threads_recorded(alone)
    holder = _holder(beside)
    try:
        assert run_cli("train", *TINY, "--runs-dir", str(beside), "--data-dir", str(data_dir)).returncode == 0
    finally:
        holder.kill()
    assert _threads_recorded(beside) == {max(1, whole // 2)}
    asked = run_cli("train", *TINY, "--threads", "1", "--runs-dir", str(tmp_path / "asked"),
                    "--data-dir", str(data_dir))
    assert asked.returncode == 0 and _threads_recorded(tmp_path / "asked") == {1}
