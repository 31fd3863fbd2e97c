"""Issue 27, the rules around cluster runs that need no cluster: a bad or unreachable address is refused before
anything exists; a run training on another machine is judged by what it last wrote (its pid means nothing here)
and is stopped by the identity it recorded; a task lost with its node ends its run ``failed`` unless a trainer
still holds the run; a trainer on a cluster node holds its run's lock without a slot of this machine's limit."""

from __future__ import annotations

import os
import time

import pytest
from conftest import TINY, TINY_FLAGS

from cifarnet import CifarnetError
from cifarnet.cli import main
from cifarnet.config import make_config
from cifarnet.runs.cluster import ADDRESS_ENV, cluster_address, record_lost
from cifarnet.runs.folders import create_run, read_run, request_stop
from cifarnet.runs.records import LOCK_FILE, write_json
from cifarnet.runs.slots import Claim, inherited, try_lock


@pytest.mark.parametrize(
    "address, message",
    [
        (None, "needs the cluster's address"),
        ("headnode", "is not HOST:PORT"),
        ("headnode:99999", "is not HOST:PORT"),
        ("head node:6379", "is not HOST:PORT"),
    ],
)
def test_a_bad_address_is_refused_in_one_line(address, message, monkeypatch):
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    with pytest.raises(CifarnetError, match=message):
        cluster_address(address)


def test_the_address_comes_from_ray_address_when_not_given(monkeypatch):
    monkeypatch.setenv(ADDRESS_ENV, "10.0.0.5:6379")
    assert cluster_address(None) == "10.0.0.5:6379" and cluster_address("h:1") == "h:1"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cluster", "ray", "--ray-address", "127.0.0.1:1"], "no Ray cluster answers at '127.0.0.1:1'"),
        (["--ray-address", "127.0.0.1:1"], "add --cluster ray"),
    ],
)
def test_a_sweep_for_an_unreachable_cluster_creates_nothing(flags, message, runs_dir, data_dir, capsys):
    code = main(
        ["sweep", "--grid", "norm=bn,gn", *TINY_FLAGS, *flags, "--runs-dir", str(runs_dir), "--data-dir", str(data_dir)]
    )
    assert code != 0 and message in capsys.readouterr().err
    assert not runs_dir.exists() or not [p for p in runs_dir.rglob("*") if p.is_file() and p.suffix == ".json"]


def remote_run(runs_dir, updated: float, trainer: str | None = "4242 123456") -> str:
    """A run whose status says it trains on another machine."""
    path = create_run(make_config({**TINY, "name": "far"}), runs_dir)
    write_json(
        path / "status.json",
        {
            "status": "running",
            "pid": 4242,
            "updated": updated,
            "host": "elsewhere",
            "node": "abc123",
            **({"trainer": trainer} if trainer else {}),
        },
    )
    return path.name


def test_a_run_on_another_machine_is_live_while_it_reports_and_stopped_by_its_own_identity(runs_dir):
    run_id = remote_run(runs_dir, time.time())
    assert read_run(runs_dir / run_id).status == "running"  # pid 4242 is not alive here, and does not matter
    request_stop(run_id, runs_dir)
    assert (runs_dir / run_id / "STOP").read_text() == "4242 123456"


def test_a_run_on_another_machine_that_went_silent_reads_failed(runs_dir):
    info = read_run(runs_dir / remote_run(runs_dir, time.time() - 3600))
    assert info.status == "failed" and "its trainer on elsewhere stopped reporting" in info.status_record["error"]


def test_a_remote_trainer_that_has_not_said_who_it_is_cannot_be_stopped_yet(runs_dir):
    run_id = remote_run(runs_dir, time.time(), trainer=None)
    with pytest.raises(CifarnetError, match="is starting on 'elsewhere'; stop it again in a moment"):
        request_stop(run_id, runs_dir)
    assert not (runs_dir / run_id / "STOP").exists()


def test_a_lost_task_fails_its_run_unless_a_trainer_still_holds_it(runs_dir):
    path = create_run(make_config({**TINY, "name": "lost"}), runs_dir)
    write_json(path / "status.json", {"status": "running", "pid": None, "updated": time.time()})
    held = try_lock(path / LOCK_FILE)  # a trainer lives on: its own record will say how it ended
    record_lost(path, "its Ray task ended before its trainer did (NodeDiedError: x)")
    assert (read_run(path).status_record.get("error") or "").find("Ray task") < 0
    os.close(held)
    record_lost(path, "its Ray task ended before its trainer did (NodeDiedError: x)")
    info = read_run(path)
    assert info.status == "failed" and info.status_record["error"].startswith(
        "its Ray task ended before its trainer did (NodeDiedError: x)"
    )
    assert "resume it" in info.status_record["error"]


def test_a_trainer_on_a_node_holds_its_run_without_a_slot(runs_dir, monkeypatch):
    path = create_run(make_config({**TINY, "name": "slotless"}), runs_dir)
    lock = try_lock(path / LOCK_FILE)
    claim = Claim(None, lock)
    assert claim.fds == (lock,)
    monkeypatch.setenv(*next(iter(claim.env().items())))
    assert inherited(path) == claim
    os.close(lock)
