"""Start, list and stop runs as separate OS processes (the dashboard's launch API).

A run started here is its own process in its own session: it outlives the Streamlit
rerun (and even the Streamlit server) that started it, and reports only through its
run folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cifarnet.config import TrainConfig
from cifarnet.errors import CifarnetError, shown
from cifarnet.runs import LIVE, create_run, list_runs, read_run, resolve_runs_dir, run_path

DEFAULT_MAX_LIVE = 2


def max_live_runs() -> int:
    """Simultaneous runs allowed (``$CIFARNET_MAX_RUNS``, default 2: one per core here)."""
    raw = os.environ.get("CIFARNET_MAX_RUNS", str(DEFAULT_MAX_LIVE))
    try:
        value = int(raw)
    except ValueError:
        raise CifarnetError(f"CIFARNET_MAX_RUNS={shown(raw)} is not a whole number; allowed: 1 or more") from None
    if value < 1:
        raise CifarnetError(f"CIFARNET_MAX_RUNS={shown(raw)} is too small; allowed: 1 or more")
    return value


def live_runs(runs_dir: str | os.PathLike | None = None) -> list[str]:
    return [r.run_id for r in list_runs(runs_dir, include_pretrained=False) if r.status in LIVE]


def spawn(path: Path, data_dir: str | os.PathLike | None = None) -> int:
    """Run ``python -m cifarnet train --resume PATH`` detached; returns its pid."""
    command = [sys.executable, "-m", "cifarnet", "train", "--resume", str(path), "--quiet"]
    if data_dir:
        command += ["--data-dir", str(data_dir)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent.parent),
                                                                       os.environ.get("PYTHONPATH")]))}
    with open(path / "log.txt", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=env)
    (path / "pid").write_text(str(process.pid))
    return process.pid


def start_run(cfg: TrainConfig, runs_dir: str | os.PathLike | None = None,
              data_dir: str | os.PathLike | None = None) -> str:
    """Create the run folder and start its trainer; returns the run id.

    Refused (nothing created) when the limit of simultaneous runs is reached.
    """
    live, limit = live_runs(runs_dir), max_live_runs()
    if len(live) >= limit:
        raise CifarnetError(f"{len(live)} run(s) already training ({', '.join(live)}); the limit is {limit} "
                            "(CIFARNET_MAX_RUNS). Stop one or wait for it to finish.")
    path = create_run(cfg, resolve_runs_dir(runs_dir))
    spawn(path, data_dir)
    return path.name


def resume_run(run_id: str, runs_dir: str | os.PathLike | None = None,
               data_dir: str | os.PathLike | None = None) -> str:
    """Continue a stopped or failed run from its ``last.pt`` in a new process."""
    path = run_path(run_id, runs_dir)
    info = read_run(path)
    if info.status in LIVE:
        raise CifarnetError(f"run {shown(run_id)} is already running")
    if info.pretrained or info.status == "finished":
        raise CifarnetError(f"run {shown(run_id)} is {info.status if not info.pretrained else 'shipped'}; "
                            "nothing to resume")
    (path / "STOP").unlink(missing_ok=True)
    spawn(path, data_dir)
    return run_id
