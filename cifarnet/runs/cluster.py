"""Runs trained on a Ray cluster (``sweep``/``compare --cluster ray``): the same trainer, records and pages.

The runs folder is shared: the machine that queues the runs and every node of the cluster see it at the same
path (one machine trivially; several through a shared file system such as NFS). A run queued for a cluster is an
ordinary queued run whose status names the cluster's address. Its worker (``python -m cifarnet queue
--ray-address ADDRESS``, started and replaced like the local queue's worker, :func:`cifarnet.runs.queue.ensure_worker`)
is a Ray driver: it submits one Ray task per run, and Ray places the tasks on nodes with a free CPU, so the
cluster's resources are the run limit there (``CIFARNET_MAX_RUNS`` stays this machine's). The task
(:func:`train_on_node`) takes the run's lock, gives way to a cancel, and starts the ordinary trainer (``train
--resume``) tied to itself, with its node's id in ``$CIFARNET_NODE``: the trainer records it as ``node`` in its
status and writes everything else as any trainer does, so the dashboard follows the run live and ``stop`` reaches it
through its ``STOP`` file. A task that dies with its worker or its node takes its trainer with it and the driver
ends the run ``failed`` with Ray's reason; it is not retried (resume it: ``last.pt`` keeps its progress).

Early stopping stays our own rule (:mod:`cifarnet.runs.early_stop`), which each trainer applies against the
runs in the shared folder: the same on a cluster as on one machine, where Ray Tune's schedulers would need the
training loop inside a Tune trainable.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from pathlib import Path
from typing import Any

from cifarnet.errors import CifarnetError, shown
from cifarnet.runs.folders import NODE_ENV, resolve_runs_dir
from cifarnet.runs.launch import record_failure, trainer_env
from cifarnet.runs.queue import POLL_S, hold_queue, lock_queued, queued_runs, start_queued
from cifarnet.runs.records import LOCK_FILE, read_config, read_status, recorded_status
from cifarnet.runs.slots import Claim, try_lock
from cifarnet.runs.status import PENDING, Status

ADDRESS_ENV = "RAY_ADDRESS"  # Ray's own variable for the cluster to join
CONNECT_TIMEOUT_S = 3.0
INSTALL_HINT = "pip install -r requirements-cluster.txt"


def cluster_address(address: str | None) -> str:
    """The cluster's ``HOST:PORT``: ``address``, else ``$RAY_ADDRESS``; refused in one line when neither is given
    or it is not of that form."""
    chosen = address or os.environ.get(ADDRESS_ENV, "")
    host, _, port = chosen.rpartition(":")
    if not chosen:
        raise CifarnetError(f"--cluster ray needs the cluster's address: --ray-address HOST:PORT or {ADDRESS_ENV}")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() for c in chosen):
        raise CifarnetError(
            f"Ray address {shown(chosen)} is not HOST:PORT (e.g. 127.0.0.1:6379, the head's "
            "GCS address that `ray start --head` prints)"
        )
    return chosen


def check_cluster(address: str | None) -> str:
    """The cluster's address, checked before any run exists: Ray installed here, and a head answering there."""
    address = cluster_address(address)
    if importlib.util.find_spec("ray") is None:
        raise CifarnetError(f"--cluster ray needs Ray, which is not installed: {INSTALL_HINT}")
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise CifarnetError(
            f"no Ray cluster answers at {shown(address)} ({exc.strerror or exc}); start one with "
            "`ray start --head` (docs/SWEEPS.md) or give its address"
        ) from None
    return address


def cpus_of(path: Path) -> int:
    """The CPUs Ray reserves for the run: its thread count (one when it takes a share) for each of its processes."""
    config = read_config(path)[0] or {}
    threads, processes = config.get("threads"), config.get("processes")
    return max(1, threads if isinstance(threads, int) else 1) * max(1, processes if isinstance(processes, int) else 1)


def train_on_node(folder: str, data_dir: str | None) -> str:
    """The Ray task of one run: its trainer on this node, waited for. Returns how it went, in words (the run's
    own record says more). A cancel that came first wins: the run is left as it is."""
    import ray

    path = Path(folder)
    lock = lock_queued(path)
    if lock is None:
        return "not started: it no longer waits (cancelled, or started elsewhere)"
    node = ray.get_runtime_context().get_node_id()
    process = start_queued(path, Claim(None, lock), data_dir, env={NODE_ENV: node}, tied=True)
    return "not started: see its status" if process is None else f"trainer exited with {process.wait()}"


def record_lost(path: Path, reason: str) -> None:
    """End the run ``failed`` with ``reason`` when its task died before its trainer could say how it ended: the
    run still reads as waiting or training and no trainer holds its lock (the node took it down)."""
    if recorded_status(path) not in PENDING:
        return
    lock = try_lock(path / LOCK_FILE)
    if lock is None:  # a trainer lives on: it records its own ending
        return
    try:
        record_failure(path, f"{reason}; it was not retried: resume it to continue from its last checkpoint")
    finally:
        os.close(lock)


def first_line(exc: BaseException) -> str:
    """An exception in one line: its kind and the start of its message (Ray's run to pages of context)."""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"


def fail_waiting(root: Path, address: str, reason: str) -> None:
    """End the runs waiting for the cluster at ``address`` ``failed`` with ``reason``: they cannot start there (a
    queued run that waits for a cluster that is gone would wait forever)."""
    for path in queued_runs(root, address):
        lock = lock_queued(path)
        if lock is not None:
            try:
                record_failure(path, reason)
            finally:
                os.close(lock)


class Driver:
    """This machine's link to the cluster: it submits the waiting runs and settles the tasks that end."""

    def __init__(self, root: Path, address: str) -> None:
        import ray

        self.ray, self.root, self.address = ray, root, address
        ray.init(
            address=address,
            logging_level=logging.WARNING,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": trainer_env()["PYTHONPATH"]}},
        )
        self.task = ray.remote(max_retries=0)(train_on_node)  # not retried: a rerun would start over a dead one's
        self.tasks: dict[Any, Path] = {}  # a submitted task -> its run's folder
        self.submitted: set[str] = set()

    def unsubmitted(self) -> list[Path]:
        return [path for path in queued_runs(self.root, self.address) if path.name not in self.submitted]

    def submit(self) -> None:
        for path in self.unsubmitted():
            data_dir = (read_status(path)[0] or {}).get("data_dir")
            self.tasks[self.task.options(num_cpus=cpus_of(path)).remote(str(path.resolve()), data_dir)] = path
            self.submitted.add(path.name)

    def settle(self) -> None:
        """Wait a moment for tasks to end; a task that failed ends its run with Ray's reason; a task whose run was
        cancelled meanwhile is withdrawn, so it holds no place in Ray's queue."""
        ready, waiting = self.ray.wait(list(self.tasks), num_returns=len(self.tasks), timeout=POLL_S)
        for task in ready:
            path = self.tasks.pop(task)
            try:
                self.ray.get(task)
            except self.ray.exceptions.RayError as exc:
                record_lost(path, f"its Ray task ended before its trainer did ({first_line(exc)})")
        for task in waiting:
            if recorded_status(self.tasks[task]) == Status.CANCELLED:
                self.ray.cancel(task)

    def serve(self) -> None:
        """Submit and settle until no run waits and no task is out."""
        while self.unsubmitted() or self.tasks:
            self.submit()
            if self.tasks:
                self.settle()


def serve_cluster(runs_dir: str | os.PathLike | None, address: str) -> None:
    """The worker of the runs queued for the cluster at ``address`` (returns at once if another serves them)."""
    root = resolve_runs_dir(runs_dir)
    driver: Driver | None = None

    def waiting() -> bool:
        return bool(queued_runs(root, address)) if driver is None else bool(driver.unsubmitted())

    def work() -> None:
        nonlocal driver
        try:
            driver = driver or Driver(root, address)
        except Exception as exc:  # the cluster went away since the runs were queued: they cannot start
            fail_waiting(
                root,
                address,
                f"the Ray cluster at {address} could not be joined ({first_line(exc)}); "
                "queue it again when the cluster is up",
            )
            return
        try:
            driver.serve()
        except Exception as exc:  # a defect must end the waiting runs with its reason, never strand them
            fail_waiting(root, address, f"the Ray driver failed ({first_line(exc)})")
            raise

    try:
        hold_queue(root, address, waiting, work)
    finally:
        if driver is not None:
            driver.ray.shutdown()
