"""Damaged records and models are damage, not crashes (issue 25, section 4).

A hand-edited experiment record, a predictions file whose header declares 10^13 elements, a checkpoint with NaN
weights and an odd ``--target``: each is one line on the command line (a real subprocess) or the run's damage note
on the pages (the real ``dashboard.py`` through AppTest), read in bounded memory and time.
"""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest
import torch
from conftest import fake_finished_run, run_cli
from PIL import Image

from cifarnet.analysis.comparison import load_comparison
from cifarnet.analysis.explain import parse_indices, parse_target
from cifarnet.config import make_config
from cifarnet.data.cifar10 import CLASSES
from cifarnet.errors import CifarnetError
from cifarnet.nets.models import build_model
from cifarnet.runs.experiments import list_experiments, parse_vary, plan_experiment
from cifarnet.runs.folders import PRETRAINED_DIR
from cifarnet.runs.records import read_predictions, write_json
from cifarnet.training.checkpoint import load_model, save_checkpoint
from cifarnet.ui.query import EXPERIMENT_PARAM

SHIPPED_MODEL = PRETRAINED_DIR / "s10-bn" / "model.pt"


def one_line_refusal(result, *words: str) -> None:
    """A CLI refusal: exit status 2, one line on stderr naming ``words``, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


# -- hand-edited experiment records ------------------------------------------------------------------------------


def hand_edited_experiments(runs_dir):
    """Experiment records as a person editing them by hand might leave them; returns {name: expected damage}."""
    folder = runs_dir / ".experiments"
    folder.mkdir(parents=True)
    (runs_dir / "real").mkdir()
    records = {
        "as-list": ({"variants": ["real", "real"]}, "is not an object of variant -> run ids"),
        "as-string": ({"variants": "real"}, "is not an object of variant -> run ids"),
        "inner-string": ({"variants": {"norm=bn": "real"}}, "not a list of run ids"),
        "twice": ({"variants": {"norm=bn": ["real", "real"], "norm=ln": ["real"]}}, "listed twice"),
        "outside": ({"variants": {"norm=bn": ["../..", "/etc", 7]}}, "not a run id"),
        "odd-fields": ({"vary": "norm", "seeds": "0 1", "variants": {"norm=bn": ["real"]}}, None),
    }
    for name, (record, _) in records.items():
        write_json(folder / f"{name}.json", record)
    (folder / "dangling.json").symlink_to(folder / "gone.json")
    return {**{name: damage for name, (_, damage) in records.items()}, "dangling": "dangling.json is missing"}


def test_hand_edited_experiment_records_are_listed_with_their_damage(runs_dir):
    expected = hand_edited_experiments(runs_dir)
    found = {e.name: e for e in list_experiments(runs_dir)}
    assert set(expected) <= set(found)
    for name, damage in expected.items():
        experiment = found[name]
        if damage is None:
            assert not experiment.damage and experiment.vary == {} and experiment.seeds == [0]
        else:
            assert any(damage in line for line in experiment.damage), (name, experiment.damage)
        comparison = load_comparison(experiment)  # what the Compare page reads
        assert all(len(v.runs) == len({info.run_id for info in v.runs}) for v in comparison.variants)
    twice = found["twice"]
    assert [p.name for paths in twice.variants.values() for p in paths] == ["real"]  # counted once, in one place
    assert all(p.parent == runs_dir for paths in found["outside"].variants.values() for p in paths)


@pytest.mark.parametrize("name", ["as-list", "dangling", "twice"])
def test_compare_and_train_pages_show_a_hand_edited_experiment_as_damage(app, runs_dir, name):
    hand_edited_experiments(runs_dir)
    at = app("compare", **{EXPERIMENT_PARAM: name})
    notes = "\n".join(str(e.value) for e in at.markdown)
    assert "listed twice" in notes or "is not an object" in notes or "is missing" in notes, notes
    at.switch_page("app_pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]


# -- --vary compares values as the trainer uses them ---------------------------------------------------------------


def test_vary_values_are_compared_as_the_trainer_uses_them(runs_dir, data_dir):
    plan = plan_experiment(
        make_config({"subset": 20, "epochs": 1, "batch_size": 16}),
        parse_vary(["lr=0.1,0.1000001"]),
        None,
        "close",
        runs_dir,
        data_dir,
    )
    assert list(plan.runs) == ["lr=0.1", "lr=0.1000001"]
    assert [cfg.lr for configs in plan.runs.values() for cfg in configs] == [0.1, 0.1000001]
    assert len({cfg.name for configs in plan.runs.values() for cfg in configs}) == 2
    with pytest.raises(CifarnetError, match="repeats a value"):
        parse_vary(["lr=0.1,0.10"])
    with pytest.raises(CifarnetError, match="repeats a value"):
        parse_vary(["lr=1e-1,0.1"])


# -- a predictions file that declares 10^13 elements ---------------------------------------------------------------


def declaring(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    """A ``.npy`` member whose header declares ``shape`` but holds only 16 bytes of data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + b"\0" * 16


def test_a_predictions_header_declaring_ten_trillion_elements_is_refused_from_its_header(tmp_path):
    with zipfile.ZipFile(tmp_path / "predictions.npz", "w") as pack:
        pack.writestr("labels.npy", declaring((10**13,)))
        pack.writestr("top_classes.npy", declaring((10**13, 5)))
        pack.writestr("top_probs.npy", declaring((10**13, 5), "<f2"))
    started = time.perf_counter()
    assert read_predictions(tmp_path) is None
    assert time.perf_counter() - started < 1


def test_pages_show_a_bomb_predictions_file_as_unreadable(app, runs_dir):
    path = fake_finished_run(runs_dir, np.arange(10_000) % 10, name="bomb")
    with zipfile.ZipFile(path / "predictions.npz", "w") as pack:
        pack.writestr("labels.npy", declaring((10**13,)))
    at = app("misclassified")
    assert any("predictions file of bomb is unreadable" in str(w.value).replace("\\", "") for w in at.warning)


# -- a checkpoint with NaN or infinite weights ----------------------------------------------------------------------


@pytest.fixture
def nan_checkpoint(tmp_path):
    model = build_model("s10", "bn")
    weights = list(model.parameters())
    with torch.no_grad():
        weights[0][0] = float("nan")
        weights[-1][0] = float("inf")
    path = tmp_path / "nan.pt"
    save_checkpoint(path, model)
    return path


@pytest.mark.heavy
def test_a_checkpoint_with_nan_weights_is_refused_in_one_line(nan_checkpoint, data_dir):
    with pytest.raises(CifarnetError, match="NaN or infinite weights"):
        load_model(nan_checkpoint)
    for command in (
        ["evaluate", "--checkpoint", str(nan_checkpoint), "--data-dir", str(data_dir)],
        [
            "explain",
            "--checkpoint",
            str(nan_checkpoint),
            "--data-dir",
            str(data_dir),
            "--index",
            "0",
            "--out",
            str(nan_checkpoint.with_suffix(".png")),
        ],
    ):
        one_line_refusal(run_cli(*command), "NaN or infinite weights", "nan.pt")


def test_inside_names_a_run_whose_model_has_nan_weights(app, runs_dir, nan_checkpoint):
    path = fake_finished_run(runs_dir, np.arange(10_000) % 10, name="diverged")
    (path / "model.pt").write_bytes(nan_checkpoint.read_bytes())
    at = app("inside", run="diverged")
    assert any(
        "diverged" in str(e.value) and "NaN or infinite weights" in str(e.value).replace("\\", "") for e in at.error
    ), [e.value for e in at.error]


# -- odd explain targets and indices --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["²", "١", "1_0", " 3", "+3", "10", "-1", "", "dogs", "3.0"])
def test_odd_targets_are_refused_in_one_line(target):
    with pytest.raises(CifarnetError, match="is not a class; allowed: airplane"):
        parse_target(target, CLASSES)


@pytest.mark.parametrize("index", ["²", "1_0", " 3", "+3", "0:²", "-1"])
def test_odd_indices_are_refused_in_one_line(index):
    with pytest.raises(CifarnetError, match="is not a number N or a range A:B"):
        parse_indices(index, 10_000)


@pytest.mark.heavy
def test_explain_with_a_superscript_target_is_one_line(tmp_path):
    picture = tmp_path / "p.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(picture)
    result = run_cli(
        "explain",
        "--checkpoint",
        str(SHIPPED_MODEL),
        "--image",
        str(picture),
        "--target",
        "²",
        "--out",
        str(tmp_path / "cam.png"),
    )
    one_line_refusal(result, "--target '²' is not a class")
