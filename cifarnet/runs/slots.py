"""Who may train: a slot under the run limit, and a run's one trainer; both held as OS file locks.

The run limit (``$CIFARNET_MAX_RUNS``) is ``N`` slot files, ``.slots/0`` .. ``.slots/N-1`` in the runs folder; a
trainer holds one with ``flock`` for its whole life, and each run folder has a ``.trainer.lock`` that its trainer
holds too. Taking a lock is the check and the claim in one step, so two starts at the same moment (three browser
tabs, the CLI and the dashboard, two ``train --resume``) cannot both pass; and the kernel drops a process's locks
when it ends, however it ends (even ``kill -9``), so a dead trainer never keeps a slot.

A launcher takes both locks itself (so it can refuse at once, before anything starts) and hands them to the
trainer it starts: the locked files stay open in the child (``pass_fds``) and ``$CIFARNET_CLAIM`` names their
descriptors; a flock belongs to the open file, so it stays held while the child has it, after the launcher closes
its own copy.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cifarnet.config import TrainConfig
from cifarnet.errors import CifarnetError, shown
from cifarnet.runs.folders import PRETRAINED_DIR, create_run, list_runs, read_run, resolve_runs_dir
from cifarnet.runs.records import LOCK_FILE, SLOTS_FOLDER
from cifarnet.runs.status import ENDED, LIVE

DEFAULT_MAX_LIVE = 2
MOST_LIVE = 1000  # the largest run limit accepted (a slot is a file; more would be a typo, not a machine)
CLAIM_ENV = "CIFARNET_CLAIM"  # "SLOT_FD:RUN_FD", set only for a trainer a launcher started
HELD_ENV = "CIFARNET_CLAIM_HELD"  # set for the processes of a trainer that became torchrun: it holds the claim
EXIT_GRACE_S = 10.0  # how long a trainer that has recorded its end may take to exit and drop its locks


def max_live_runs() -> int:
    """Simultaneous runs allowed (``$CIFARNET_MAX_RUNS``, default 2: one per core here).

    Plain ASCII digits only: ``int`` would also take ``1_0``, ``+3`` or `` 3`` and other scripts' digits, each a
    likely typo read as a number. Unset or empty is the default.
    """
    raw = os.environ.get("CIFARNET_MAX_RUNS", "")
    if raw == "":
        return DEFAULT_MAX_LIVE
    if not re.fullmatch(r"[0-9]+", raw):
        raise CifarnetError(
            f"CIFARNET_MAX_RUNS={shown(raw)} is not a whole number; allowed: digits only, 1 to "
            f"{MOST_LIVE} (unset or empty: {DEFAULT_MAX_LIVE})"
        )
    digits = raw.lstrip("0")  # (a thousand-digit number is refused without converting it)
    if len(digits) > len(str(MOST_LIVE)) or not 1 <= int(digits or "0") <= MOST_LIVE:
        raise CifarnetError(f"CIFARNET_MAX_RUNS={shown(raw)} is out of range; allowed: 1 to {MOST_LIVE}")
    return int(digits)


def _kind(mode: int) -> str:
    """What a file system entry is, as a refusal says it."""
    for test, kind in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISREG, "a file")):
        if test(mode):
            return kind
    return "a special file"


def open_plain(path: Path, flags: int) -> int:
    """``path`` opened with ``flags`` (created when missing) only if it is a plain file: a folder, a symbolic link
    (even one pointing to a file) or a device in its place is refused in one line, so nothing is ever written
    outside the runs folder through a link planted there."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR):
            check_plain(path)  # says what is there
        raise CifarnetError(f"cannot use {shown(path)}: {exc.strerror or exc}") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise CifarnetError(f"{shown(path)} is {_kind(mode)}; it must be a plain file (remove it and try again)")
    return fd


def check_plain(path: Path, folder: bool = False) -> None:
    """Refuse, before anything is created, a ``path`` that exists but is not a plain file (or, with ``folder``, a
    plain folder): a link or the wrong kind where the runs folder keeps its own files."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CifarnetError(f"cannot use {shown(path)}: {exc.strerror or exc}") from exc
    wanted, kind = (stat.S_ISDIR, "folder") if folder else (stat.S_ISREG, "file")
    if not wanted(mode):
        raise CifarnetError(f"{shown(path)} is {_kind(mode)}; it must be a plain {kind} (remove it and try again)")


def try_lock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive flock, or None when another process holds it."""
    fd = open_plain(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _patiently(attempt: Callable[[], int | None], finishing: Callable[[], bool]) -> int | None:
    """``attempt()``, tried again for up to :data:`EXIT_GRACE_S` while ``finishing()`` says its lock's holder has
    ended or died (a trainer that wrote ``stopped``, or was killed, holds its locks until its process is gone)."""
    deadline = time.monotonic() + EXIT_GRACE_S
    while (fd := attempt()) is None and time.monotonic() < deadline and finishing():
        time.sleep(0.1)
    return fd


def take_slot(root: Path, patient: bool = True) -> int | None:
    """A free slot of the runs folder ``root`` (its locked descriptor), or None when all are taken.

    ``patient`` waits a little for a trainer that has ended but not yet exited (a start the user asked for);
    the queue, which looks again twice a second anyway, does not.
    """
    folder = root / SLOTS_FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CifarnetError(f"cannot use the runs folder {root}: {exc.strerror or exc}") from exc
    check_plain(folder, folder=True)
    limit = max_live_runs()

    def any_free() -> int | None:
        return next((fd for number in range(limit) if (fd := try_lock(folder / str(number))) is not None), None)

    return _patiently(any_free, lambda: len(live_runs(root)) < limit) if patient else any_free()


def live_runs(root: Path) -> list[str]:
    """The runs whose records say they train now."""
    return [r.run_id for r in list_runs(root, include_pretrained=False) if r.status in LIVE]


def limit_message(root: Path) -> str:
    """Why a start is refused: the runs training now and the limit (the lock decided; this only explains)."""
    live = live_runs(root)
    return (
        f"{len(live)} run(s) already training ({', '.join(live) or 'starting now'}); the limit is "
        f"{max_live_runs()} (CIFARNET_MAX_RUNS). Stop one or wait for it to finish."
    )


def is_shipped(path: Path) -> bool:
    """Whether ``path`` is one of the runs installed with the package (read-only everywhere)."""
    return path.resolve().parent == PRETRAINED_DIR.resolve()


def lock_run(path: Path) -> int:
    """The locked ``.trainer.lock`` of the run in ``path``; refused for a run with a trainer, or a shipped run."""
    if is_shipped(path):
        raise CifarnetError(
            f"run {path.name} is a shipped run and read-only; train your own with the same "
            "settings (see its config.json) into the runs folder"
        )
    fd = _patiently(lambda: try_lock(path / LOCK_FILE), lambda: read_run(path).status in ENDED)
    if fd is None:
        raise CifarnetError(f"run {path.name} already has a trainer; one trainer per run (stop it first)")
    return fd


@dataclass
class Claim:
    """The locks a trainer holds for its whole life: a slot under the limit and its run's own lock. A run on a
    cluster node has no slot (``None``): the cluster's scheduler, not this folder's limit, decides what runs where
    (:mod:`cifarnet.runs.cluster`)."""

    slot: int | None
    run: int

    @property
    def fds(self) -> tuple[int, ...]:
        """The descriptors held (the slot's, when there is one, and the run's)."""
        return tuple(fd for fd in (self.slot, self.run) if fd is not None)

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)

    def env(self) -> dict[str, str]:
        """How a child started with ``pass_fds=self.fds`` learns that it holds them (``:RUN`` without a slot)."""
        return {CLAIM_ENV: f"{'' if self.slot is None else self.slot}:{self.run}"}


def claim(path: Path, slot: int | None = None) -> Claim:
    """Both locks for training the run in ``path``, taking a slot unless one (``slot``, then owned by the claim)
    is already held.

    Refused in one line, with nothing left held, when the run has a trainer or every slot is taken.
    """
    try:
        run = lock_run(path)
    except CifarnetError:
        if slot is not None:
            os.close(slot)
        raise
    slot = slot if slot is not None else take_slot(path.parent)
    if slot is None:
        os.close(run)
        raise CifarnetError(limit_message(path.parent))
    return Claim(slot, run)


def inherited(path: Path) -> Claim | None:
    """The claim a launcher handed to this process for ``path``, if ``$CIFARNET_CLAIM`` names this run's lock."""
    raw = os.environ.pop(CLAIM_ENV, "")
    try:
        slot_text, run_text = raw.split(":")
        held = Claim(int(slot_text) if slot_text else None, int(run_text))
        lock, fds = (path / LOCK_FILE).stat(), [os.fstat(fd) for fd in held.fds]
    except (ValueError, OSError):
        return None
    if (fds[-1].st_dev, fds[-1].st_ino) != (lock.st_dev, lock.st_ino):
        return None
    for fd in held.fds:  # kept by this trainer only, not by programs it may start
        os.set_inheritable(fd, False)
    return held


def claim_new_run(
    cfg: TrainConfig, runs_dir: str | os.PathLike | None = None, trainer: int | None = None
) -> tuple[Path, Claim]:
    """A new run folder for ``cfg`` with both locks held; refused, with nothing created, over the limit. Its
    status names ``trainer``, the pid of the process that will train it, when that is this one (a CLI start)."""
    root = resolve_runs_dir(runs_dir)
    slot = take_slot(root)
    if slot is None:
        raise CifarnetError(limit_message(root))
    try:
        path = create_run(cfg, root, {"pid": trainer})
    except CifarnetError:
        os.close(slot)
        raise
    return path, claim(path, slot)
