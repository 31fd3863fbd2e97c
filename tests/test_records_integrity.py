"""Issue 15, items 4, 5, 6 and 9: records that stay true when the disk fills, a trainer is killed and resumed, a
request comes too late or too early, or a record file holds valid JSON of the wrong kind."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    CHROMIUM,
    ROOT,
    TINY,
    TINY_QUIET_FLAGS,
    copy_run,
    fake_finished_run,
    run_cli,
    shot,
    texts,
    wait_for,
)

from cifarnet import CifarnetError
from cifarnet.analysis.curves import curves_frame, runs_table
from cifarnet.config import make_config
from cifarnet.data.cifar10 import FOLDER, load_cifar10
from cifarnet.errors import WriteError
from cifarnet.runs.folders import create_run, list_runs, read_run, request_stop
from cifarnet.runs.launch import resume_run, start_run
from cifarnet.runs.records import cut_metrics, read_metrics, read_predictions, write_json
from cifarnet.training.checkpoint import read_checkpoint
from cifarnet.training.engine import train_run
from harness import dashboard_server

# Item 4: a full disk or an unwritable folder.


def test_a_write_that_fails_names_the_file_removes_its_temp_file_and_keeps_the_old_record(tmp_path, monkeypatch):
    write_json(tmp_path / "status.json", {"status": "running"})

    def full(source, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(WriteError, match=rf"^cannot write {tmp_path}/status.json: No space left on device$"):
        write_json(tmp_path / "status.json", {"status": "failed"})
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temp file keeps the disk full
    assert json.loads((tmp_path / "status.json").read_text()) == {"status": "running"}


def test_a_run_whose_records_cannot_be_replaced_still_records_why_it_failed(runs_dir, data_dir, monkeypatch):
    """No atomic replace works (a full disk has no room for a second copy): the ending is written in place."""
    path = create_run(make_config(TINY), runs_dir)
    monkeypatch.setattr(os, "replace", lambda *_: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    assert train_run(path, str(data_dir)) == "failed"
    info = read_run(path)
    assert info.status == "failed" and not info.damage
    assert info.status_record["error"] == f"cannot write {path}/status.json: No space left"
    assert not list(path.glob(".*.tmp"))


def _file_size_limit(limit: int):
    """For a child process: files larger than ``limit`` bytes cannot be written (EFBIG, "File too large"). A real
    write failure from the kernel that holds for root too, unlike a read-only folder."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_a_trainer_that_cannot_write_says_why_on_the_terminal_and_in_its_status(runs_dir, data_dir):
    load_cifar10(data_dir)  # the decoded copy exists before the child runs under the limit
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cifarnet",
            "train",
            *TINY_QUIET_FLAGS,
            "--runs-dir",
            str(runs_dir),
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=_file_size_limit(100_000),
    )
    (path,) = (p for p in runs_dir.iterdir() if not p.name.startswith("."))  # hidden: the run-limit slots
    reason = f"cannot write {path}/best.pt: File too large"  # the first checkpoint is larger than the limit
    assert done.returncode == 1 and f"{path.name}: failed" in done.stdout and reason in done.stdout, done.stderr
    info = read_run(path)
    assert info.status == "failed" and info.status_record["error"] == reason
    assert not [p.name for p in path.iterdir() if p.name.endswith(".tmp")]
    assert not info.damage and info.metrics and info.config["subset"] == 20  # what was recorded stays readable


# Item 5: a kill and a resume log every step once.


@pytest.mark.slow
def test_a_killed_and_resumed_run_logs_each_step_once(runs_dir, data_dir):
    run_id = start_run(make_config({**TINY, "epochs": 4}), runs_dir, data_dir)  # 4 steps an epoch, each logged
    path = runs_dir / run_id

    def logged_past_checkpoint() -> bool:
        if not (path / "last.pt").is_file():
            return False
        saved = int(read_checkpoint(path / "last.pt")["step"])
        return max(m["step"] for m in read_run(path).metrics) > saved

    wait_for(logged_past_checkpoint, timeout=240, every=0.05)
    os.kill(read_run(path).status_record["pid"], signal.SIGKILL)
    wait_for(lambda: read_run(path).status == "failed", timeout=30)
    resume_run(run_id, runs_dir, data_dir)
    wait_for(lambda: read_run(path).status == "finished", timeout=300)
    info = read_run(path)
    for kind in ("train", "eval", "final"):
        steps = [m["step"] for m in info.metrics if m["kind"] == kind]
        assert steps == sorted(set(steps)), f"{kind} steps logged twice or out of order: {steps}"
    assert [m["step"] for m in info.metrics if m["kind"] == "train"] == list(range(1, 17))
    curves = curves_frame([info], ("train_loss", "test_acc"))
    assert not curves.duplicated(["metric", "step"]).any()  # no doubled segment in a chart


def test_the_log_is_cut_before_records_past_the_checkpoint_a_final_record_and_a_half_written_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    records = [{"kind": "train", "step": s} for s in (1, 2, 3, 4)] + [{"kind": "final", "step": 4}]
    text = "".join(json.dumps(r) + "\n" for r in records)
    first, rest = text.split("\n", 1)
    log.write_text(f"{first}\n{{damaged\n{rest}")
    cut_metrics(log, 2)
    assert [r["step"] for r in read_metrics(log)[0]] == [1, 2] and read_metrics(log)[1] == [2]
    log.write_text(text + '{"kind": "train", "st')
    cut_metrics(log, 4)
    assert log.read_text() == text.rsplit('{"kind": "final"', 1)[0]


# Item 6: refusals that come before any work, and requests that cannot outlive their trainer.


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.heavy
def test_cuda_without_cuda_is_refused_before_a_run_folder_exists(runs_dir):
    done = run_cli("train", "--device", "cuda", "--runs-dir", str(runs_dir))
    assert done.returncode == 2 and "device='cuda' was requested but no CUDA GPU is available" in done.stderr
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


@pytest.mark.heavy
def test_an_incomplete_data_set_is_refused_before_a_run_folder_exists(runs_dir, data_dir, tmp_path):
    folder = tmp_path / "data" / FOLDER
    folder.mkdir(parents=True)
    for source in (data_dir / FOLDER).iterdir():
        if source.name != "test_batch":
            (folder / source.name).symlink_to(source.resolve())
    done = run_cli("train", *TINY_QUIET_FLAGS, "--runs-dir", str(runs_dir), "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 2 and "incomplete: missing test_batch" in done.stderr
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


@pytest.mark.slow
def test_stop_of_an_ended_run_is_refused_and_a_stale_stop_does_not_end_the_next_trainer(runs_dir, data_dir):
    path = create_run(make_config({**TINY, "epochs": 2}), runs_dir)  # never started: its trainer is not alive
    with pytest.raises(CifarnetError, match=rf"run '{path.name}' is not running \(it is failed\); nothing to stop"):
        request_stop(path.name, runs_dir)
    assert not (path / "STOP").exists()
    (path / "STOP").write_text("1")  # a request for an earlier trainer of the run, which died before it stopped
    assert train_run(path, str(data_dir)) == "finished"
    assert read_run(path).status_record["progress"]["step"] == 8 and not (path / "STOP").exists()


@pytest.mark.heavy
def test_resuming_a_finished_run_is_refused_and_adds_no_second_final_record(tiny_run, runs_dir, data_dir):
    path = copy_run(tiny_run, runs_dir)
    assert read_run(path).status == "finished"
    before = (path / "metrics.jsonl").read_text()
    done = run_cli("train", "--resume", str(path), "--data-dir", str(data_dir))
    assert done.returncode == 2 and f"run '{path.name}' has finished; nothing to resume" in done.stderr
    assert (path / "metrics.jsonl").read_text() == before and read_run(path).status == "finished"


# Item 9: valid JSON of the wrong kind is damage, reported for its run alone.


def damaged_runs(runs_dir: Path, labels: np.ndarray) -> dict[str, str]:
    """Finished runs, each with one kind of damage a page once crashed on; returns name -> the damage listed."""

    damage = {}
    for name, change in {
        "created-nan": lambda p: _edit(p / "config.json", created=float("nan")),
        "created-huge": lambda p: _edit(p / "config.json", created=1e20),
        "lr-text": lambda p: _edit(p / "config.json", lr="fast"),
        "status-strings": lambda p: _edit(p / "status.json", pid="me", progress={"step": "many", "total_steps": 1e999}),
        "results-wrong": lambda p: _edit(
            p / "results.json", test_acc="high", confusion=[[1, 2], ["x"]], classes=[1, 2, 3]
        ),
        "metrics-types": lambda p: (p / "metrics.jsonl").write_text(
            '{"kind": "eval", "step": "one", "test_acc": 0.5}\n{"kind": "train", "step": 1, "train_loss": Infinity}\n'
        ),
    }.items():
        path = fake_finished_run(runs_dir, labels, name=name)
        change(path)
        damage[name] = "; ".join(read_run(path).damage)
    return damage


def _edit(file: Path, **values) -> None:
    file.write_text(json.dumps({**json.loads(file.read_text()), **values}))


def test_each_wrong_value_is_reported_as_damage_of_its_own_run(runs_dir, data_dir):
    labels = load_cifar10(data_dir).test_y.numpy()
    damage = damaged_runs(runs_dir, labels)
    assert damage == {
        "created-nan": "config.json: created=nan is not a valid value",
        "created-huge": "config.json: created=1e+20 is not a valid value",
        "lr-text": "config.json: lr='fast' is not a float; allowed: a number from 1e-06 to 10",
        "status-strings": "status.json: pid='me' is not a valid value; status.json: progress={'step': 'many', "
        "'total_steps': inf} is not a valid value",
        "results-wrong": "results.json: test_acc='high' is not a valid value; results.json: confusion=[[1, 2], "
        "['x']] is not a valid value; results.json: classes=[1, 2, 3] is not a valid value",
        "metrics-types": "metrics.jsonl has 2 damaged line(s): 1, 2",
    }
    table = runs_table(list_runs(runs_dir, include_pretrained=False))
    assert len(table) == 6 and table["created"].isna().sum() == 2 and table["lr"].isna().sum() == 1
    with pytest.raises(CifarnetError, match="lr='fast' is not a float"):  # never resumed with a default instead
        train_run(runs_dir / "lr-text", str(data_dir))


@pytest.mark.parametrize(
    "arrays",
    [
        {
            "labels": np.zeros((10, 2), np.uint8),
            "top_classes": np.zeros((10, 5), np.uint8),
            "top_probs": np.zeros((10, 5), np.float16),
        },  # labels not one per image
        {
            "labels": np.zeros(10, np.uint8),
            "top_classes": np.full((10, 5), 12, np.uint8),
            "top_probs": np.zeros((10, 5), np.float16),
        },  # a class that does not exist
        {
            "labels": np.zeros(10, np.uint8),
            "top_classes": np.zeros((10, 5), np.uint8),
            "top_probs": np.full((10, 5), np.nan, np.float32),
        },  # probabilities that are not
        {
            "labels": np.array(["a"] * 10),
            "top_classes": np.zeros((10, 5), np.uint8),
            "top_probs": np.zeros((10, 5), np.float16),
        },  # text
        {
            "labels": np.zeros(10, np.uint8),
            "top_classes": np.zeros((10, 1), np.uint8),
            "top_probs": np.zeros((10, 1), np.float16),
        },  # fewer than the top 3 a caption shows
    ],
)
def test_predictions_of_the_wrong_shape_or_values_are_none(tmp_path, arrays):
    np.savez(tmp_path / "predictions.npz", **arrays)
    assert read_predictions(tmp_path) is None


def test_the_runs_page_lists_every_damaged_run_with_its_damage(app, runs_dir, data_dir):
    labels = load_cifar10(data_dir).test_y.numpy()
    damage = damaged_runs(runs_dir, labels)
    at = app("runs")
    (table,) = at.dataframe
    assert set(damage) <= set(table.value["run"])
    notes = " ".join(str(m.value) for m in at.expander[0].markdown).replace("\\", "")
    assert all(name in notes for name in damage) and "created=nan is not a valid value" in notes


def test_the_misclassified_page_survives_malformed_results_and_predictions(app, runs_dir, data_dir):

    labels = load_cifar10(data_dir).test_y.numpy()
    damaged_runs(runs_dir, labels)
    wrong_predictions = fake_finished_run(runs_dir, labels, name="predictions-wrong")
    np.savez(
        wrong_predictions / "predictions.npz",
        labels=labels,
        top_classes=np.full((len(labels), 5), 12),
        top_probs=np.zeros((len(labels), 5)),
    )
    _edit(
        fake_finished_run(runs_dir, labels, name="per-class-text") / "results.json",
        per_class_acc=dict.fromkeys(range(10), "good"),
    )
    at = app("misclassified")
    choices = at.selectbox[0]
    assert "results-wrong" not in choices.options and "per-class-text" not in choices.options  # nothing to draw
    choices.set_value("predictions-wrong").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "The predictions file of predictions-wrong is unreadable" in texts(at.warning)


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium")
def test_the_train_page_follows_a_live_run_whose_status_holds_strings_and_infinity(tmp_path, data_dir, page):
    """The live view is a fragment, whose exceptions AppTest does not surface: this one is looked at in a browser."""
    runs = tmp_path / "runs"
    path = create_run(make_config({**TINY, "name": "live-damaged"}), runs)
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "cifarnet-stand-in"])
    try:
        (path / "status.json").write_text(
            json.dumps(
                {
                    "status": "running",
                    "pid": trainer.pid,
                    "updated": "now",
                    "progress": {
                        "step": "many",
                        "total_steps": float("inf"),
                        "epoch": float("inf"),
                        "train_loss": "low",
                        "train_acc": float("-inf"),
                        "img_s": "fast",
                        "eta_s": float("nan"),
                        "elapsed_s": [],
                    },
                }
            )
        )
        (path / "metrics.jsonl").write_text(
            '{"kind": "train", "step": 1, "train_loss": "low", "train_acc": 0.5}\n'
            '{"kind": "train", "step": 2, "train_loss": 2.0, "train_acc": 0.2}\n'
        )
        with dashboard_server(runs, data_dir, tmp_path / "server.log") as url:
            page.goto(f"{url}/train?run=live-damaged")
            page.get_by_text("Run live-damaged · running").wait_for()
            page.get_by_test_id("stMetric").first.wait_for()
            page.wait_for_timeout(4000)  # two refreshes of the live view
            shot(page, "15-train-damaged-status")
            assert page.get_by_test_id("stException").count() == 0
            assert page.get_by_text("Run live-damaged · running").is_visible()
            page.get_by_text("updated='now' is not a valid value").wait_for()  # the damage is named, the rest shown
    finally:
        trainer.kill()
        trainer.wait()
