"""Issue 27: sweeps on a real Ray cluster (a head and a second node, separate processes on this machine, bound to
loopback); issue 28: the cluster our docs and tests start listens on loopback only.

The runs land on both nodes and record which as ``node``; their folders are complete and the Compare page reads
them; a queued remote run is cancelled and never starts; a stop reaches a run training on a node; killing the
node a run trains on ends that run ``failed`` with Ray's reason and leaves the other runs alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY_FLAGS, is_loopback, listening_addresses, processes_of, start_cli, wait_for
from streamlit.testing.v1 import AppTest

from cifarnet.runs.folders import read_run, request_stop
from cifarnet.runs.queue import cancel_run
from cifarnet.runs.records import EXPERIMENTS_FOLDER

# A cluster on loopback only: Ray's "no multi-machine cluster" switch keeps every service on 127.0.0.1 (it is
# what binds them there), and no token (the nodes and the driver are this machine's own processes). Ray reads
# the switch when it is imported, so it is set first; the processes the tests start inherit it.
os.environ.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"})
ray_utils = pytest.importorskip(
    "ray.cluster_utils", reason="Ray is the cluster extra: pip install -r requirements-cluster.txt"
)
pytestmark = [pytest.mark.cluster, pytest.mark.slow]  # minutes of training: the slow tier, like the ddp tests


@pytest.fixture(scope="module")
def cluster():
    """A head with one CPU and a second node with one CPU: two runs train at once, one on each."""
    head = ray_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        head.add_node(num_cpus=1)
        head.wait_for_nodes()
        yield head
    finally:
        head.shutdown()


def sweep(cluster, runs_dir: Path, data_dir: Path, name: str, *grid: str, epochs: int = 1) -> subprocess.Popen:
    """``python -m cifarnet sweep --cluster ray`` with the tiny settings, started in the background."""
    return start_cli(
        "sweep",
        "--cluster",
        "ray",
        "--ray-address",
        cluster.address,
        *[arg for spec in grid for arg in ("--grid", spec)],
        *TINY_FLAGS,
        "--epochs",
        str(epochs),
        "--name",
        name,
        "--runs-dir",
        str(runs_dir),
        "--data-dir",
        str(data_dir),
    )


def finish(process: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, out + err


def runs_of(runs_dir: Path, name: str) -> list[str]:
    record = json.loads((runs_dir / EXPERIMENTS_FOLDER / f"{name}.json").read_text())
    return [run_id for ids in record["variants"].values() for run_id in ids]


def node_ids(cluster) -> set[str]:
    return {node.node_id for node in cluster.list_all_nodes()}


def test_a_sweep_trains_on_both_nodes_and_the_compare_page_reads_it(cluster, runs_dir, data_dir, monkeypatch):
    process = sweep(cluster, runs_dir, data_dir, "rs", "norm=bn,gn", "lr=0.05,0.1")
    seen_listening: set = set()
    while process.poll() is None:  # every socket the cluster, its driver and the trainers listen on
        pids = [*processes_of(runs_dir, b"--resume"), *processes_of(runs_dir, b"queue"), *cluster_processes(cluster)]
        seen_listening |= {address for address, _ in listening_addresses(pids)}
        time.sleep(1)
    code, output = finish(process)
    assert code == 0, output
    assert "4 run(s), on the Ray cluster at" in output
    runs = [read_run(runs_dir / run_id) for run_id in runs_of(runs_dir, "rs")]
    assert [info.status for info in runs] == ["finished"] * 4, [info.status_record for info in runs]
    assert {info.status_record["node"] for info in runs} == node_ids(cluster)  # both nodes trained
    for info in runs:
        assert {"model.pt", "results.json", "metrics.jsonl", "predictions.npz"} <= {p.name for p in info.path.iterdir()}
        assert info.final_acc is not None and info.evals
    assert seen_listening and all(map(is_loopback, seen_listening)), seen_listening
    monkeypatch.setenv("CIFARNET_RUNS", str(runs_dir))
    monkeypatch.setenv("CIFARNET_DATA", str(data_dir))
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=180)
    at.query_params["experiment"] = "rs"
    at.run()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(frame for frame in at.dataframe if "best at step" in frame.value.columns)
    assert sorted(table.value["run"]) == sorted(info.run_id for info in runs)


def cluster_processes(cluster) -> list[int]:
    """The pids of the cluster's services (GCS, raylets, agents) and everything they started (its workers): not
    whatever else on this machine may run Ray."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError, IndexError):
            continue
    found = {
        info.process.pid for node in cluster.list_all_nodes() for infos in node.all_processes.values() for info in infos
    }
    while True:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        if not more:
            return sorted(found)
        found |= more


def test_a_killed_node_fails_its_run_a_stop_reaches_a_remote_run_and_a_cancelled_one_never_starts(
    cluster, runs_dir, data_dir
):
    doomed = cluster.list_all_nodes()[-1]  # the second node (the head keeps the cluster alive)
    process = sweep(cluster, runs_dir, data_dir, "kill", "norm=bn,gn,ln", epochs=300)  # long enough to stop
    wait_for(lambda: (runs_dir / EXPERIMENTS_FOLDER / "kill.json").exists(), 60)
    ids = runs_of(runs_dir, "kill")
    cancel_run(ids[2], runs_dir)  # two CPUs: the third waits
    # the run that trains on the second node, once it has recorded where it trains and taken a few steps
    assert wait_for(
        lambda: any(
            read_run(runs_dir / i).status_record.get("node") == doomed.node_id
            and read_run(runs_dir / i).status == "running"
            for i in ids[:2]
        ),
        240,
    )
    victim = next(i for i in ids[:2] if read_run(runs_dir / i).status_record.get("node") == doomed.node_id)
    (survivor,) = set(ids[:2]) - {victim}
    wait_for(lambda: read_run(runs_dir / survivor).status == "running", 120)
    request_stop(survivor, runs_dir)  # through its STOP file, as from any machine that sees the runs folder
    cluster.remove_node(doomed, allow_graceful=False)
    code, output = finish(process)
    assert code == 1, output  # a run failed
    # The sweep ends once its runs read as ended: the victim reads failed as soon as its trainer is gone, and the
    # driver, told later by Ray that the node died, records Ray's reason in its status.
    wait_for(lambda: "Ray" in read_run(runs_dir / victim).status_record.get("error", ""), 120)
    ended = {i: read_run(runs_dir / i) for i in ids}
    assert ended[victim].status == "failed" and "Ray" in ended[victim].status_record["error"], ended[
        victim
    ].status_record
    assert ended[survivor].status == "stopped" and (survivor_path := runs_dir / survivor / "last.pt").exists(), (
        ended[survivor].status_record,
        survivor_path,
    )
    assert ended[ids[2]].status == "cancelled" and "node" not in ended[ids[2]].status_record
    wait_for(lambda: not processes_of(runs_dir, b"--resume"), 30)  # the dead node's trainer died with it
