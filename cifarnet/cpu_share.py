"""A CPU trainer's share of the machine: PyTorch's threads divided among the trainers training now.

PyTorch gives every process one thread per core. Two trainers on a 2-core machine then run four threads on two
cores, and their OpenMP threads, which wait for each other at every operator, spend the step waiting for a core
instead of computing: side by side, each trained at about half the speed it reaches on one thread
(docs/PERFORMANCE.md, "Runs side by side"). So a CPU trainer that was not given a thread count takes its share, the
default count divided by the trainers alive, and looks again every few seconds as trainers come and go: the last
run of a comparison gets the whole machine back when the others end.

The trainers alive are the held slots of the runs folder (:mod:`cifarnet.slots`), read from the kernel's lock
table without taking a lock: a probe that locked a free slot, however briefly, could make a start at that
instant find the folder full.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from cifarnet.slots import SLOTS_FOLDER

LOCK_TABLE = Path("/proc/locks")
LOOK_EVERY_S = 5.0
# PyTorch's own thread count for this process (one per core, or $OMP_NUM_THREADS), read before anything changes it
DEFAULT_THREADS = torch.get_num_threads()


def held_slots(root: Path) -> int | None:
    """How many slots of the runs folder ``root`` a trainer holds now; None where the kernel's lock table cannot
    be read (not Linux). Slots are matched by inode number alone: on an overlay file system the lock table names
    the inode's own device, not the one ``stat`` reports."""
    folder = root / SLOTS_FOLDER
    if not folder.is_dir():
        return 0  # no trainer has started in this runs folder yet
    try:
        slots = {path.stat().st_ino for path in folder.iterdir() if path.name.isdigit()}
        table = LOCK_TABLE.read_text()
    except OSError:
        return None
    held = set()
    for line in table.splitlines():
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 7270 fe:00:2155065 0 EOF"; "->" marks a waiter
        if len(fields) > 5 and fields[1] == "FLOCK" and (inode := int(fields[5].rsplit(":", 1)[1])) in slots:
            held.add(inode)
    return len(held)


class CpuShare:
    """The thread count of one trainer whose runs folder is ``root``, kept at its share as trainers come and go:
    only on the CPU, and only where the user asked for no count (``asked``) and the run has one process
    (several processes of one run share the cores by their own rule, see :mod:`cifarnet.distributed`)."""

    def __init__(self, root: Path, asked: int, on_cpu: bool, parallel: bool) -> None:
        self.root, self.on_cpu = root, on_cpu
        self.adapts = on_cpu and not asked and not parallel
        self.threads = torch.get_num_threads()  # as the trainer set them up
        self.looked = -LOOK_EVERY_S

    def update(self) -> None:
        """Set this process's threads to its share now (at most every :data:`LOOK_EVERY_S`)."""
        now = time.monotonic()
        if self.adapts and now - self.looked >= LOOK_EVERY_S:
            self.looked = now
            self.threads = max(1, DEFAULT_THREADS // (held_slots(self.root) or 1))
            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)

    def record(self) -> dict[str, int]:
        """The threads for a train record and the progress line: a CPU trainer's speed depends on them, a
        GPU's does not (there they only feed it)."""
        return {"threads": self.threads} if self.on_cpu else {}
