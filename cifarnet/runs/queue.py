"""The queue: runs that wait for a slot under the run limit and start by themselves when one frees.

A queued run is an ordinary run folder whose status is ``queued`` (with the data folder it will train on); the
queue is nothing but those folders, oldest first, so it survives any restart. A batch of runs (an experiment) is
queued all together or not at all (:class:`QueuedBatch`), and whoever queues it starts at once as many runs as
slots are free. One worker per runs folder (``python -m cifarnet queue``, single through its flock on
``.queue.lock``, detached) starts the others as slots free, and exits when nothing waits. The kernel drops that
flock when the worker dies, however it dies (``kill -9``), so a dead worker is seen and replaced
(:func:`ensure_worker`) by whatever looks at the queue next: a trainer that ends, ``compare`` following its runs,
another ``cifarnet`` command, the Train page's refresh. A run that cannot be started fails with its reason; the
worker goes on with the others.

Cancelling takes the run's lock too, so a run is either cancelled or started, never both.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cifarnet.config import TrainConfig
from cifarnet.errors import CifarnetError, WriteError, shown
from cifarnet.runs.folders import create_run, resolve_runs_dir, run_path
from cifarnet.runs.launch import record_failure, spawn, trainer_env
from cifarnet.runs.monitor import created
from cifarnet.runs.records import (
    LOCK_FILE,
    LOG_FILE,
    PID_FILE,
    QUEUE_LOCK_FILE,
    QUEUE_LOG_FILE,
    SLOTS_FOLDER,
    read_status,
    recorded_status,
    status_record,
    write_status,
)
from cifarnet.runs.slots import (
    Claim,
    check_plain,
    is_shipped,
    lock_run,
    open_plain,
    take_slot,
    try_lock,
)
from cifarnet.runs.status import Status

QUEUE_ENV = "CIFARNET_QUEUE_LOCK"  # the descriptor of the locked .queue.lock a worker is started with
STAGING_PREFIX = ".new-"  # a batch being written; hidden, so no reader or worker sees half of one
POLL_S = 0.5


def check_queue_files(root: Path) -> None:
    """Refuse, before anything is created, a runs folder whose queue files are not what the queue writes: a
    folder or a link (maybe to a file outside the runs folder) in place of ``.queue.lock``, ``.queue.log`` or
    ``.slots``."""
    check_plain(root / QUEUE_LOCK_FILE)
    check_plain(root / QUEUE_LOG_FILE)
    check_plain(root / SLOTS_FOLDER, folder=True)


def enqueue(
    cfg: TrainConfig,
    runs_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    cluster: str | None = None,
) -> Path:
    """A new run folder that waits as ``queued`` (see :class:`QueuedBatch`, which queues runs all or none), for
    this machine or for the Ray cluster at the address ``cluster``."""
    where = str(Path(data_dir).resolve()) if data_dir else None
    return create_run(cfg, runs_dir, status={"status": Status.QUEUED, "data_dir": where, "cluster": cluster})


class QueuedBatch:
    """Runs queued all together or not at all, then started at once as far as slots are free.

    Inside ``with``: :meth:`add` writes each run into a hidden staging folder of the runs folder, holding its
    lock; :meth:`publish` puts the batch's record (e.g. the experiment's) in place first, then moves the runs in.
    Leaving ``with`` on an error removes whatever of the batch was made; leaving it normally starts runs on the
    free slots (no worker start in the way: a click trains within a second) and lets go of the others, which the
    worker starts later. A process killed part-way leaves only the hidden staging folder, or a record whose
    missing runs readers skip: never a queued run without its record (nothing could cancel it).
    """

    def __init__(self, root: Path, data_dir: str | os.PathLike | None = None, cluster: str | None = None) -> None:
        self.root, self.cluster = root, cluster  # runs for a cluster start there (cifarnet.runs.cluster), not here
        self.data_dir = str(Path(data_dir).resolve()) if data_dir else None
        self.locks: dict[str, int] = {}  # run id -> its locked .trainer.lock, held until started or let go
        self.placed: list[Path] = []  # what publish has put in place (removed again on an error)

    def __enter__(self) -> QueuedBatch:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.root))
        except OSError as exc:
            raise CifarnetError(f"cannot create runs in {shown(self.root)}: {exc.strerror or exc}") from exc
        return self

    def add(self, cfg: TrainConfig) -> Path:
        """Write one queued run (not visible yet); returns the folder it will have."""
        path = enqueue(cfg, self.stage, self.data_dir, self.cluster)
        self.locks[path.name] = try_lock(path / LOCK_FILE)
        return self.root / path.name

    def publish(self, record: Path, target: Path) -> None:
        """Put ``record`` (written in :attr:`stage`) at ``target`` unless one is there already, then the runs."""
        try:
            target.parent.mkdir(exist_ok=True)
            check_plain(target.parent, folder=True)
            os.link(record, target)  # never replaces: an experiment of the same name made meanwhile stays
            self.placed.append(target)
            for run_id in self.locks:
                if os.path.lexists(self.root / run_id):
                    raise CifarnetError(f"a run named {shown(run_id)} was created meanwhile; choose another name")
                os.rename(self.stage / run_id, self.root / run_id)
                self.placed.append(self.root / run_id)
        except FileExistsError:
            raise CifarnetError(f"{shown(target)} was created meanwhile; choose another name") from None
        except OSError as exc:
            raise WriteError.of(target, exc) from exc

    def __exit__(self, error: type[BaseException] | None, *_: object) -> None:
        try:
            if error is None:
                if self.cluster is None:  # a cluster's worker starts its runs there
                    self._start_free()
            else:
                for path in reversed(self.placed):  # runs nobody could start (their locks are held here)
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
        finally:
            for lock in self.locks.values():
                os.close(lock)
            self.locks.clear()
            shutil.rmtree(self.stage, ignore_errors=True)

    def _start_free(self) -> None:
        """Start the batch's first runs on the slots free now (the others wait for the worker)."""
        for run_id in list(self.locks):
            try:
                slot = take_slot(self.root, patient=False)
            except CifarnetError:  # the worker, started next, says why in its log
                return
            if slot is None:
                return
            start_queued(self.root / run_id, Claim(slot, self.locks.pop(run_id)), self.data_dir)


def waiting_by_cluster(root: Path) -> dict[str | None, list[Path]]:
    """The folders of the runs waiting in ``root``, oldest first (the order they start in), by where they train:
    ``None`` for this machine, else the address of their Ray cluster."""
    if not root.is_dir():
        return {}
    waiting = []
    for folder in root.iterdir():
        try:  # a folder deleted meanwhile is simply not waiting
            status = (read_status(folder)[0] or {}) if not folder.name.startswith(".") and folder.is_dir() else {}
        except OSError:
            continue
        if status.get("status") == Status.QUEUED:
            waiting.append((created(folder), folder.name, folder, status.get("cluster")))
    by_cluster: dict[str | None, list[Path]] = {}
    for *_, folder, cluster in sorted(waiting, key=lambda entry: entry[:2]):
        by_cluster.setdefault(cluster, []).append(folder)
    return by_cluster


def queued_runs(root: Path, cluster: str | None = None) -> list[Path]:
    """The runs waiting in ``root`` to train on this machine (or on the Ray cluster at ``cluster``), oldest first."""
    return waiting_by_cluster(root).get(cluster, [])


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
        if (status or {}).get("status") != Status.QUEUED:
            raise CifarnetError(
                f"run {shown(run_id)} is {(status or {}).get('status', 'unreadable')}; only a "
                "queued run can be cancelled"
            )
        write_status(path, status_record(Status.CANCELLED))
    finally:
        os.close(lock)


def start_queued(
    path: Path, held: Claim, data_dir: str | None, env: dict[str, str] | None = None, tied: bool = False
) -> subprocess.Popen | None:
    """Start the queued run in ``path`` with ``held`` (its locks, handed on to its trainer; ``env`` and ``tied`` as
    :func:`spawn` takes them); None when it could not start (then recorded ``failed`` with the reason; the queue
    goes on with the others).

    Its status says ``starting``, with the trainer's pid, as soon as the trainer exists: the page stops saying
    "waiting for a free slot" at once, not when the trainer has imported its libraries seconds later.
    """
    try:
        process = spawn(path, held, data_dir, env, tied)
    except CifarnetError as exc:
        print(f"cifarnet: queue: {exc}", file=sys.stderr)
        return None
    except Exception as exc:  # a defect must fail this run with its reason, never the queue
        record_failure(path, f"its trainer could not be started: {type(exc).__name__}: {exc}")
        return None
    if recorded_status(path) == Status.QUEUED:  # the trainer writes its own within seconds
        with contextlib.suppress(WriteError):  # the trainer says it itself (or why it could not)
            write_status(path, status_record(Status.STARTING, process.pid))
    return process


def lock_queued(path: Path) -> int | None:
    """The locked run lock of the run in ``path`` if it still waits; None when someone else holds it (a cancel, a
    start, a trainer from the command line) or it stopped waiting since it was listed (cancelled or started)."""
    try:
        run = lock_run(path)
    except CifarnetError:
        return None
    if recorded_status(path) != Status.QUEUED:
        os.close(run)
        return None
    return run


def start_next(root: Path, slot: int, tried: set[str]) -> subprocess.Popen | None:
    """Start the oldest queued run that nobody else is starting and this worker has not tried, on ``slot``; None
    (the slot closed) if there is none or it could not start."""
    for path in queued_runs(root):
        if path.name in tried:
            continue
        run = lock_queued(path)
        if run is None:
            continue
        tried.add(path.name)  # once per worker: a run whose failure cannot even be recorded is not retried forever
        if (path / PID_FILE).exists():  # started once already, and its trainer died before it could say so
            os.close(run)
            record_failure(path, f"its trainer ended before it started training; see its {LOG_FILE}")
            continue
        return start_queued(path, Claim(slot, run), (read_status(path)[0] or {}).get("data_dir"))
    os.close(slot)
    return None


def worker_lock(root: Path, cluster: str | None = None) -> Path:
    """The lock file of the one worker serving ``root``'s runs for this machine (``.queue.lock``) or for the Ray
    cluster at the address ``cluster`` (one per address, named by its hash: an address is not a file name)."""
    if cluster is None:
        return root / QUEUE_LOCK_FILE
    return root / f".queue-ray-{hashlib.sha1(cluster.encode()).hexdigest()[:12]}.lock"


def handed_lock(root: Path, cluster: str | None = None) -> int | None:
    """The locked worker lock of ``root`` that :func:`ensure_worker` handed to this worker, if any."""
    raw = os.environ.pop(QUEUE_ENV, "")
    try:
        fd = int(raw)
        held, lock = os.fstat(fd), worker_lock(root, cluster).stat()
    except (ValueError, OSError):
        return None
    if (held.st_dev, held.st_ino) != (lock.st_dev, lock.st_ino):
        return None
    os.set_inheritable(fd, False)  # kept by the worker, not by the trainers it starts
    return fd


def hold_queue(root: Path, cluster: str | None, waiting: Callable[[], bool], work: Callable[[], None]) -> None:
    """Run ``work`` under the worker lock while runs wait, unless another worker holds it (then return at once).

    The lock is held from the worker's birth when :func:`ensure_worker` handed it over. After letting go of it,
    the worker looks once more, so a run queued while it was leaving is never stranded.
    """
    handed = handed_lock(root, cluster)
    while waiting():
        lock, handed = (handed if handed is not None else try_lock(worker_lock(root, cluster))), None
        if lock is None:
            return
        try:
            work()
        finally:
            os.close(lock)
    if handed is not None:
        os.close(handed)


def serve(runs_dir: str | os.PathLike | None = None) -> None:
    """The worker's loop: start queued runs as slots free, until none waits (returns at once if another serves)."""
    root = resolve_runs_dir(runs_dir)
    children: list[subprocess.Popen] = []
    tried: set[str] = set()

    def waiting() -> bool:
        return any(path.name not in tried for path in queued_runs(root))

    def work() -> None:
        nonlocal children
        while waiting():
            children = [child for child in children if child.poll() is None]  # reap the ended ones
            slot = take_slot(root, patient=False)
            child = start_next(root, slot, tried) if slot is not None else None
            if child is None:
                time.sleep(POLL_S)
            else:
                children.append(child)

    hold_queue(root, None, waiting, work)


def ensure_worker(runs_dir: str | os.PathLike | None = None) -> bool:
    """Start the queue workers of the runs folder, detached, where runs wait and no worker serves them (none was
    started yet, or it was killed): one for this machine, one per Ray cluster that runs wait for. Whether it
    started one. Cheap when the workers live: one refused flock each.

    A worker is started holding its lock (this call takes it and hands it over), so the seconds it takes to load
    its libraries never look like a missing worker to the next caller: one worker, however often asked.
    """
    root = resolve_runs_dir(runs_dir)
    started = [_ensure_one(root, cluster) for cluster in waiting_by_cluster(root)]  # every place, not the first
    return any(started)


def _ensure_one(root: Path, cluster: str | None) -> bool:
    """:func:`ensure_worker` for the runs of one place: this machine (``None``) or one cluster."""
    lock = try_lock(worker_lock(root, cluster))
    if lock is None:
        return False  # it serves the runs queued before this call (it looks again before it leaves)
    try:
        if not queued_runs(root, cluster):
            return False
        log = open_plain(root / QUEUE_LOG_FILE, os.O_WRONLY | os.O_APPEND)
        try:
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cifarnet",
                    "queue",
                    "--runs-dir",
                    str(root),
                    *(["--ray-address", cluster] if cluster else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**trainer_env(), QUEUE_ENV: str(lock)},
                pass_fds=(lock,),
            )
        finally:
            os.close(log)
    finally:
        os.close(lock)  # the worker's copy holds it now
    return True
