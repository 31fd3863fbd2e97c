"""Trainer start-up: launch → ``running`` → first metrics record, against the bare interpreter's start-up.

    python bench/trainer_start.py [--reps 5] [--data-dir DIR] [--json]

Each repetition starts a real trainer the way the dashboard does (``cifarnet.runs.launch.spawn`` on a new run folder
with the dashboard's short-run settings, 20 epochs so it is still training when the first record appears) and
polls its folder every 10 ms: the time to its ``running`` status (data loaded, model and optimizer built) and to
its first ``metrics.jsonl`` record (the first point of the live curves). Interleaved with it, ``python -c
"import torch"`` times the interpreter's own start-up, which no change to cifarnet can shorten; the difference is
what starting a trainer costs beyond it. Medians are reported; the run is stopped and waited for each time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifarnet.runs.folders import create_run, request_stop
from cifarnet.runs.launch import spawn
from cifarnet.runs.records import LOG_FILE, METRICS_FILE, recorded_status
from cifarnet.runs.slots import claim
from cifarnet.runs.status import Status
from cifarnet.ui.query import DASHBOARD_DEFAULTS

POLL_S = 0.01


def interpreter_s() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - started


def trainer_s(runs: Path, data_dir: Path | None, timeout: float = 300) -> dict:
    """Seconds from spawn to the ``running`` status and to the first metrics record of one real trainer."""
    path = create_run(dataclasses.replace(DASHBOARD_DEFAULTS, epochs=20), runs)
    started = time.perf_counter()
    pid = spawn(path, claim(path), data_dir).pid
    marks: dict[str, float] = {}
    try:
        while "first_record_s" not in marks:
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"no metrics record after {timeout} s; see {path / LOG_FILE}")
            if recorded_status(path) == Status.RUNNING:
                marks.setdefault("running_s", time.perf_counter() - started)
            metrics = path / METRICS_FILE
            if metrics.is_file() and metrics.stat().st_size:
                marks["first_record_s"] = time.perf_counter() - started
                marks.setdefault("running_s", marks["first_record_s"])
            time.sleep(POLL_S)
    finally:
        request_stop(path.name, runs)  # the dashboard's Stop: a request addressed to this trainer
        _wait_exit(pid)
    return marks


def _wait_exit(pid: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and Path(f"/proc/{pid}").exists():
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                return
        except OSError:
            return
        time.sleep(0.05)


def measure(reps: int, data_dir: Path | None) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        trainer_s(Path(tmp) / "runs", data_dir)  # untimed: builds the decoded data copy once, warms the page cache
        for _ in range(reps):
            row = {"interpreter_s": interpreter_s(), **trainer_s(Path(tmp) / "runs", data_dir)}
            row["beyond_interpreter_s"] = row["first_record_s"] - row["interpreter_s"]
            rows.append(row)
            print(json.dumps({k: round(v, 3) for k, v in row.items()}), file=sys.stderr, flush=True)
    return {"reps": reps, **{key: round(statistics.median(r[key] for r in rows), 2) for key in rows[0]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.reps, args.data_dir)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"median of {result['reps']}: python -c 'import torch' {result['interpreter_s']} s; trainer: running after "
        f"{result['running_s']} s, first record after {result['first_record_s']} s "
        f"({result['beyond_interpreter_s']} s beyond the interpreter's start-up)"
    )


if __name__ == "__main__":
    main()
