"""Clean exits of data-parallel launches: every torchrun entry point, launched again and again.

    python bench/ddp_exit.py --data-dir DIR              # 20 launches, taking turns: the trainer, bench/ddp_speed
    python bench/ddp_exit.py --launches 40 --json

Each launch is ``torchrun --standalone --nproc_per_node 2`` of one entry point on a tiny budget: ``cifarnet
train`` (8 images a class, one epoch, batch 20) or ``bench/ddp_speed.py``'s worker (2 steps). A launch is clean
when torchrun exits 0 and no process says it aborted ("terminate called", SIGABRT): under load a process used to
abort in the interpreter's teardown after its work was done, and torchrun then failed the whole launch
(:func:`cifarnet.training.distributed.exit_with` is the way out of every entry point now). The report gives the load
average: how busy the machine was says how hard the launches were pressed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ABORTED = ("terminate called", "SIGABRT", "Signal 6")


def entry_points(data_dir: str | None, runs: Path) -> dict[str, list[str]]:
    """The command of each entry point, on a tiny budget."""
    data = ["--data-dir", data_dir] if data_dir else []
    return {
        "trainer": [
            *TORCHRUN,
            "-m",
            "cifarnet",
            "train",
            "--subset",
            "8",
            "--epochs",
            "1",
            "--batch-size",
            "20",
            "--eval-subset",
            "2",
            "--no-tta",
            "--threads",
            "1",
            "--runs-dir",
            str(runs),
            "--quiet",
            *data,
        ],
        "ddp_speed": [
            *TORCHRUN,
            str(ROOT / "bench" / "ddp_speed.py"),
            "--worker",
            "--norm",
            "bn",
            "--batch-size",
            "16",
            "--steps",
            "2",
            "--warmup",
            "1",
            *data,
        ],
    }


def launch(command: list[str]) -> dict:
    """One launch: its exit code, whether any process aborted, and its last output lines when it was not clean."""
    started = time.monotonic()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
    )
    output = done.stdout + done.stderr
    aborted = any(mark in output for mark in ABORTED)
    outcome = {"returncode": done.returncode, "aborted": aborted, "seconds": round(time.monotonic() - started, 1)}
    if done.returncode or aborted:
        outcome["tail"] = output[-1500:]
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--launches", type=int, default=20)
    parser.add_argument("--data-dir", help="folder holding cifar-10-batches-py (synthetic data when absent)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    outcomes = []
    with tempfile.TemporaryDirectory() as runs:
        commands = list(entry_points(args.data_dir, Path(runs)).items())
        for number in range(args.launches):
            name, command = commands[number % len(commands)]
            outcomes.append({"entry_point": name, **launch(command)})
            clean = "clean" if not outcomes[-1]["returncode"] and not outcomes[-1]["aborted"] else "NOT CLEAN"
            print(f"launch {number + 1}/{args.launches} ({name}): {clean}", file=sys.stderr)
    result = {
        "launches": args.launches,
        "clean": sum(not o["returncode"] and not o["aborted"] for o in outcomes),
        "outcomes": outcomes,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['clean']} of {args.launches} launches clean (load average {load_before[0]:.1f} before, "
        f"{result['load_average_after'][0]:.1f} after)"
    )
    for outcome in outcomes:
        if "tail" in outcome:
            print(f"--- {outcome['entry_point']}: exit {outcome['returncode']}\n{outcome['tail']}")


if __name__ == "__main__":
    main()
