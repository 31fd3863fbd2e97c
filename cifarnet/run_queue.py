"""The queue: runs that wait for a slot under the run limit and start by themselves when one frees.

A queued run is an ordinary run folder whose status is ``queued`` (with the data folder it will train on); the
queue is nothing but those folders, oldest first, so it survives any restart. One worker process per runs folder
(``python -m cifarnet queue``, single through its own flock on ``.queue.lock``) is started, detached, by whoever
queues a run: it takes a free slot (:mod:`cifarnet.slots`), hands it with the run's lock to the oldest queued
run's trainer, and exits when nothing waits. No browser needs to stay open; a killed trainer frees its slot
when it dies, so the queue goes on.

Cancelling takes the run's lock too, so a run is either cancelled or started, never both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from cifarnet.config import TrainConfig
from cifarnet.errors import CifarnetError, shown
from cifarnet.launch import spawn, trainer_env
from cifarnet.monitor import created
from cifarnet.records import read_status, write_json
from cifarnet.runs import create_run, resolve_runs_dir, run_path
from cifarnet.slots import Claim, is_shipped, lock_run, take_slot, try_lock

QUEUE_LOCK = ".queue.lock"
QUEUE_LOG = ".queue.log"
POLL_S = 0.5


def enqueue(cfg: TrainConfig, runs_dir: str | os.PathLike | None = None,
            data_dir: str | os.PathLike | None = None) -> Path:
    """A new run folder that waits as ``queued`` (call :func:`ensure_worker` once its batch is queued)."""
    where = str(Path(data_dir).resolve()) if data_dir else None
    return create_run(cfg, runs_dir, status={"status": "queued", "data_dir": where})


def queued_runs(root: Path) -> list[Path]:
    """The folders of the runs waiting in ``root``, oldest first (the order they start in)."""
    if not root.is_dir():
        return []
    waiting = [folder for folder in root.iterdir() if folder.is_dir() and not folder.name.startswith(".")
               and (read_status(folder)[0] or {}).get("status") == "queued"]
    return sorted(waiting, key=lambda folder: (created(folder), folder.name))


def cancel_run(run_id: str, runs_dir: str | os.PathLike | None = None) -> None:
    """Mark a queued run ``cancelled``: it never starts. Refused for a run that is not waiting."""
    path = run_path(run_id, runs_dir)
    if is_shipped(path):
        raise CifarnetError(f"run {shown(run_id)} is a shipped run; only a queued run can be cancelled")
    try:
        lock = lock_run(path)
    except CifarnetError:
        raise CifarnetError(f"run {shown(run_id)} has started; stop it instead") from None
    try:
        status, _ = read_status(path)
        if (status or {}).get("status") != "queued":
            raise CifarnetError(f"run {shown(run_id)} is {(status or {}).get('status', 'unreadable')}; only a "
                                "queued run can be cancelled")
        write_json(path / "status.json", {"status": "cancelled", "pid": None, "updated": time.time()})
    finally:
        os.close(lock)


def start_next(root: Path, slot: int) -> subprocess.Popen | None:
    """Start the oldest queued run that nobody else is starting, on ``slot``; None (slot closed) if there is none."""
    for path in queued_runs(root):
        try:
            run = lock_run(path)
        except CifarnetError:  # being cancelled, or trained from the command line
            continue
        status, _ = read_status(path)
        if (status or {}).get("status") != "queued":  # cancelled or started since the listing
            os.close(run)
            continue
        if (path / "pid").exists():  # started once already, and its trainer died before it could say so
            _fail(path, "its trainer ended before it started training; see its log.txt")
            os.close(run)
            continue
        try:  # it stays "queued" until the trainer writes its own status, with its pid
            return spawn(path, Claim(slot, run), status.get("data_dir"))
        except OSError as exc:  # its folder became unwritable: the run fails with the reason, the queue goes on
            _fail(path, f"could not start: {exc.strerror or exc}")
            return None
    os.close(slot)
    return None


def _fail(path: Path, reason: str) -> None:
    write_json(path / "status.json", {"status": "failed", "pid": None, "updated": time.time(), "error": reason})


def serve(runs_dir: str | os.PathLike | None = None) -> None:
    """The worker's loop: start queued runs as slots free, until none waits (returns at once if another serves).

    After letting go of its lock it looks once more, so a run queued while it was leaving is never stranded.
    """
    root = resolve_runs_dir(runs_dir)
    children: list[subprocess.Popen] = []
    while queued_runs(root):
        lock = try_lock(root / QUEUE_LOCK)
        if lock is None:
            return
        try:
            while queued_runs(root):
                children = [child for child in children if child.poll() is None]  # reap the ended ones
                slot = take_slot(root)
                child = start_next(root, slot) if slot is not None else None
                if child is None:
                    time.sleep(POLL_S)
                else:
                    children.append(child)
        finally:
            os.close(lock)


def ensure_worker(runs_dir: str | os.PathLike | None = None) -> None:
    """Start the queue worker of the runs folder, detached, unless one already serves it."""
    root = resolve_runs_dir(runs_dir)
    probe = try_lock(root / QUEUE_LOCK)
    if probe is None:
        return  # it serves the runs queued before this call (it looks again before it leaves)
    os.close(probe)
    with open(root / QUEUE_LOG, "ab") as log:
        subprocess.Popen([sys.executable, "-m", "cifarnet", "queue", "--runs-dir", str(root)], stdout=log,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                         env=trainer_env())
