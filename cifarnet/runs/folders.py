"""Run records: the folder each run writes and everything that reads it.

This is the contract between the trainer (a separate process) and the dashboard.
A run folder holds (:mod:`cifarnet.runs.records` names, reads and writes the record files):

    config.json      the record format, the validated TrainConfig, parameter count and creation time
    status.json      status, pid, progress (epoch, step, img/s, ETA), error text; replaced atomically
    metrics.jsonl    one JSON object per line, appended and flushed as it happens
    last.pt          full training state (weights + optimizer + step) for resuming
    best.pt          weights at the best test accuracy so far
    model.pt         the final weights (what evaluate, Misclassified and Predict use)
    results.json     final accuracy, flip-TTA accuracy, per-class accuracy, confusion matrix
    predictions.npz  test labels with the model's top-5 classes and probabilities
    log.txt          the trainer's own output
    pid              the trainer's process id, written by the launcher the moment it starts it
    STOP             which trainer is asked to stop (:func:`trainer_identity`); it ends after its current step
    .trainer.lock    locked by the run's one trainer while it lives (:mod:`cifarnet.runs.slots`)

A run waiting for a slot under the run limit is ``queued`` (:mod:`cifarnet.runs.queue`); one cancelled before it
started is ``cancelled`` (every status: :mod:`cifarnet.runs.status`).

Readers never trust a file blindly: a damaged metrics line or status file, or a value of the wrong kind
(the schema in :mod:`cifarnet.runs.records`), is reported as the run's damage and the rest is still shown; a run
whose process vanished is ``failed``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarnet.config import NAME_PATTERN, TrainConfig, resolve_ws
from cifarnet.devices import select_device
from cifarnet.errors import CifarnetError, WriteError, shown
from cifarnet.nets.models import build_model, count_params
from cifarnet.runs.records import (
    CONFIG_FILE,
    METRICS_FILE,
    PID_FILE,
    RESULTS_FILE,
    STATUS_FILE,
    STOP_FILE,
    read_config,
    read_metrics,
    read_results,
    read_status,
    status_record,
    write_config,
    write_file,
    write_status,
)
from cifarnet.runs.status import LIVE, STATUSES, Status

DEFAULT_RUNS_DIR = "./runs"
PRETRAINED_DIR = Path(__file__).parents[1] / "pretrained"
# The shipped runs the app shows first (the Overview, Inside's side by side, the default model of Predict): the
# default network with each norm, seed 0. Their seed-1 twins and the previous network's (s9) runs ship beside them.
SHIPPED_TRIO = ("s10-bn", "s10-ln", "s10-gn")
HOST = socket.gethostname()
NODE_ENV = "CIFARNET_NODE"  # the cluster node a trainer runs on, set by whoever started it (cifarnet.runs.cluster)
# How long a trainer on another machine may stay silent (its status is rewritten every second or so while it
# trains; a final evaluation takes seconds) before a reader here calls it lost: its pid means nothing here.
REMOTE_SILENCE_S = 600.0


def resolve_runs_dir(runs_dir: str | os.PathLike | None = None) -> Path:
    """The runs folder: the argument, else ``$CIFARNET_RUNS``, else ``./runs``."""
    chosen = runs_dir if runs_dir not in (None, "") else os.environ.get("CIFARNET_RUNS") or DEFAULT_RUNS_DIR
    path = Path(chosen).expanduser()
    try:
        problem = "is a file, not a folder" if path.exists() and not path.is_dir() else None
    except OSError as exc:  # a name too long for the file system, a loop of links...
        problem = f"cannot be used ({exc.strerror})"
    if problem:
        raise CifarnetError(
            f"runs folder {shown(path)} {problem}; set --runs-dir or CIFARNET_RUNS to a folder "
            "(it is created when missing)"
        )
    return path


def process_alive(pid: Any) -> bool:
    """True if ``pid`` is a live (not zombie) cifarnet process."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): the signal check is all we have
    state = stat.rsplit(")", 1)[-1].split()[0]
    # An empty cmdline is a process inside exec (Popen has returned, the new program's
    # arguments are not mapped yet): a trainer being born, not a stranger reusing the pid.
    return state not in ("Z", "X") and (not cmdline or b"cifarnet" in cmdline)


def trainer_identity(pid: int) -> str:
    """The process ``pid`` named unambiguously: its pid and its start time (clock ticks after boot, from
    ``/proc/PID/stat``), so a ``STOP`` left for a trainer that died is never obeyed by a later one that happens to
    get the same pid. Just the pid where ``/proc`` is missing (macOS)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return f"{pid} {fields[19]}"  # field 22 of stat, the 20th after the command name
    except (OSError, IndexError):
        return str(pid)


def _launched_pid(path: Path) -> int | None:
    """The pid the launcher recorded (covers the moment before the trainer writes its status)."""
    try:
        return int((path / PID_FILE).read_text())
    except (OSError, ValueError):
        return None


def trainer_pid(path: Path, status_record: dict) -> Any:
    """The pid of the run's trainer: the one in its status, else the launcher's (as recorded: maybe not a number)."""
    return status_record.get("pid") or _launched_pid(path)


def where_trained() -> dict[str, str]:
    """What a trainer records about where it runs: ``host``, which says whether a reader can check its pid, and
    ``node``, the cluster node it trained on (Ray's node id) or else its host."""
    return {"host": HOST, "node": os.environ.get(NODE_ENV) or HOST}


def elsewhere(status_record: dict) -> str | None:
    """The other machine the run's trainer records it runs on, or None when it is this one (or not recorded)."""
    host = status_record.get("host")
    return host if isinstance(host, str) and host != HOST else None


def trainer_alive(path: Path, status_record: dict) -> bool:
    """Whether the trainer of the run in ``path`` still runs: its process here, or on another machine of a
    cluster whatever it last wrote, as long as that is recent."""
    if elsewhere(status_record):
        updated = status_record.get("updated")
        return isinstance(updated, (int, float)) and time.time() - updated < REMOTE_SILENCE_S
    return process_alive(trainer_pid(path, status_record))


@dataclass
class RunInfo:
    """What a reader knows about one run folder."""

    run_id: str
    path: Path
    config: dict
    status: str
    status_record: dict
    metrics: list[dict]
    results: dict | None
    pretrained: bool = False
    damage: list[str] = field(default_factory=list)

    @property
    def evals(self) -> list[dict]:
        return [m for m in self.metrics if m.get("kind") == "eval"]

    @property
    def best_acc(self) -> float | None:
        accs = [m["test_acc"] for m in self.evals if isinstance(m.get("test_acc"), (int, float))]
        if self.results and isinstance(self.results.get("test_acc"), (int, float)):
            accs.append(self.results["test_acc"])
        return max(accs) if accs else None

    @property
    def final_acc(self) -> float | None:
        if self.results and isinstance(self.results.get("test_acc"), (int, float)):
            return self.results["test_acc"]
        return self.evals[-1].get("test_acc") if self.evals else None

    @property
    def weight_standardised(self) -> str | None:
        """Which of the run's convs are weight-standardised: ``all``, ``except-depthwise`` or ``off``
        (``auto`` resolved; None if its setting is unreadable)."""
        try:
            return resolve_ws(self.config.get("arch"), self.config.get("norm"), self.config.get("ws"))
        except CifarnetError:
            return None

    @property
    def world_size(self) -> int:
        """How many processes trained the run (data-parallel when more than one); records before DDP: one."""
        size = self.config.get("world_size")
        return size if isinstance(size, int) and size > 0 else 1

    @property
    def duration_s(self) -> float | None:
        times = [m.get("time") for m in self.metrics if isinstance(m.get("time"), (int, float))]
        return max(times) if times else None

    @property
    def progress(self) -> dict:
        progress = self.status_record.get("progress")
        return progress if isinstance(progress, dict) else {}


def read_run(path: Path, pretrained: bool = False) -> RunInfo:
    """Read one run folder, tolerating damage, and resolve a vanished process to ``failed``."""
    config, damage = read_config(path)
    status_record, problems = read_status(path)
    damage += problems
    status_record = status_record or {}
    status = status_record.get("status")
    if status not in STATUSES:
        status = Status.FAILED
        status_record = {**status_record, "error": status_record.get("error") or "status unreadable"}
    elif status in LIVE and not trainer_alive(path, status_record):
        status = Status.FAILED
        lost = (
            f"its trainer on {host} stopped reporting"
            if (host := elsewhere(status_record))
            else "the training process ended without reporting (killed or crashed)"
        )
        status_record = {**status_record, "error": f"{lost}; its metrics so far are kept and it can be resumed"}
    metrics, bad_lines = read_metrics(path / METRICS_FILE)
    if bad_lines:
        damage.append(f"{METRICS_FILE} has {len(bad_lines)} damaged line(s): {', '.join(map(str, bad_lines[:5]))}")
    results, problems = read_results(path)
    damage += problems
    return RunInfo(path.name, path, config or {}, status, status_record, metrics, results, pretrained, damage)


# Ended runs as last read, keyed by their files' sizes and modification times: the Runs page re-lists every run
# every few seconds while one trains, and re-parsing the metrics of runs that cannot change would dominate that.
ENDED_CACHE: OrderedDict[tuple, RunInfo] = OrderedDict()
ENDED_CACHE_SIZE = 256
SIGNATURE_FILES = (CONFIG_FILE, STATUS_FILE, METRICS_FILE, RESULTS_FILE, PID_FILE)


def _file_signature(path: Path) -> tuple:
    """Size and modification time of every file a reader looks at (``None`` for a missing one)."""
    signature = []
    for name in SIGNATURE_FILES:
        try:
            stat = (path / name).stat()
            signature.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            signature.append(None)
    return tuple(signature)


def read_run_cached(path: Path, pretrained: bool = False) -> RunInfo:
    """:func:`read_run`, served from memory for an ended run whose files have not changed since it was read.

    A live run is always read afresh (its trainer may have died since); resuming a run rewrites its ``pid`` file
    and status, which changes its signature.
    """
    key = (str(path), pretrained, _file_signature(path))
    if key in ENDED_CACHE:
        ENDED_CACHE.move_to_end(key)
        return ENDED_CACHE[key]
    info = read_run(path, pretrained)
    if info.status not in LIVE:
        ENDED_CACHE[key] = info
        while len(ENDED_CACHE) > ENDED_CACHE_SIZE:
            ENDED_CACHE.popitem(last=False)
    return info


def list_runs(runs_dir: str | os.PathLike | None = None, include_pretrained: bool = True) -> list[RunInfo]:
    """Every run, newest first; shipped pretrained runs last."""
    runs = []
    root = resolve_runs_dir(runs_dir)
    if root.is_dir():
        folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        for folder in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True):
            runs.append(read_run_cached(folder))
    return (runs + shipped_runs()) if include_pretrained else runs


def shipped_runs() -> list[RunInfo]:
    """The pretrained runs installed with the package (readable even when the runs folder is not)."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return [read_run_cached(p, pretrained=True) for p in sorted(PRETRAINED_DIR.iterdir()) if p.is_dir()]


def is_run_id(name: Any) -> bool:
    """Whether ``name`` can name a run: the run-name alphabet, nothing that could point outside the runs folder.
    (A folder made by hand under another name is listed on the Runs page, but no link or command can name it.)"""
    return isinstance(name, str) and NAME_PATTERN.match(name) is not None and ".." not in name


def run_path(run_id: str, runs_dir: str | os.PathLike | None = None) -> Path:
    """The folder of ``run_id``, refusing ids that could point outside the runs folder."""
    root = resolve_runs_dir(runs_dir)
    if not is_run_id(run_id):
        raise CifarnetError(f"run id {shown(run_id)} is not valid; ids use letters, digits, '_', '.', '-'")
    for base in (root, PRETRAINED_DIR):
        candidate = (base / run_id).resolve()
        if candidate.parent == base.resolve() and candidate.is_dir():
            return candidate
    raise CifarnetError(f"no run {shown(run_id)} in {root}")


def new_run_id(cfg: TrainConfig) -> str:
    """The config's name, else a sortable time stamp with the arch and norm."""
    if cfg.name:
        return cfg.name
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.arch}-{cfg.norm}-{secrets.token_hex(2)}"


def check_not_shipped(name: str) -> None:
    """Refuse a run name a shipped run goes by: links, the Inside page and ``run_path`` name runs by id, and one
    of the two would silently stand in for the other."""
    if (PRETRAINED_DIR / name).is_dir():
        raise CifarnetError(f"run name {shown(name)} is a shipped run's; choose another name")


def create_run(cfg: TrainConfig, runs_dir: str | os.PathLike | None = None, status: dict | None = None) -> Path:
    """Make the run folder with its config and a ``starting`` status (``status``: the fields that differ, such as
    another status or the pid of a trainer that exists already); refuse a taken name (also a shipped run's), or a
    device this machine does not have (before any folder exists). A folder whose records cannot be written is
    removed."""
    select_device(cfg.device)
    if cfg.name:  # a generated id is a time stamp, never a shipped run's
        check_not_shipped(cfg.name)
    root = resolve_runs_dir(runs_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        path = root / new_run_id(cfg)
        path.mkdir()
    except FileExistsError:
        raise CifarnetError(f"a run named {shown(cfg.name)} already exists in {root}; choose another name") from None
    except OSError as exc:
        raise CifarnetError(f"cannot create a run in {root}: {exc.strerror or exc}") from exc
    try:
        write_config(path, cfg, count_params(build_model(**cfg.model_args)))
        write_status(path, {**status_record(Status.STARTING), **(status or {})})
    except WriteError:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path


def request_stop(run_id: str, runs_dir: str | os.PathLike | None = None) -> None:
    """Ask a live run to end after its current step (it saves ``last.pt`` and says ``stopped``).

    An ended run is refused, and the request names the trainer it is for (:func:`trainer_identity`): a later
    trainer of the run does not obey a request that outlived the one it was made for, even with the same pid.
    """
    path = run_path(run_id, runs_dir)
    if path.parent == PRETRAINED_DIR.resolve():
        raise CifarnetError(f"run {shown(run_id)} is a shipped pretrained run; it is not running")
    info = read_run(path)
    if info.status not in LIVE:
        raise CifarnetError(f"run {shown(run_id)} is not running (it is {info.status}); nothing to stop")
    identity = (
        info.status_record.get("trainer")
        if elsewhere(info.status_record)
        else trainer_identity(trainer_pid(path, info.status_record))
    )
    if not identity:
        raise CifarnetError(
            f"run {shown(run_id)} is starting on {shown(elsewhere(info.status_record))}; stop it again in a moment"
        )
    write_file(path / STOP_FILE, identity.encode())


def delete_run(run_id: str, runs_dir: str | os.PathLike | None = None) -> None:
    """Remove a user's finished run; shipped runs and live runs are refused."""
    path = run_path(run_id, runs_dir)
    if path.parent != resolve_runs_dir(runs_dir).resolve():
        raise CifarnetError(f"run {shown(run_id)} is a shipped pretrained run and cannot be deleted")
    if read_run(path).status in LIVE:
        raise CifarnetError(f"run {shown(run_id)} is still running; stop it first")
    shutil.rmtree(path)


def first_reaching(info: RunInfo, target: float) -> dict | None:
    """The first evaluation at or above ``target`` accuracy (its epoch and wall time), if any."""
    for record in info.evals:
        if isinstance(record.get("test_acc"), (int, float)) and record["test_acc"] >= target:
            return record
    return None
