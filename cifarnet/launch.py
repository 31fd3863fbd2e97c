"""Start and resume runs as separate OS processes (the dashboard's launch API; listing and stopping are in
:mod:`cifarnet.runs`).

A run started here is its own process in its own session: it outlives the Streamlit
rerun (and even the Streamlit server) that started it, and reports only through its
run folder. The launcher claims the run's slot and lock first (:mod:`cifarnet.slots`), so a
start over the limit or of a run that already trains is refused here, at once, and the
trainer inherits both locks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cifarnet.config import TrainConfig
from cifarnet.errors import CifarnetError, shown
from cifarnet.runs import LIVE, read_run, run_path
from cifarnet.slots import Claim, claim, claim_new_run


def trainer_env() -> dict[str, str]:
    """The environment of a process started from here: this one's, with this package importable."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent.parent),
                                                                        os.environ.get("PYTHONPATH")]))}


def spawn(path: Path, held: Claim, data_dir: str | os.PathLike | None = None) -> subprocess.Popen:
    """Run ``python -m cifarnet train --resume PATH`` detached, handing it the claim; returns its process.

    This process's copies of the claim's locks are closed: from now on the trainer alone holds them.
    """
    command = [sys.executable, "-m", "cifarnet", "train", "--resume", str(path), "--quiet"]
    if data_dir:
        command += ["--data-dir", str(data_dir)]
    try:
        with open(path / "log.txt", "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, env={**trainer_env(), **held.env()},
                                       pass_fds=(held.slot, held.run))
    finally:
        held.release()
    (path / "pid").write_text(str(process.pid))
    return process


def start_run(cfg: TrainConfig, runs_dir: str | os.PathLike | None = None,
              data_dir: str | os.PathLike | None = None) -> str:
    """Create the run folder and start its trainer; returns the run id.

    Refused (nothing created) when every slot of the run limit is taken.
    """
    path, held = claim_new_run(cfg, runs_dir)
    spawn(path, held, data_dir)
    return path.name


def resume_run(run_id: str, runs_dir: str | os.PathLike | None = None,
               data_dir: str | os.PathLike | None = None) -> str:
    """Continue a stopped or failed run from its ``last.pt`` in a new process."""
    path = run_path(run_id, runs_dir)
    info = read_run(path)
    if info.status in LIVE:
        raise CifarnetError(f"run {shown(run_id)} is already running")
    if info.status in ("finished", "queued", "cancelled"):
        raise CifarnetError(f"run {shown(run_id)} is {info.status}; nothing to resume")
    held = claim(path)  # refuses a shipped run, a run with a trainer, and a start over the limit
    (path / "STOP").unlink(missing_ok=True)
    spawn(path, held, data_dir)
    return run_id
