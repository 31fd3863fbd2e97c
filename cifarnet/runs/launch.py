"""Start and resume runs as separate OS processes (the dashboard's launch API; listing and stopping are in
:mod:`cifarnet.runs.folders`).

A run started here is its own process in its own session: it outlives the Streamlit
rerun (and even the Streamlit server) that started it, and reports only through its
run folder. The launcher claims the run's slot and lock first (:mod:`cifarnet.runs.slots`), so a
start over the limit or of a run that already trains is refused here, at once, and the
trainer inherits both locks.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from cifarnet.config import TrainConfig
from cifarnet.data.cifar10 import dataset_present, load_cifar10
from cifarnet.devices import select_device
from cifarnet.errors import CifarnetError, WriteError, shown
from cifarnet.runs.folders import read_run, run_path
from cifarnet.runs.records import LOG_FILE, PID_FILE, STOP_FILE, status_record, write_file, write_status
from cifarnet.runs.slots import Claim, claim, claim_new_run, max_live_runs
from cifarnet.runs.status import LIVE, RESUMABLE, Status

PR_SET_PDEATHSIG = 1  # prctl's option: the signal a process gets when its parent dies
PRCTL = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # Linux only; loaded here, not in a child


def trainer_env() -> dict[str, str]:
    """The environment of a process started from here: this one's, with this package importable."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")])),
    }


def check_startable(cfg: TrainConfig, data_dir: str | os.PathLike | None = None) -> None:
    """What a trainer of ``cfg`` would refuse at its start, refused now, before any record exists: the run limit
    of the environment, the device, and the data (present, or loaded here for the data's own reason; a queued
    run never downloads it)."""
    max_live_runs()
    select_device(cfg.device)
    if not dataset_present(data_dir):
        load_cifar10(data_dir, allow_download=False)


def record_failure(path: Path, reason: str) -> None:
    """Mark the run in ``path`` ``failed`` with ``reason``, even on a disk too full for the atomic replace
    (:func:`~cifarnet.runs.records.write_status`); when even that fails, the reason goes to stderr (a log), never
    lost in a traceback."""
    try:
        write_status(path, status_record(Status.FAILED, error=reason), ending=True)
    except WriteError as exc:
        print(f"cifarnet: run {path.name} failed: {reason} ({exc})", file=sys.stderr)


def die_with_parent() -> None:
    """In a child about to run: be killed when the process that started it dies (Linux's ``PR_SET_PDEATHSIG``).
    A trainer a cluster worker started must not train on, unwatched and unstoppable by the cluster, after its
    worker or the whole node was killed. (It runs between fork and exec, so it only calls the preloaded ``prctl``.)"""
    if PRCTL is not None:
        PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    path: Path,
    held: Claim,
    data_dir: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
    tied: bool = False,
) -> subprocess.Popen:
    """Run ``python -m cifarnet train --resume PATH`` detached, handing it the claim; returns its process.

    This process's copies of the claim's locks are closed: from now on the trainer alone holds them. A trainer
    that cannot be started, or whose pid cannot be recorded (a full disk: nobody could follow or stop it), is not
    left training: the run is recorded ``failed`` with the reason, which is raised in one line. ``env`` adds to
    its environment; a ``tied`` trainer dies with this process (:func:`die_with_parent`).
    """
    command = [sys.executable, "-m", "cifarnet", "train", "--resume", str(path), "--quiet"]
    if data_dir:
        command += ["--data-dir", str(data_dir)]
    process = None
    try:
        with open(path / LOG_FILE, "ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**trainer_env(), **held.env(), **(env or {})},
                pass_fds=held.fds,
                preexec_fn=die_with_parent if tied else None,
            )
        write_file(path / PID_FILE, str(process.pid).encode())
    except (OSError, WriteError) as exc:
        if process is not None:
            process.kill()
            process.wait()
        reason = str(exc) if isinstance(exc, WriteError) else exc.strerror or str(exc)
        record_failure(path, f"its trainer could not be started: {reason}")
        raise CifarnetError(f"run {shown(path.name)} could not start: {reason}") from exc
    finally:
        held.release()
    return process


def start_run(
    cfg: TrainConfig, runs_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None
) -> str:
    """Create the run folder and start its trainer; returns the run id.

    Refused (nothing created) when every slot of the run limit is taken.
    """
    path, held = claim_new_run(cfg, runs_dir)
    spawn(path, held, data_dir)
    return path.name


def resume_run(
    run_id: str, runs_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None
) -> str:
    """Continue a stopped, stopped-early or failed run from its ``last.pt`` in a new process."""
    path = run_path(run_id, runs_dir)
    info = read_run(path)
    if info.status in LIVE:
        raise CifarnetError(f"run {shown(run_id)} is already running")
    if info.status == Status.DIVERGED:
        raise CifarnetError(
            f"run {shown(run_id)} diverged: resuming would repeat its steps at the same learning rate; "
            "train it again with a lower --lr"
        )
    if info.status not in RESUMABLE:
        raise CifarnetError(f"run {shown(run_id)} is {info.status}; nothing to resume")
    held = claim(path)  # refuses a shipped run, a run with a trainer, and a start over the limit
    (path / STOP_FILE).unlink(missing_ok=True)
    spawn(path, held, data_dir)
    return run_id
