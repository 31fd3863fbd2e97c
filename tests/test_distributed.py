"""Data-parallel training through ``torchrun``: 2 CPU processes (gloo) in real subprocesses.

Each test launches ``python -m torch.distributed.run`` exactly as a user would, one thread per process, on a
tiny subset; the single-process reference is the same config's :class:`~cifarnet.training.engine.Trainer` stepping in
this process, so every figure compared comes from the real code paths.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY_FLAGS, listening_addresses, processes_of, wait_for

from cifarnet import CifarnetError
from cifarnet.config import make_config
from cifarnet.data.cifar10 import load_cifar10
from cifarnet.runs.folders import RunInfo, create_run, process_alive, read_run, request_stop
from cifarnet.runs.launch import start_run
from cifarnet.runs.records import read_metrics
from cifarnet.runs.slots import claim
from cifarnet.training.engine import Trainer

pytestmark = pytest.mark.ddp  # torchrun process groups: their own tier

# 4 steps of 20 images (80 training images), evaluated on 20 at the epoch's end; 1 thread per process
TINY = {
    "subset": 8,
    "epochs": 1,
    "batch_size": 20,
    "lr": 0.01,
    "eval_subset": 2,
    "tta": False,
    "threads": 1,
    "precision": "fp32",
}  # bf16 would round each process's half differently
TOLERANCE = 1e-4  # relative: the same sums, added in another order
DEADLINE_S = 60  # a killed process must end the run within this


def torchrun_command(processes: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
        "-m",
        "cifarnet",
        *args,
    ]


def env() -> dict[str, str]:
    """This test's environment (its runs folder included) for a trainer, one thread per process."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def torchrun(processes: int, *args: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node PROCESSES -m cifarnet ARGS`` in a real subprocess."""
    return subprocess.run(
        torchrun_command(processes, *args), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=240
    )


def stopped_while_training(command: list[str], path: Path) -> int:
    """Run ``command`` (a trainer of the run in ``path``), ask it to stop the way ``cifarnet stop`` does once its
    trainer reports, and return the step its ``last.pt`` holds."""
    before = read_run(path).status_record.get("pid")
    process = subprocess.Popen(
        command, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(
            lambda: (info := read_run(path)).status == "running" and info.status_record.get("pid") != before,
            timeout=180,
            every=0.05,
        )
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
    values = {**TINY, "norm": "bn", "name": "ddp", "sync_bn": True}  # per process by default
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
        [
            "config.json",
            "status.json",
            "metrics.jsonl",
            "best.pt",
            "last.pt",
            "model.pt",
            "results.json",
            "predictions.npz",
        ]
    )
    assert train_losses(path) == pytest.approx(single_process_losses(values, data, 4), rel=TOLERANCE)


def test_stop_reaches_every_process_and_the_run_resumes_with_another_world_size(runs_dir, data_dir, data):
    """GroupNorm: the steps under DDP match one process's; so do those trained after a resume by one process
    from the weights the two processes' averaged gradients made. Each part ends on a stop request."""
    values = {**TINY, "norm": "gn", "name": "stop", "epochs": 40}  # far more steps than a stop lets run
    path = create_run(make_config({**values, "processes": 2}), runs_dir)
    first = stopped_while_training(
        torchrun_command(2, "train", "--resume", str(path), "--data-dir", str(data_dir), "--quiet"), path
    )
    assert [m["step"] for m in records(path, "train")] == list(range(1, first + 1))

    second = stopped_while_training(
        [
            sys.executable,
            "-m",
            "cifarnet",
            "train",
            "--resume",
            str(path),
            "--processes",
            "1",
            "--data-dir",
            str(data_dir),
            "--quiet",
        ],
        path,
    )
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
        status = wait_for(
            lambda: read_run(path).status_record if read_run(path).status != "running" else None, timeout=DEADLINE_S
        )
        assert status["status"] == "failed"
        assert "another process of this 2-process run ended" in status["error"]
        wait_for(lambda: not process_alive(launcher), timeout=DEADLINE_S)  # torchrun ended too
    finally:
        if process_alive(launcher):
            os.killpg(launcher, signal.SIGKILL)


def test_a_batch_that_does_not_split_between_the_processes_is_refused_in_one_line():
    with pytest.raises(
        CifarnetError,
        match=r"^batch_size=128 does not split evenly between 3 processes; allowed: "
        r"a multiple of 3$",
    ):
        make_config({"processes": 3, "batch_size": 128})
    assert make_config({"processes": 4, "batch_size": 128}).processes == 4


def statuses_until_end(process: subprocess.Popen, path: Path, on_first: Callable[[RunInfo], None]) -> list[str]:
    """Every status the run in ``path`` reads, from the moment its status file exists until ``process`` ends;
    ``on_first`` is called with the first read."""
    wait_for(lambda: (path / "status.json").exists() or process.poll() is not None, timeout=180, every=0.02)
    seen: list[str] = []
    while process.poll() is None:
        info = read_run(path)
        if not seen:
            on_first(info)
        if not seen or seen[-1] != info.status:
            seen.append(info.status)
        time.sleep(0.05)
    return seen


def test_a_starting_data_parallel_run_reads_starting_and_obeys_a_stop(runs_dir, data_dir):
    """``train --processes 2``: from the moment its folder exists the run is ``starting`` (its launcher, torchrun
    soon, is its trainer), never "failed" while its processes start, and a stop asked then is obeyed."""
    values = {**TINY, "norm": "gn", "name": "starting", "epochs": 100, "processes": 2}
    process = subprocess.Popen(
        [sys.executable, "-m", "cifarnet", "train", *flags(values), "--data-dir", str(data_dir), "--quiet"],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    path = runs_dir / "starting"
    try:
        seen = statuses_until_end(process, path, lambda _info: request_stop("starting", runs_dir))
        output = process.stdout.read()
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert seen[0] == "starting" and "failed" not in seen, seen
    assert read_run(path).status == "stopped"


def test_killing_the_launcher_ends_every_process_of_the_run(runs_dir, data_dir, tmp_path, monkeypatch):
    """``kill -9`` of a data-parallel run's launcher (torchrun, holding the run's locks): its processes end with
    it, so nothing trains without the locks; the run reads failed and its locks are free for a resume."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the killed launcher's rendezvous folder stays: not in /tmp
    cfg = make_config({**TINY, "norm": "gn", "epochs": 100, "processes": 2, "name": "orphans"})  # minutes of work
    path = runs_dir / start_run(cfg, runs_dir, data_dir)
    launcher = int((path / "pid").read_text())
    ranks: list[int | None] = []
    try:
        wait_for(lambda: records(path, "train"), timeout=180)
        ranks = [_rank_pid(launcher, rank) for rank in (0, 1)]
        assert None not in ranks
        os.kill(launcher, signal.SIGKILL)
        wait_for(lambda: not any(process_alive(pid) for pid in ranks), timeout=10, every=0.05)
        assert read_run(path).status == "failed"
        claim(path).release()  # the run's lock and a slot are free: nothing of the old trainer holds them
    finally:
        for pid in [launcher, *ranks]:
            if pid and process_alive(pid):
                os.kill(pid, signal.SIGKILL)


LOOPBACK = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}


def test_a_data_parallel_run_listens_on_loopback_only(runs_dir, data_dir, tmp_path):
    """Local by default (issue 28): every socket that ``train --processes 2`` listens on, in torchrun's agent and
    in both processes, read while they train, is bound to 127.0.0.1 or ::1; torchrun's files go when it ends."""
    temp = tmp_path / "temp"  # where the launch's rendezvous files go (TMPDIR), to see them removed
    temp.mkdir()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cifarnet",
            "train",
            *TINY_FLAGS,
            "--epochs",
            "100",
            "--norm",
            "bn",  # BatchNorm per process: the default
            "--processes",
            "2",
            "--name",
            "local",
            "--data-dir",
            str(data_dir),
            "--quiet",
        ],
        cwd=ROOT,
        env={**env(), "TMPDIR": str(temp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    path = runs_dir / "local"
    try:
        wait_for(lambda: records(path, "train"), timeout=180)  # the process group is up: both processes train
        pids = processes_of(runs_dir, b"--resume")  # torchrun's agent (the launcher it became) and the processes
        bound = listening_addresses(pids)
        request_stop("local", runs_dir)
        output, _ = process.communicate(timeout=240)
    finally:
        process.kill()
    assert len(pids) == 3, pids
    assert bound, "no listening socket seen: nothing was checked"
    assert {address for address, _ in bound} <= LOOPBACK, bound
    assert process.returncode == 0, output
    assert not list(temp.glob("cifarnet-ddp-*"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def two_nodes(runs: list[Path], *args: str) -> list[subprocess.Popen]:
    """``torchrun --nnodes 2 --node-rank R --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:PORT -m cifarnet ARGS``
    twice, as on two machines: each "node" one process, its own runs folder, no file shared."""
    port = free_port()
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--node-rank",
                str(node),
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                f"127.0.0.1:{port}",
                "-m",
                "cifarnet",
                *args,
            ],
            cwd=ROOT,
            env={**env(), "CIFARNET_RUNS": str(runs[node])},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in (0, 1)
    ]


def stopped_nodes(nodes: list[subprocess.Popen], find: Callable[[], Path | None], after_step: int) -> tuple[Path, int]:
    """Ask the run (in the folder ``find`` returns once it exists) to stop, as ``cifarnet stop`` does, once it has
    logged a step past ``after_step``; both nodes must end cleanly. Returns its folder and its ``last.pt``'s step."""
    try:
        path = wait_for(find, timeout=240, every=0.05)
        wait_for(lambda: any(m["step"] > after_step for m in records(path, "train")), timeout=240, every=0.05)
        request_stop(path.name, path.parent)
        outputs = [node.communicate(timeout=240)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert read_run(path).status == "stopped"
    return path, int(torch.load(path / "last.pt", weights_only=True)["step"])


def test_two_nodes_on_loopback_train_one_run_that_stops_and_resumes(tmp_path, data_dir):
    """The multi-machine recipe of docs/DISTRIBUTED.md on one machine: global rank 0 alone writes the run, in its
    own machine's runs folder; the world size and node count are recorded; a stop reaches both nodes; a resume on
    both continues from the checkpoint."""
    runs = [tmp_path / "machine0", tmp_path / "machine1"]
    values = {**TINY, "norm": "bn", "name": "nodes", "epochs": 40}  # far more steps than a stop lets run
    path, first = stopped_nodes(
        two_nodes(runs, "train", *flags(values), "--data-dir", str(data_dir), "--quiet"),
        lambda: next((r / "nodes" for r in runs if (r / "nodes" / "status.json").exists()), None),
        0,
    )
    assert [r for r in runs if r.exists() and any(r.iterdir())] == [path.parent]  # one folder, on one machine
    saved = json.loads((path / "config.json").read_text())
    assert (saved["world_size"], saved["nodes"]) == (2, 2)
    assert [m["step"] for m in records(path, "train")] == list(range(1, first + 1))

    resumed = two_nodes(runs, "train", "--resume", str(path), "--data-dir", str(data_dir), "--quiet")
    _, second = stopped_nodes(resumed, lambda: path, first)
    assert second > first
    assert [m["step"] for m in records(path, "train")] == list(range(1, second + 1))
