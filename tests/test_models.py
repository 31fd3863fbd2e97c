"""Issue 2: the seed table, s9's rules, norms, receptive field and summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from torch import nn

from cifarnet import CifarnetError, build_model, count_params
from cifarnet.config import make_config
from cifarnet.nets.models import ARCHS, Parallel, Residual, StdConv2d
from cifarnet.nets.norms import NORMS
from cifarnet.nets.receptive_field import format_rf, receptive_field
from cifarnet.nets.rules import check_rules
from cifarnet.nets.summary import format_summary, summarize
from cifarnet.training.checkpoint import load_model, save_checkpoint

WRITEUP = Path(__file__).parent / "fixtures" / "seed_summary_writeup.txt"
ROW = re.compile(r"^\s*(\w+)-(\d+)\s+\[-1, ([\d, ]+)\]\s+([\d,]+)$")


def writeup_rows() -> list[tuple[str, list[int], int]]:
    rows = []
    for line in WRITEUP.read_text().splitlines():
        match = ROW.match(line)
        if match:
            shape = [int(v) for v in match[3].split(",")]
            rows.append((f"{match[1]}-{match[2]}", shape, int(match[4].replace(",", ""))))
    return rows


def test_seed_summary_equals_the_writeup_table_line_for_line():
    expected = writeup_rows()
    assert len(expected) == 98
    summary = summarize(build_model("seed", "bn"))
    got = [(r.name, r.output_shape, r.params) for r in summary.layers]
    assert got == expected
    assert summary.total_params == summary.trainable_params == 192_672
    assert f"{summary.forward_backward_mb:.2f}" == "20.98"
    assert f"{summary.total_mb:.2f}" == "21.72"


def test_seed_printed_table_matches_writeup_text():
    printed = format_summary(summarize(build_model("seed", "bn")))
    writeup_lines = [line.strip() for line in WRITEUP.read_text().splitlines()[1:] if line.strip()]
    assert [line.strip() for line in printed.splitlines() if line.strip()] == writeup_lines


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("norm", NORMS)
def test_every_architecture_meets_every_rule(arch, norm):
    """Issue 18: each architecture keeps the write-up's rules with every norm, and classifies a batch."""
    model = build_model(arch, norm)
    assert [(r.name, r.passed) for r in check_rules(model) if not r.passed] == []
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_rules_catch_a_model_that_breaks_them():
    """Max-pooling in C1, no dilation anywhere and the head's 1x1 conv before the pooling: exactly those rules fail."""
    model = build_model("s9", "bn")
    model.body.c1.append(nn.MaxPool2d(2))
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
        conv.dilation, conv.padding = (1, 1), tuple(min(p, 1) for p in conv.padding)
    model.body.head = nn.Sequential(nn.Conv2d(128, 10, 1, bias=False), nn.AdaptiveAvgPool2d(1))
    failed = {r.name for r in check_rules(model) if not r.passed}
    assert failed == {
        "no max-pooling",
        "a dilated convolution",
        "global average pooling, then a 1x1 conv to 10 classes",
    }


@pytest.mark.parametrize("arch, params, rf", [("seed", 192_672, 97), ("s9", 189_920, 59), ("s10", 184_544, 71)])
def test_parameters_and_receptive_field_of_each_architecture(arch, params, rf):
    model = build_model(arch, "bn")
    assert count_params(model) == params and receptive_field(model).rf == rf


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_count_is_the_same_for_every_norm(arch):
    counts = {count_params(build_model(arch, n)) for n in ("bn", "ln", "gn")}
    assert len(counts) == 1


def test_norm_layers_are_what_the_docs_say():
    ln = [m for m in build_model("s9", "ln").modules() if isinstance(m, nn.GroupNorm)]
    gn = [m for m in build_model("s9", "gn", gn_groups=4).modules() if isinstance(m, nn.GroupNorm)]
    assert ln and all(m.num_groups == 1 for m in ln)
    assert gn and all(m.num_groups == 4 for m in gn)
    assert not any(isinstance(m, nn.GroupNorm) for m in build_model("s9", "bn").modules())


def test_weight_standardisation_makes_every_normed_conv_ignore_its_weights_scale_and_offset(tmp_path):
    """ws: each conv feeding a norm sees only its filters' shape; the 1x1 head keeps its scale."""
    plain, ws = build_model("s9", "ln", ws="off"), build_model("s9", "ln", ws="all")
    assert count_params(plain) == count_params(ws)
    convs = [m for m in ws.modules() if isinstance(m, nn.Conv2d)]
    assert [type(m) for m in convs] == [StdConv2d] * (len(convs) - 1) + [nn.Conv2d]
    assert not any(isinstance(m, StdConv2d) for m in plain.modules())
    ws.eval()
    x = torch.rand(4, 3, 32, 32)
    before = ws(x)
    with torch.no_grad():
        for conv in convs[:-1]:
            conv.weight.mul_(3.0).add_(0.5)
    assert torch.allclose(ws(x), before, atol=1e-4)
    with torch.no_grad():
        convs[-1].weight.mul_(2.0)
    assert torch.allclose(ws(x), 2 * before, atol=1e-4)
    save_checkpoint(tmp_path / "ws.pt", ws)
    loaded = load_model(tmp_path / "ws.pt")
    assert loaded.config["ws"] == "all" and torch.allclose(loaded(x), ws(x), atol=1e-5)


def test_weight_standardisation_except_depthwise_leaves_exactly_the_depthwise_convs_plain(tmp_path):
    """ws=except-depthwise: the same model as ws=all (same weights from the same seed) but each
    depthwise 3x3 filter keeps its own mean and scale; it survives a checkpoint round trip."""
    torch.manual_seed(0)
    full = build_model("s9", "gn", ws="all")
    torch.manual_seed(0)
    model = build_model("s9", "gn", ws="except-depthwise")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [m for m in convs if m.groups > 1]
    assert len(depthwise) == 4 and all(type(m) is nn.Conv2d for m in depthwise)
    assert all(type(m) is StdConv2d for m in convs[:-1] if m.groups == 1) and type(convs[-1]) is nn.Conv2d
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), model.state_dict().values()))
    x = torch.rand(4, 3, 32, 32)
    model.eval()
    before = model(x)
    with torch.no_grad():
        depthwise[0].weight.mul_(3.0).add_(0.5)
    assert not torch.allclose(model(x), before, atol=1e-3)  # a plain conv: its scale and offset matter
    save_checkpoint(tmp_path / "x.pt", model)
    loaded = load_model(tmp_path / "x.pt")
    assert loaded.config["ws"] == "except-depthwise" and torch.allclose(loaded(x), model(x), atol=1e-5)


def test_weight_standardisation_defaults_and_old_checkpoints_stay_as_trained(tmp_path):
    """s9 standardises by default with LN and GN only, sparing the depthwise convs; seed (the write-up's network) never
    does; a checkpoint saved before the option existed has no "ws" and is rebuilt as it was trained: plain; one saved
    while it was a switch says True and is rebuilt with every conv standardised."""
    assert [build_model("s9", n).config["ws"] for n in ("bn", "ln", "gn")] == ["off", *["except-depthwise"] * 2]
    assert [build_model("seed", n).config["ws"] for n in ("bn", "ln", "gn")] == ["off", "off", "off"]
    assert make_config({"arch": "seed", "norm": "ln"}).model_args["ws"] == "off"
    assert make_config({"norm": "gn"}).model_args["ws"] == "except-depthwise"
    assert make_config({"norm": "gn", "ws": "off"}).model_args["ws"] == "off"
    assert make_config({"norm": "bn", "ws": "all"}).model_args["ws"] == "all"
    for old in ("on", "true", True, False):  # the switch's spellings live only in old records (cifarnet.runs.records)
        with pytest.raises(CifarnetError, match=r"ws=.* is not known; allowed: auto, off, all, except-depthwise"):
            make_config({"ws": old})
    with pytest.raises(CifarnetError, match=r"unknown ws 'some'; allowed: off, all, except-depthwise"):
        build_model("s9", "ln", ws="some")
    with pytest.raises(CifarnetError, match=r"unknown ws True"):
        build_model("s9", "ln", ws=True)
    plain, every = build_model("s9", "gn", ws="off"), build_model("s9", "gn", ws="all")
    for model, saved_ws, expected in ((plain, None, "off"), (every, True, "all"), (plain, False, "off")):
        old_config = {k: v for k, v in model.config.items() if k != "ws"} | (
            {} if saved_ws is None else {"ws": saved_ws}
        )
        torch.save(
            {"format": "cifarnet-checkpoint", "version": 1, "state_dict": model.state_dict(), "model": old_config},
            tmp_path / "old.pt",
        )
        loaded = load_model(tmp_path / "old.pt")
        assert loaded.config["ws"] == expected
        assert sum(isinstance(m, StdConv2d) for m in loaded.modules()) == (12 if expected == "all" else 0)


def test_gn_groups_must_divide_every_layer():
    with pytest.raises(CifarnetError, match=r"gn_groups=3 does not divide.*allowed: 1, 2, 4, 8, 16, 32"):
        build_model("s9", "gn", gn_groups=3)
    with pytest.raises(CifarnetError, match="unknown norm 'xx'; allowed: bn, gn, ln"):
        build_model("s9", "xx")
    with pytest.raises(CifarnetError, match="dropout must be in"):
        build_model("s9", "bn", dropout=1.5)


def test_models_normalise_inside():
    """The same image in [0,1] gives the same output whatever the caller did: stats are buffers."""
    model = build_model("s9", "bn").eval()
    assert torch.allclose(model.mean.flatten(), torch.tensor([0.4914, 0.4822, 0.4465]))
    x = torch.rand(1, 3, 32, 32)
    manual = model.body((x - model.mean) / model.std).flatten(1)
    assert torch.allclose(model(x), manual)


def test_receptive_field_by_hand():
    """conv3 → conv3 s2 → [conv3 d2 | conv1] summed → residual conv3: hand-computed fields."""
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # rf 3, jump 1, size 32
        nn.Conv2d(4, 4, 3, stride=2, padding=1),  # rf 5, jump 2, size 16
        nn.ReLU(),
        Parallel(nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.Conv2d(4, 4, 1)),  # max(5+4*2, 5) = 13
        Residual(nn.Conv2d(4, 4, 3, padding=1)),  # 13 + 2*2 = 17
        nn.AdaptiveAvgPool2d(1),
    )
    report = receptive_field(net)
    assert [(r.rf, r.jump, r.size) for r in report.rows] == [
        (3, 1, 32),
        (5, 2, 16),
        (13, 2, 16),
        (5, 2, 16),
        (17, 2, 16),
        (47, 32, 1),
    ]
    assert report.rf == 17


def test_seed_receptive_field_rows():
    report = receptive_field(build_model("seed", "bn"))
    first = report.rows[:4]
    assert [(r.kernel, r.dilation, r.rf) for r in first] == [(3, 1, 3), (3, 1, 5), (1, 1, 5), (3, 1, 7)]
    assert report.rows[-1].type == "Conv2d" and report.rows[-2].type == "AdaptiveAvgPool2d"
    assert report.rf == 97
    assert "receptive field before global pooling: 97 px" in format_rf(report)


@pytest.mark.heavy
def test_cli_summary_and_rf_json():
    summary = run_cli("summary", "--arch", "seed", "--norm", "bn", "--json")
    assert summary.returncode == 0, summary.stderr
    data = json.loads(summary.stdout)
    assert data["total_params"] == 192_672 and data["trainable_params"] == 192_672
    assert data["layers"][0] == {"name": "Conv2d-1", "type": "Conv2d", "output_shape": [32, 32, 32], "params": 864}
    rf = run_cli("rf", "--arch", "s9", "--norm", "gn", "--json")
    assert rf.returncode == 0, rf.stderr
    rf_data = json.loads(rf.stdout)
    assert rf_data["rf"] > 44
    assert set(rf_data["layers"][0]) == {
        "name",
        "type",
        "kernel",
        "stride",
        "dilation",
        "padding",
        "size",
        "jump",
        "rf",
    }
    human = run_cli("rf", "--arch", "s9")
    assert "receptive field before global pooling" in human.stdout


@pytest.mark.heavy
def test_cli_refuses_bad_model_options_in_one_line():
    bad = run_cli("summary", "--norm", "gn", "--gn-groups", "5")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "gn_groups=5 does not divide" in bad.stderr and "Traceback" not in bad.stderr
