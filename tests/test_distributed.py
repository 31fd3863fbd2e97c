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
from cifarnet.runs import create_run, process_alive, read_run, request_stop
from cifarnet.train import Trainer
from conftest import ROOT, wait_for

pytestmark = pytest.mark.ddp  # torchrun process groups: their own tier

# 4 steps of 20 images (80 training images), evaluated on 20 at the epoch's end; 1 thread per process
TINY = {"subset": 8, "epochs": 1, "batch_size": 20, "lr": 0.01, "eval_subset": 2, "tta": False, "threads": 1,
        "precision": "fp32"}  # bf16 would round each process's half differently
TOLERANCE = 1e-4  # relative: the same sums, added in another order
DEADLINE_S = 60  # a killed process must end the run within this


def torchrun_command(processes: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            "-m", "cifarnet", *args]


def env() -> dict[str, str]:
    """This test's environment (its runs folder included) for a trainer, one thread per process."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def torchrun(processes: int, *args: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node PROCESSES -m cifarnet ARGS`` in a real subprocess."""
    return subprocess.run(torchrun_command(processes, *args), cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=240)


def stopped_while_training(command: list[str], path: Path) -> int:
    """Run ``command`` (a trainer of the run in ``path``), ask it to stop the way ``cifarnet stop`` does once its
    trainer reports, and return the step its ``last.pt`` holds."""
    before = read_run(path).status_record.get("pid")
    process = subprocess.Popen(command, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (info := read_run(path)).status == "running" and info.status_record.get("pid") != before,
                 timeout=180, every=0.05)
        request_stop(path.name, path.parent)
        output, _ = process.communicate(timeout=240)
    finally:
        process.kill()
    assert process.returncode == 0, output  # every process stopped, none failed
    assert read_run(path).status == "stopped" and not (path / "STOP").exists()
    return int(torch.load(path / "last.pt", weights_only=True)["step"])


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
    for epoch in range(steps):  # at least one batch an epoch
        for _, x, y in trainer.batches(epoch):
            loss, _ = trainer.step(x, y)
            losses.append(loss.item() / len(y))
            if len(losses) == steps:
                return losses
    return losses


def records(path: Path, kind: str) -> list[dict]:
    return [m for m in read_metrics(path / "metrics.jsonl")[0] if m["kind"] == kind]


def train_losses(path: Path) -> list[float]:
    return [m["train_loss"] for m in records(path, "train")]


def test_two_processes_with_synchronised_bn_train_like_one_with_the_same_global_batch(runs_dir, data_dir, data):
    values = {**TINY, "norm": "bn", "name": "ddp"}  # BatchNorm synchronised: the default under DDP
    done = torchrun(2, "train", *flags(values), "--data-dir", str(data_dir), "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p.name for p in runs_dir.iterdir() if not p.name.startswith(".")] == ["ddp"]  # rank 0 alone made it
    path = runs_dir / "ddp"
    info = read_run(path)
    assert info.status == "finished" and info.world_size == 2
    assert json.loads((path / "config.json").read_text())["world_size"] == 2
    # every record once, written by one process: a second writer would double the lines or leave its temp files
    assert [m["step"] for m in records(path, "train")] == [1, 2, 3, 4]
    assert sorted(p.name for p in path.iterdir() if p.name != ".trainer.lock") == sorted(
        ["config.json", "status.json", "metrics.jsonl", "best.pt", "last.pt", "model.pt", "results.json",
         "predictions.npz"])
    assert train_losses(path) == pytest.approx(single_process_losses(values, data, 4), rel=TOLERANCE)


def test_stop_reaches_every_process_and_the_run_resumes_with_another_world_size(runs_dir, data_dir, data):
    """GroupNorm: the steps under DDP match one process's; so do those trained after a resume by one process
    from the weights the two processes' averaged gradients made. Each part ends on a stop request."""
    values = {**TINY, "norm": "gn", "name": "stop", "epochs": 40}  # far more steps than a stop lets run
    path = create_run(make_config({**values, "processes": 2}), runs_dir)
    first = stopped_while_training(torchrun_command(2, "train", "--resume", str(path), "--data-dir", str(data_dir),
                                                    "--quiet"), path)
    assert [m["step"] for m in records(path, "train")] == list(range(1, first + 1))

    second = stopped_while_training([sys.executable, "-m", "cifarnet", "train", "--resume", str(path), "--processes",
                                     "1", "--data-dir", str(data_dir), "--quiet"], path)
    info = read_run(path)
    assert second > first and info.world_size == 1
    assert [m["step"] for m in records(path, "train")] == list(range(1, second + 1))
    assert train_losses(path) == pytest.approx(single_process_losses(values, data, second), rel=TOLERANCE)


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
