"""A run's speed beside busy programs: the CPU share that sees the whole machine against the one that counted only
our own trainers (the rule before).

    python bench/busy_machine.py --data-dir DIR [--reps 3] [--hogs 2] [-- TRAIN FLAGS]

Each repetition starts ``--hogs`` busy programs (``while True: pass``, each ending by itself after 30 minutes at
most), then trains the same short run twice in its own runs folder, once under each rule, in alternating order,
and stops the busy programs. The rule before is the same code with the machine's figures hidden from
:mod:`cifarnet.training.cpu_share` (so it divides the default threads by our trainers alone). Reported per rule: the
medians over the repetitions of the wall time (command to exit) and of each run's median train img/s, the threads
its train records carry, and the 1-minute load average when it started (the machine is shared: other work shows
there too).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cifarnet.runs.folders import list_runs  # noqa: E402
from cifarnet.runs.records import METRICS_FILE, read_metrics  # noqa: E402

HOG = "import time\nend = time.monotonic() + 1800\nwhile time.monotonic() < end: pass"
DEFAULT_FLAGS = ["--subset", "30", "--epochs", "1", "--batch-size", "50", "--eval-subset", "10", "--no-tta", "--quiet"]
# The rule before: the trainer sees nothing of the machine, only its runs folder's trainers.
TRAINERS_ONLY = (
    "import sys; from cifarnet.training import cpu_share; "
    "cpu_share.free_cores = cpu_share.free_cores_by_load = lambda *_: None; "
    "from cifarnet.cli import main; sys.exit(main())"
)
RULES = {"whole machine (now)": ["-m", "cifarnet"], "our trainers only (before)": ["-c", TRAINERS_ONLY]}


def one_run(rule: str, flags: list[str], data_dir: str | None) -> dict:
    """One training run under ``rule``, timed; its median img/s and threads from its train records."""
    with tempfile.TemporaryDirectory() as runs:
        load = float(Path("/proc/loadavg").read_text().split()[0])
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                *RULES[rule],
                "train",
                *flags,
                "--runs-dir",
                runs,
                *(["--data-dir", data_dir] if data_dir else []),
            ],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        wall = time.perf_counter() - started
        (run,) = list_runs(Path(runs), include_pretrained=False)
        train = [r for r in read_metrics(run.path / METRICS_FILE)[0] if r["kind"] == "train"]
    return {
        "wall_s": wall,
        "img_s": statistics.median(r["img_s"] for r in train),
        "threads": sorted({r["threads"] for r in train}),
        "load": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--hogs", type=int, default=2)
    parser.add_argument("flags", nargs="*", help="train's own flags, after --")
    args = parser.parse_args()
    flags = args.flags or DEFAULT_FLAGS
    results: dict[str, list[dict]] = {rule: [] for rule in RULES}
    for rep in range(args.reps):
        order = list(RULES) if rep % 2 == 0 else list(reversed(RULES))
        hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
        try:
            for rule in order:
                results[rule].append(one_run(rule, flags, args.data_dir))
                print(rule, results[rule][-1], flush=True)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
    print(f"\nbusy programs: {args.hogs}; train flags: {' '.join(flags)}; {args.reps} repetition(s), medians")
    print("| CPU share | threads | train img/s | wall time | load average at start |")
    print("|---|---|---|---|---|")
    for rule, rows in results.items():
        threads = sorted({t for row in rows for t in row["threads"]})
        loads = [row["load"] for row in rows]
        print(
            f"| {rule} | {', '.join(map(str, threads))} | {statistics.median(r['img_s'] for r in rows):.0f} | "
            f"{statistics.median(r['wall_s'] for r in rows):.1f} s | {min(loads):.1f}–{max(loads):.1f} |"
        )


if __name__ == "__main__":
    main()
