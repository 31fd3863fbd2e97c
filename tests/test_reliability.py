"""Issue 5 (core side): damaged run folders, paths outside the runs folder, trainer failures, concurrent runs."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest
import torch
from conftest import TINY, copy_run, run_cli, wait_for

from cifarnet import CifarnetError
from cifarnet.config import make_config
from cifarnet.runs.folders import create_run, delete_run, list_runs, read_run, request_stop, run_path
from cifarnet.runs.launch import start_run
from cifarnet.runs.records import MetricsLog, load_run_config, write_json
from cifarnet.training.engine import train_run


@pytest.mark.slow
def test_damaged_metrics_line_and_status_are_reported_not_fatal(runs_dir, data_dir):
    path = create_run(make_config(TINY), runs_dir)
    train_run(path, str(data_dir))
    lines = (path / "metrics.jsonl").read_text().splitlines()
    lines.insert(1, '{"kind": "train", "step": 1, "trai')
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (path / "status.json").write_text("{ not json")
    info = read_run(path)
    assert len(info.metrics) == len(lines) - 1
    assert "metrics.jsonl has 1 damaged line(s): 2" in info.damage
    assert "status.json is damaged (JSONDecodeError)" in info.damage
    assert info.status == "failed" and info.final_acc is not None  # results still shown
    listing = run_cli("runs", "--runs-dir", str(runs_dir))
    assert path.name in listing.stdout and "! metrics.jsonl has 1 damaged line(s): 2" in listing.stdout


@pytest.mark.parametrize("bad_id", ["../x", "..", "a/b", "/etc", "", "s9-bn/../../etc"])
def test_nothing_outside_the_runs_folder_can_be_read_or_deleted(runs_dir, bad_id):
    runs_dir.mkdir(parents=True, exist_ok=True)
    with pytest.raises(CifarnetError, match="run id .* is not valid"):
        run_path(bad_id, runs_dir)
    with pytest.raises(CifarnetError):
        delete_run(bad_id, runs_dir)


def test_shipped_runs_cannot_be_deleted_or_stopped(runs_dir):
    runs_dir.mkdir(parents=True, exist_ok=True)
    with pytest.raises(CifarnetError, match="shipped pretrained run and cannot be deleted"):
        delete_run("s9-bn", runs_dir)
    with pytest.raises(CifarnetError, match="shipped pretrained run; it is not running"):
        request_stop("s9-bn", runs_dir)


@pytest.mark.heavy
def test_delete_removes_a_finished_user_run(tiny_run, runs_dir):
    path = copy_run(tiny_run, runs_dir, "mine")
    assert read_run(path).status == "finished"
    delete_run("mine", runs_dir)
    assert not path.exists()


def test_disk_full_during_training_ends_failed_with_reason(runs_dir, data_dir, monkeypatch):
    def full(self, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(MetricsLog, "append", full)
    path = create_run(make_config(TINY), runs_dir)
    assert train_run(path, str(data_dir)) == "failed"
    assert read_run(path).status_record["error"] == f"cannot write {path}/metrics.jsonl: No space left on device"


def test_out_of_memory_ends_failed_with_advice(runs_dir, data_dir, monkeypatch):
    import cifarnet.training.engine as train_mod

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_mod, "augment_batch", oom)
    path = create_run(make_config(TINY), runs_dir)
    assert train_run(path, str(data_dir)) == "failed"
    assert (
        "out of memory" in read_run(path).status_record["error"]
        and "smaller batch_size" in read_run(path).status_record["error"]
    )


def test_missing_data_ends_failed_with_the_data_message(runs_dir, tmp_path):
    path = create_run(make_config(TINY), runs_dir)
    assert train_run(path, str(tmp_path / "no-such-folder")) == "failed"
    assert "does not exist" in read_run(path).status_record["error"]


@pytest.mark.heavy
def test_runs_folder_that_is_a_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("CIFARNET_RUNS", str(tmp_path / "file"))
    result = run_cli("runs")
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr and "Traceback" not in result.stderr


def test_bad_max_runs_environment_variable(runs_dir, monkeypatch):
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "lots")
    with pytest.raises(CifarnetError, match="CIFARNET_MAX_RUNS='lots' is not a whole number"):
        start_run(make_config(TINY), runs_dir)


@pytest.mark.slow
def test_two_runs_at_once_stay_separate_and_both_finish(runs_dir, data_dir):
    first = start_run(make_config({**TINY, "seed": 1}), runs_dir, data_dir)
    second = start_run(make_config({**TINY, "seed": 2}), runs_dir, data_dir)
    assert first != second
    wait_for(lambda: all(read_run(runs_dir / r).status == "finished" for r in (first, second)), timeout=300)
    configs = [json.loads((runs_dir / r / "config.json").read_text())["seed"] for r in (first, second)]
    assert configs == [1, 2]
    assert {r.run_id for r in list_runs(runs_dir, include_pretrained=False)} == {first, second}


def test_name_taken_is_refused(runs_dir):
    create_run(make_config({**TINY, "name": "same"}), runs_dir)
    with pytest.raises(CifarnetError, match="a run named 'same' already exists"):
        create_run(make_config({**TINY, "name": "same"}), runs_dir)


def test_status_written_atomically(tmp_path):
    write_json(tmp_path / "status.json", {"status": "running"})
    assert json.loads((tmp_path / "status.json").read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temp file left behind


@pytest.mark.slow
def test_a_run_recorded_before_weight_standardisation_resumes_with_plain_convs(runs_dir, data_dir):
    """An old run's config.json (format 1: no "format") has no "ws", "precision" or "compile" and says dropout -1:
    resuming it must rebuild the plain model it trained, not today's default (weight-standardised for LN), or its
    checkpoint would be misread; and train it as it was trained (fp32, the architecture's dropout)."""
    path = create_run(
        make_config({"norm": "ln", "subset": 10, "epochs": 1, "batch_size": 50, "eval_subset": 5, "name": "old"}),
        runs_dir,
    )
    saved = json.loads((path / "config.json").read_text())
    assert (saved.pop("ws"), saved.pop("format"), saved.pop("precision"), saved.pop("compile")) == (
        "auto",
        2,
        "auto",
        False,
    )
    (path / "config.json").write_text(json.dumps({**saved, "dropout": -1.0}))
    cfg = load_run_config(path)
    assert (cfg.model_args["ws"], cfg.dropout, cfg.precision) == ("off", None, "fp32")
    assert train_run(path, str(data_dir)) == "finished"
    assert torch.load(path / "model.pt", weights_only=True)["model"]["ws"] == "off"
    assert read_run(path).results["precision"] == "fp32"


def test_ended_runs_are_read_once_until_their_files_change(runs_dir):
    """The Runs page lists every run every few seconds while one trains: ended runs come from memory."""
    ended = create_run(make_config({**TINY, "name": "ended"}), runs_dir)
    write_json(ended / "status.json", {"status": "finished", "pid": None})
    record = {"kind": "eval", "step": 1, "epoch": 1.0, "time": 1.0, "test_acc": 0.25}
    (ended / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    live = create_run(make_config({**TINY, "name": "live"}), runs_dir)
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "cifarnet"])  # a live "trainer"
    try:
        write_json(live / "status.json", {"status": "running", "pid": trainer.pid})
        first = {info.run_id: info for info in list_runs(runs_dir)}
        second = {info.run_id: info for info in list_runs(runs_dir)}
        assert second["ended"] is first["ended"] and second["s9-bn"] is first["s9-bn"]  # not parsed again
        assert second["live"] is not first["live"] and second["live"].status == "running"
        with open(ended / "metrics.jsonl", "a") as metrics:  # e.g. a run folder edited by hand
            metrics.write(json.dumps({**record, "step": 2, "test_acc": 0.5}) + "\n")
        third = {info.run_id: info for info in list_runs(runs_dir)}
        assert third["ended"] is not first["ended"] and third["ended"].final_acc == 0.5
    finally:
        trainer.kill()
        trainer.wait()
    assert {info.run_id: info for info in list_runs(runs_dir)}["live"].status == "failed"  # its trainer died
