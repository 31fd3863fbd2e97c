"""What Ray costs over the local queue: the same small sweep, both ways, on this machine.

    python bench/cluster_overhead.py --data-dir DIR            # 3 turns each way, medians, a Markdown table
    python bench/cluster_overhead.py --data-dir DIR --json

The sweep is ``sweep --grid norm=bn,gn --grid lr=0.05,0.1`` (4 runs) with short runs (``--subset``, 1 epoch),
timed from the command to its exit, which follows every run to its end: once through the local queue
(``CIFARNET_MAX_RUNS=2``) and once with ``--cluster ray`` on a one-node Ray cluster of 2 CPUs started beforehand
on loopback, the two taking turns ``--reps`` times. The cluster's own start is timed apart: a user starts it once.
The report gives the load average, since other work on the machine weighs on both.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK_RAY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}  # as docs/SWEEPS.md says


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ray_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from ray.scripts.scripts import main; main()", *args]


def start_cluster(env: dict[str, str]) -> tuple[subprocess.Popen, str, float]:
    """A one-node cluster on loopback (``ray start --block``: ended with its process, leaving any other Ray on the
    machine alone, which ``ray stop`` would not); its process, address and the seconds until it answered."""
    port, started = free_port(), time.monotonic()
    head = subprocess.Popen(
        ray_command(
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
        ),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # ended, it signals its process group: not this one's
    while head.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return head, f"127.0.0.1:{port}", time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit(f"ray start failed (exit {head.returncode})")


def sweep_seconds(runs_dir: Path, data_dir: str, subset: int, env: dict[str, str], extra: list[str]) -> float:
    """Wall seconds of one sweep, from the command to its exit (every run ended)."""
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cifarnet",
            "sweep",
            "--grid",
            "norm=bn,gn",
            "--grid",
            "lr=0.05,0.1",
            "--subset",
            str(subset),
            "--epochs",
            "1",
            "--batch-size",
            "100",
            "--eval-subset",
            "100",
            "--no-tta",
            "--runs-dir",
            str(runs_dir),
            "--data-dir",
            data_dir,
            *extra,
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--subset", type=int, default=2000, help="training images per run (default 2000)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    env = {**os.environ, **LOOPBACK_RAY, "PYTHONPATH": str(ROOT), "CIFARNET_MAX_RUNS": "2"}
    head, address, ray_start_s = start_cluster(env)
    work = Path(tempfile.mkdtemp(prefix="cluster-overhead-"))
    times: dict[str, list[float]] = {"local": [], "ray": []}
    try:
        for rep in range(args.reps):
            for way, extra in (("local", []), ("ray", ["--cluster", "ray", "--ray-address", address])):
                times[way].append(sweep_seconds(work / f"{way}-{rep}", args.data_dir, args.subset, env, extra))
    finally:
        head.terminate()
        head.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    local, ray = statistics.median(times["local"]), statistics.median(times["ray"])
    report = {
        "runs": 4,
        "subset": args.subset,
        "reps": args.reps,
        "local_s": times["local"],
        "ray_s": times["ray"],
        "median_local_s": round(local, 1),
        "median_ray_s": round(ray, 1),
        "ray_over_local": round(ray / local, 2),
        "ray_start_s": round(ray_start_s, 1),
        "load_average": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"| way | sweep of 4 runs, median of {args.reps} | each |\n|---|---|---|")
    for way in ("local", "ray"):
        print(f"| {way} | {statistics.median(times[way]):.1f} s | {', '.join(f'{t:.1f}' for t in times[way])} |")
    print(
        f"Ray over local: {ray / local:.2f}x; `ray start` took {ray_start_s:.1f} s; load average "
        f"{report['load_average']:.2f}; {report['date']}"
    )


if __name__ == "__main__":
    main()
