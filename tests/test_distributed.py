"""Data-parallel training through ``torchrun``: 2 CPU processes (gloo) in real subprocesses.

Each test launches ``python -m torch.distributed.run`` exactly as a user would, one thread per process, on a
tiny subset; the single-process reference is the same config's :class:`~cifarnet.train.Trainer` stepping in
this process, so every figure compared comes from the real code paths.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cifarnet import CifarnetError
from cifarnet.config import make_config
from cifarnet.data import load_cifar10
from cifarnet.records import read_metrics
from cifarnet.launch import start_run
from cifarnet.runs import create_run, process_alive, read_run
from cifarnet.train import Trainer
from conftest import ROOT, wait_for

# 4 steps of 20 images (80 training images), evaluated on 20 at the epoch's end; 1 thread per process
TINY = {"subset": 8, "epochs": 1, "batch_size": 20, "lr": 0.01, "eval_subset": 2, "tta": False, "threads": 1,
        "precision": "fp32"}  # bf16 would round each process's half differently
TOLERANCE = 1e-4  # relative: the same sums, added in another order
DEADLINE_S = 60  # a killed process must end the run within this


def torchrun(processes: int, *args: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node PROCESSES -m cifarnet ARGS`` in a real subprocess."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "cifarnet", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def flags(values: dict) -> list[str]:
    out = []
    for key, value in values.items():
        name = "--" + key.replace("_", "-")
        out += [name if value else "--no-" + name[2:]] if isinstance(value, bool) else [name, str(value)]
    return out


@pytest.fixture(scope="module")
def data(data_dir):
    return load_cifar10(data_dir)


def single_process_losses(values: dict, data, steps: int) -> list[float]:
    """The first ``steps`` batch losses of one process training ``values`` (threads left to this process)."""
    trainer = Trainer(make_config({**values, "threads": 0}), data)
    losses = []
    for _, x, y in trainer.batches(0):
        loss, _ = trainer.step(x, y)
        losses.append(loss.item() / len(y))
        if len(losses) == steps:
            break
    return losses


def records(path: Path, kind: str) -> list[dict]:
    return [m for m in read_metrics(path / "metrics.jsonl")[0] if m["kind"] == kind]


def train_losses(path: Path) -> list[float]:
    return [m["train_loss"] for m in records(path, "train")]


def test_two_processes_with_synchronised_bn_train_like_one_with_the_same_global_batch(runs_dir, data_dir, data):
    values = {**TINY, "norm": "bn", "name": "ddp"}  # BatchNorm synchronised: the default under DDP
    done = torchrun(2, "train", *flags(values), "--data-dir", str(data_dir), "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p.name for p in runs_dir.iterdir()] == ["ddp"]  # rank 0 alone created the run
    path = runs_dir / "ddp"
    info = read_run(path)
    assert info.status == "finished" and info.world_size == 2
    assert json.loads((path / "config.json").read_text())["world_size"] == 2
    # every record once, written by one process: a second writer would double the lines or leave its temp files
    assert [m["step"] for m in records(path, "train")] == [1, 2, 3, 4]
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["config.json", "status.json", "metrics.jsonl", "best.pt", "last.pt", "model.pt", "results.json",
         "predictions.npz"])
    assert train_losses(path) == pytest.approx(single_process_losses(values, data, 4), rel=TOLERANCE)


def test_stop_reaches_every_process_and_the_run_resumes_with_another_world_size(runs_dir, data_dir, data):
    """GroupNorm: step 1 under DDP matches one process's; step 2, trained by one process from the weights the
    two processes' averaged gradients made, matches too. STOP before each start ends each after one step,
    so neither pays for the final evaluation."""
    values = {**TINY, "norm": "gn", "name": "stop"}
    path = create_run(make_config({**values, "processes": 2}), runs_dir)
    (path / "STOP").touch()
    done = torchrun(2, "train", "--resume", str(path), "--data-dir", str(data_dir), "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr  # both processes stopped, neither failed
    assert read_run(path).status == "stopped" and not (path / "STOP").exists()
    assert torch.load(path / "last.pt", weights_only=True)["step"] == 1

    (path / "STOP").touch()
    resumed = subprocess.run([sys.executable, "-m", "cifarnet", "train", "--resume", str(path), "--processes", "1",
                              "--data-dir", str(data_dir), "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=240,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    info = read_run(path)
    assert info.status == "stopped" and info.world_size == 1
    assert [m["step"] for m in records(path, "train")] == [1, 2]
    assert train_losses(path) == pytest.approx(single_process_losses(values, data, 2), rel=TOLERANCE)


def _rank_pid(torchrun_pid: int, rank: int) -> int | None:
    """The process of ``rank`` among torchrun's children (read from their environment)."""
    children = Path(f"/proc/{torchrun_pid}/task/{torchrun_pid}/children").read_text().split()
    for child in children:
        try:
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(child)
    return None


def test_a_killed_process_ends_the_run_failed_with_the_reason(runs_dir, data_dir):
    """Launched as the dashboard does (``processes`` = 2: the trainer becomes ``torchrun``); process 1 killed."""
    cfg = make_config({**TINY, "norm": "gn", "epochs": 100, "processes": 2, "name": "killed"})  # minutes of work
    path = runs_dir / start_run(cfg, runs_dir, data_dir)
    launcher = int((path / "pid").read_text())
    try:
        wait_for(lambda: records(path, "train"), timeout=120)
        victim = _rank_pid(launcher, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        status = wait_for(lambda: read_run(path).status_record if read_run(path).status != "running" else None,
                          timeout=DEADLINE_S)
        assert status["status"] == "failed"
        assert "another process of this 2-process run ended" in status["error"]
        wait_for(lambda: not process_alive(launcher), timeout=DEADLINE_S)  # torchrun ended too
    finally:
        if process_alive(launcher):
            os.killpg(launcher, signal.SIGKILL)


def test_a_batch_that_does_not_split_between_the_processes_is_refused_in_one_line():
    with pytest.raises(CifarnetError, match=r"^batch_size=128 does not split evenly between 3 processes; allowed: "
                                            r"a multiple of 3$"):
        make_config({"processes": 3, "batch_size": 128})
    assert make_config({"processes": 4, "batch_size": 128}).processes == 4
