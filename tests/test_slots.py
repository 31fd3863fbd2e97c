"""Issue 15 items 1-3: the run limit holds across simultaneous starts, the CLI and the dashboard; one trainer per
run; shipped runs are read-only. Real processes throughout: the locks are the kernel's."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, TINY, run_cli, wait_for

from cifarnet import CifarnetError
from cifarnet.config import make_config
from cifarnet.runs.folders import PRETRAINED_DIR, create_run, read_run
from cifarnet.runs.launch import resume_run
from cifarnet.runs.records import read_metrics

LONG = {**TINY, "epochs": 200}  # still training when the test looks, then killed

# Each starter process waits for the same instant, then calls start_run: the dashboard's launch from several tabs.
STARTER = """
import sys, time
from cifarnet.config import make_config
from cifarnet.errors import CifarnetError
from cifarnet.runs.launch import start_run
cfg = make_config({settings!r})
time.sleep(max(0.0, {at!r} - time.time()))
try:
    print("started", start_run(cfg, sys.argv[1], sys.argv[2]))
except CifarnetError as exc:
    print("refused", exc)
"""


def _kill_trainers(runs_dir) -> None:
    for folder in runs_dir.iterdir():
        if folder.name.startswith("."):
            continue
        pid = read_run(folder).status_record.get("pid") or int((folder / "pid").read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_simultaneous_starts_from_tabs_and_the_cli_respect_the_limit(runs_dir, data_dir, monkeypatch):
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "2")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = STARTER.format(settings=LONG, at=time.time() + 25)
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(runs_dir), str(data_dir)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        outputs = [starter.communicate(timeout=120)[0] for starter in starters]
        assert sorted(line.split()[0] for line in outputs) == ["refused"] * 2 + ["started"] * 2, outputs
        assert all("the limit is 2 (CIFARNET_MAX_RUNS)" in line for line in outputs if line.startswith("refused"))
        runs = [p for p in runs_dir.iterdir() if not p.name.startswith(".")]
        assert len(runs) == 2  # a refused start creates nothing
        wait_for(lambda: all(read_run(p).status == "running" for p in runs), timeout=120)
        cli = run_cli(
            "train",
            *[f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if k != "tta"],
            "--runs-dir",
            str(runs_dir),
            "--data-dir",
            str(data_dir),
        )
        assert cli.returncode == 2 and "2 run(s) already training" in cli.stderr and "the limit is 2" in cli.stderr
        assert cli.stderr.count("\n") == 1
        assert len([p for p in runs_dir.iterdir() if not p.name.startswith(".")]) == 2
    finally:
        _kill_trainers(runs_dir)


@pytest.mark.slow
def test_two_resumes_of_one_run_start_one_trainer(runs_dir, data_dir, monkeypatch):
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "4")
    path = create_run(make_config(TINY), runs_dir)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "cifarnet", "train", "--resume", str(path), "--data-dir", str(data_dir), "--quiet"]
    trainers = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [(t.communicate(timeout=600), t.returncode) for t in trainers]
    results = [(code, out, err) for (out, err), code in results]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    assert "already has a trainer; one trainer per run" in refused and refused.count("\n") == 1
    assert read_run(path).status == "finished"
    for kind in ("train", "eval", "final"):
        steps = [m["step"] for m in read_metrics(path / "metrics.jsonl")[0] if m["kind"] == kind]
        assert steps == sorted(set(steps)), f"{kind} steps written twice: {steps}"


def _snapshot(folder) -> dict:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.mark.heavy
def test_shipped_runs_are_read_only(runs_dir):
    shipped = PRETRAINED_DIR / "s9-bn"
    before = _snapshot(shipped)
    result = run_cli("train", "--resume", str(shipped), "--runs-dir", str(runs_dir))
    assert result.returncode == 2 and "s9-bn is a shipped run and read-only" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(CifarnetError, match="is finished; nothing to resume"):
        resume_run("s9-bn", runs_dir)
    assert _snapshot(shipped) == before  # not a byte written, no lock file left
