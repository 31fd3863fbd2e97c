"""Issue 5 (core side): damaged run folders, paths outside the runs folder, trainer failures, concurrent runs."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from cifarnet import CifarnetError
from cifarnet.config import make_config
from cifarnet.launch import start_run
from cifarnet.runs import (MetricsLog, create_run, delete_run, list_runs, load_run_config, read_run, request_stop,
                           run_path, write_json)
from cifarnet.train import train_run
from conftest import run_cli, wait_for

TINY = {"subset": 20, "epochs": 1, "batch_size": 50, "lr": 0.05, "eval_subset": 10, "tta": False}


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


def test_delete_removes_a_finished_user_run(runs_dir, data_dir):
    path = create_run(make_config({**TINY, "name": "mine"}), runs_dir)
    train_run(path, str(data_dir))
    delete_run("mine", runs_dir)
    assert not path.exists()


def test_disk_full_during_training_ends_failed_with_reason(runs_dir, data_dir, monkeypatch):
    def full(self, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(MetricsLog, "append", full)
    path = create_run(make_config(TINY), runs_dir)
    assert train_run(path, str(data_dir)) == "failed"
    error = read_run(path).status_record["error"]
    assert error.startswith("cannot write to") and "No space left on device" in error


def test_out_of_memory_ends_failed_with_advice(runs_dir, data_dir, monkeypatch):
    import cifarnet.train as train_mod

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_mod, "augment_batch", oom)
    path = create_run(make_config(TINY), runs_dir)
    assert train_run(path, str(data_dir)) == "failed"
    assert "out of memory" in read_run(path).status_record["error"] and "smaller batch_size" in \
        read_run(path).status_record["error"]


def test_missing_data_ends_failed_with_the_data_message(runs_dir, tmp_path):
    path = create_run(make_config(TINY), runs_dir)
    assert train_run(path, str(tmp_path / "no-such-folder")) == "failed"
    assert "does not exist" in read_run(path).status_record["error"]


def test_runs_folder_that_is_a_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("CIFARNET_RUNS", str(tmp_path / "file"))
    result = run_cli("runs")
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr and "Traceback" not in result.stderr


def test_bad_max_runs_environment_variable(runs_dir, monkeypatch):
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "lots")
    with pytest.raises(CifarnetError, match="CIFARNET_MAX_RUNS='lots' is not a whole number"):
        start_run(make_config(TINY), runs_dir)


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


def test_a_run_recorded_before_weight_standardisation_resumes_with_plain_convs(runs_dir, data_dir):
    """An old run's config.json has no "ws": resuming it must rebuild the plain model it trained,
    not today's default (weight-standardised for LN), or its checkpoint would be misread."""
    path = create_run(make_config({"norm": "ln", "subset": 10, "epochs": 1, "batch_size": 50, "eval_subset": 5,
                                   "name": "old"}), runs_dir)
    saved = json.loads((path / "config.json").read_text())
    assert saved.pop("ws") == "auto"
    (path / "config.json").write_text(json.dumps(saved))
    assert load_run_config(path).model_args["ws"] == "off"
    assert train_run(path, str(data_dir)) == "finished"
    assert torch.load(path / "model.pt", weights_only=True)["model"]["ws"] == "off"
