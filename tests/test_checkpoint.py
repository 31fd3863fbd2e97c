"""Issue 2/5: checkpoints hold config + weights, load safely, and refuse anything else clearly."""

from __future__ import annotations

import os

import pytest
import torch

from cifarnet import CheckpointError, build_model, load_model
from cifarnet.runs.folders import PRETRAINED_DIR
from cifarnet.training.checkpoint import save_checkpoint


@pytest.mark.heavy
def test_round_trip_rebuilds_the_same_model(tmp_path):
    model = build_model("s9", "gn", gn_groups=4)
    save_checkpoint(tmp_path / "m.pt", model)
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.config == {"arch": "s9", "norm": "gn", "gn_groups": 4, "dropout": 0.0, "ws": "except-depthwise"}
    assert not loaded.training
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(loaded(x), model.eval()(x))


@pytest.mark.parametrize("norm", ["bn", "ln", "gn"])
@pytest.mark.heavy
def test_shipped_models_load(norm):
    model = load_model(PRETRAINED_DIR / f"s9-{norm}" / "model.pt")
    assert model.config["norm"] == norm and model(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_truncated_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "m.pt", build_model("s9", "bn"))
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt is truncated or corrupt"):
        load_model(tmp_path / "cut.pt")


def test_weights_of_another_architecture(tmp_path):
    payload_model = build_model("s9", "bn")
    payload_model.config["arch"] = "seed"  # the file claims seed but holds s9 weights
    save_checkpoint(tmp_path / "m.pt", payload_model)
    with pytest.raises(CheckpointError, match="do not fit arch='seed'"):
        load_model(tmp_path / "m.pt")


def test_plain_state_dict_is_not_a_cifarnet_checkpoint(tmp_path):
    torch.save(build_model("s9", "bn").state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="is not a cifarnet checkpoint"):
        load_model(tmp_path / "sd.pt")


def test_text_file_and_missing_file(tmp_path):
    (tmp_path / "notes.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(tmp_path / "notes.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_pickle_crafted_to_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "cifarnet-checkpoint", "state_dict": {}, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"refused: it asks to load posix.system.*nothing from it was run"):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()
