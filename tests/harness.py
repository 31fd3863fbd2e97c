"""Start the real dashboard server in a subprocess (for browser tests and latency benchmarks).

Both need the same thing: ``streamlit run dashboard.py`` on a free port with its own
runs folder, waited on until its health endpoint answers, and stopped afterwards
without leaving a trainer behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from cifarnet.runs.folders import request_stop
from cifarnet.runs.monitor import live_run_ids
from cifarnet.runs.queue import cancel_run, queued_runs

ROOT = Path(__file__).resolve().parents[1]
# what this machine's Debian Chromium needs to run headless in a container
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def dashboard_server(
    runs_dir: Path,
    data_dir: Path | None,
    log_path: Path,
    timeout: float = 60,
    options: Sequence[str] = (),
    env_extra: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Yield the URL of a running dashboard; on exit stop its live runs (if any) and the server.

    ``options`` go to ``streamlit run`` after ours (e.g. ``--server.address 0.0.0.0``), ``env_extra`` into its
    environment. The URL is always the loopback one: a check never sends traffic to another address.
    """
    port = free_port()
    env = {**os.environ, "CIFARNET_RUNS": str(runs_dir), "PYTHONPATH": str(ROOT), **(env_extra or {})}
    if data_dir is not None:
        env["CIFARNET_DATA"] = str(data_dir)
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "dashboard.py",
                "--server.headless",
                "true",
                "--server.port",
                str(port),
                "--browser.gatherUsageStats",
                "false",
                *options,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_healthy(url, process, timeout, log_path)
            yield url
        finally:
            for waiting in queued_runs(runs_dir):  # nor a queued run that would start after the server is gone
                cancel_run(waiting.name, runs_dir)
            for live in live_run_ids(runs_dir):  # a failed check must not leave a trainer running
                request_stop(live, runs_dir)
            process.terminate()
            process.wait(timeout=20)


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float, log_path: Path) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            return
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the dashboard did not start; its log:\n{log_path.read_text()[-2000:]}") from None
            time.sleep(0.3)
