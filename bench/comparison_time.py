"""Wall time of a whole comparison, and each run's speed while it shares the CPU with the others.

    python bench/comparison_time.py --data-dir DIR [--reps 1] [--json] [-- COMPARE FLAGS]

Each repetition runs ``python -m cifarnet compare`` (default: ``--recipe short``, BN, LN and GN under the
default run limit, as a newcomer's first comparison) into a new runs folder and times it from the command to its
exit, when every run has ended. Per run it reports the test accuracy and, from its train records, the median
img/s and the thread counts it trained on: while two trainers share the CPU each trains on its share
(:mod:`cifarnet.training.cpu_share`), so ``-- --threads N`` measures the same comparison with every trainer on N threads
whatever else runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifarnet.runs.folders import list_runs
from cifarnet.runs.records import METRICS_FILE, read_metrics, read_results

DEFAULT_FLAGS = ["--recipe", "short"]


def comparison(flags: list[str], data_dir: str | None) -> dict:
    """One comparison, timed, in a runs folder of its own; its runs' accuracy, speed and threads."""
    with tempfile.TemporaryDirectory() as runs:
        command = [
            sys.executable,
            "-m",
            "cifarnet",
            "compare",
            *flags,
            "--runs-dir",
            runs,
            *(["--data-dir", data_dir] if data_dir else []),
        ]
        started = time.perf_counter()
        subprocess.run(
            command,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parent.parent,
        )
        wall = time.perf_counter() - started
        rows = []
        for run in list_runs(Path(runs), include_pretrained=False):
            train = [r for r in read_metrics(run.path / METRICS_FILE)[0] if r["kind"] == "train"]
            results = read_results(run.path)[0] or {}
            rows.append(
                {
                    "run": run.run_id,
                    "status": run.status,
                    "test_acc": results.get("test_acc"),
                    "median_img_s": statistics.median(r["img_s"] for r in train) if train else None,
                    "threads": sorted({r["threads"] for r in train if "threads" in r}),
                }
            )
    return {"wall_s": wall, "runs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("flags", nargs="*", help="compare's own flags, after --")
    args = parser.parse_args()
    flags = args.flags or DEFAULT_FLAGS
    results = [comparison(flags, args.data_dir) for _ in range(args.reps)]
    if args.json:
        print(json.dumps({"flags": flags, "results": results}, indent=1))
        return
    print(
        f"compare {' '.join(flags)}: median wall {statistics.median(r['wall_s'] for r in results):.0f} s "
        f"over {len(results)}"
    )
    for result in results:
        print(f"  {result['wall_s']:.0f} s")
        for row in result["runs"]:
            acc = "--" if row["test_acc"] is None else f"{100 * row['test_acc']:.2f} %"
            print(
                f"    {row['run']}: {row['status']}, {acc}, {row['median_img_s']:.0f} img/s, threads {row['threads']}"
            )


if __name__ == "__main__":
    main()
