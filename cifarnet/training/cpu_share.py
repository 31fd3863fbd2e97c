"""A CPU trainer's share of the machine: the threads it can keep busy now, among our trainers and everything else.

PyTorch gives every process one thread per core. Two trainers on a 2-core machine then run four threads on two
cores, and their OpenMP threads, which wait for each other at every operator, spend the step waiting for a core
instead of computing: side by side, each trained at about half the speed it reaches on one thread
(docs/PERFORMANCE.md, "Runs side by side"). The same happens beside any other busy program: on a shared machine
with a load of 7 on 2 cores a run alone on 2 threads trained at 61 img/s, runs on 1 thread beside it at 240-384.
So a CPU trainer that was not given a thread count takes the smaller of two shares, and looks again every few
seconds as the machine changes:

- the default count divided by our trainers alive: the held slots of the runs folder (:mod:`cifarnet.runs.slots`),
  read from the kernel's lock table without taking a slot's lock (a probe that locked a free slot, however
  briefly, could make a start at that instant find the folder full);
- the cores the rest of the machine leaves free: all cores less the CPU time others used since the last look
  (``/proc/stat`` for the machine, less this process's own time), or less the 1-minute load average at the
  first look, before there is a span to measure.

The last run of a comparison on a quiet machine gets the whole machine back when the others end.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cifarnet.runs.records import SLOTS_FOLDER

LOCK_TABLE = Path("/proc/locks")
MACHINE_TIMES = Path("/proc/stat")
LOAD_AVERAGE = Path("/proc/loadavg")
LOOK_EVERY_S = 5.0
# PyTorch's own thread count for this process (one per core, or $OMP_NUM_THREADS), read before anything changes it
DEFAULT_THREADS = torch.get_num_threads()


def _lock_device(folder: Path) -> str | None:
    """The device of ``folder`` as the kernel's lock table spells it ("fe:00"), learned from a shared lock of our
    own on the folder (no trainer locks the folder itself). On an overlay file system the table names the
    underlying device, not the one ``stat`` reports, so the device is read back rather than computed."""
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        info = Path(f"/proc/self/fdinfo/{fd}").read_text()
    except OSError:  # no fdinfo (not Linux), or a lock we could not take: fall back to stat's own device
        st = os.fstat(fd)
        return f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    finally:
        os.close(fd)  # drops the lock
    for line in info.splitlines():
        fields = line.split()  # "lock:  1: FLOCK  ADVISORY  READ 7270 fe:00:2155065 0 EOF"
        if line.startswith("lock:") and len(fields) > 6:
            return fields[6].rsplit(":", 1)[0]
    return None


def held_slots(root: Path) -> int | None:
    """How many slots of the runs folder ``root`` a trainer holds now; None where the kernel's lock table cannot
    be read (not Linux). A slot is matched by its device and inode: an inode number alone also names files on
    every other file system."""
    folder = root / SLOTS_FOLDER
    if not folder.is_dir():
        return 0  # no trainer has started in this runs folder yet
    try:
        device = _lock_device(folder)
        slots = {f"{device}:{path.stat().st_ino}" for path in folder.iterdir() if path.name.isdigit()}
        table = LOCK_TABLE.read_text()
    except OSError:
        return None
    held = set()
    for line in table.splitlines():
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 7270 fe:00:2155065 0 EOF"; "->" marks a waiter
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] in slots:
            held.add(fields[5])
    return len(held)


@dataclass(frozen=True)
class CpuTimes:
    """The machine's CPU time (busy and in all, summed over its ``cores``) and this process's, at ``wall``."""

    wall: float
    busy: float
    total: float
    cores: int
    own: float


def cpu_times() -> CpuTimes | None:
    """The CPU times now, or None where ``/proc/stat`` cannot be read."""
    try:
        lines = MACHINE_TIMES.read_text().splitlines()
        ticks = [float(value) for value in lines[0].split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, IndexError, ValueError):
        return None
    cores = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    idle = ticks[3] + ticks[4]
    return CpuTimes(time.monotonic(), sum(ticks) - idle, sum(ticks), max(cores, 1), time.process_time())


def free_cores(before: CpuTimes | None, now: CpuTimes | None) -> float | None:
    """Cores the rest of the machine left free between two looks: all, less what every process but this one
    used (our other trainers included; they are others here too). None where a look failed or the span is
    too short to say."""
    if before is None or now is None or now.total - before.total <= 0 or now.wall - before.wall < 0.5:
        return None
    busy = (now.busy - before.busy) / (now.total - before.total) * now.cores
    own = (now.own - before.own) / (now.wall - before.wall)
    return now.cores - max(0.0, busy - own)


def free_cores_by_load(now: CpuTimes | None) -> float | None:
    """Cores the rest of the machine leaves free by its 1-minute load average: the first guess, before a span."""
    try:
        load = float(LOAD_AVERAGE.read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return (now.cores if now else os.cpu_count() or 1) - load


def share(trainers: int | None, free: float | None) -> int:
    """The threads to train on: the default divided by our ``trainers``, and no more than the ``free`` cores
    (rounded), never below one. An unknown figure does not limit."""
    threads = DEFAULT_THREADS // (trainers or 1)
    if free is not None:
        threads = min(threads, round(free))
    return max(1, threads)


class CpuShare:
    """The thread count of one trainer whose runs folder is ``root``, kept at its share as the machine changes:
    only on the CPU, and only where the user asked for no count (``asked``) and the run has one process
    (several processes of one run share the cores by their own rule, see :mod:`cifarnet.training.distributed`)."""

    def __init__(self, root: Path, asked: int, on_cpu: bool, parallel: bool) -> None:
        self.root, self.on_cpu = root, on_cpu
        self.adapts = on_cpu and not asked and not parallel
        self.threads = torch.get_num_threads()  # as the trainer set them up
        self.looked = -LOOK_EVERY_S
        self.times = cpu_times() if self.adapts else None

    def update(self) -> None:
        """Set this process's threads to its share now (at most every :data:`LOOK_EVERY_S`)."""
        now = time.monotonic()
        if self.adapts and now - self.looked >= LOOK_EVERY_S:
            self.looked = now
            times = cpu_times()
            free = free_cores(self.times, times)
            self.times = times
            self.threads = share(held_slots(self.root), free if free is not None else free_cores_by_load(times))
            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)

    def record(self) -> dict[str, int]:
        """The threads for a train record and the progress line: a CPU trainer's speed depends on them, a
        GPU's does not (there they only feed it)."""
        return {"threads": self.threads} if self.on_cpu else {}
