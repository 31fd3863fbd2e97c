"""Issue 14: one declaration per config field, named recipes, and run records in one current format.

Every field declared on ``TrainConfig`` must reach the CLI (a flag whose help gives its limits and
default), the sidebar (a widget in its group, with its label) and the URL (written and read back),
without being listed anywhere else.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli, texts
from streamlit.testing.v1 import AppTest

from cifarnet import CifarnetError
from cifarnet.cli import as_flags, build_parser
from cifarnet.config import AUTO, DEFAULTS, FIELDS, GROUPS, allowed, make_config
from cifarnet.recipes import RECIPES, recipe_config
from cifarnet.runs.folders import PRETRAINED_DIR, create_run, read_run
from cifarnet.runs.records import FORMAT, load_run_config, read_config, upgrade_config
from cifarnet.ui.query import DASHBOARD_DEFAULTS, parse_query, to_query
from cifarnet.ui.sidebar import auto_key, widget_key, widget_kind

APP = Path(__file__).resolve().parents[1] / "dashboard.py"


def sample(name: str):
    """A valid value of field ``name`` that is neither its default nor the dashboard's."""
    rule, defaults = FIELDS[name], (getattr(DEFAULTS, name), getattr(DASHBOARD_DEFAULTS, name))
    if rule.choices:
        return next(choice for choice in rule.choices if choice not in defaults)
    if rule.kind is bool:
        return not defaults[1]
    if rule.kind is str:
        return "probe"
    return rule.kind(rule.high if rule.high not in defaults else rule.low)


def squeeze(text: str) -> str:
    """Help text without whitespace: argparse wraps lines anywhere, even inside hyphenated words."""
    return "".join(text.split())


@pytest.mark.heavy
def test_every_field_has_a_cli_flag_whose_help_gives_its_limits_and_default():
    parser = build_parser()
    for name in FIELDS:
        args = parser.parse_args(["train", *as_flags({name: sample(name)})])
        assert make_config({name: getattr(args, name)}) == make_config({name: sample(name)}), name
    help_text = squeeze(run_cli("train", "--help").stdout)
    for name, rule in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        assert squeeze(f"{flag}, --no-{flag[2:]}" if rule.kind is bool else flag) in help_text, name
        if rule.choices or rule.low is not None:
            assert squeeze(f"allowed: {allowed(name)}") in help_text, name
    assert (
        squeeze("--dropout DROPOUT") in help_text
        and squeeze("or auto (architecture default); default auto") in help_text
    )
    assert squeeze("allowed: a number from 1e-06 to 10; default 0.1") in help_text  # --lr
    assert (
        squeeze("--tta, --no-tta also report flip test-time-augmentation accuracy at the end; default on") in help_text
    )


def test_every_field_is_written_to_the_url_and_read_back():
    for name in FIELDS:
        query = to_query(dataclasses.replace(DASHBOARD_DEFAULTS, **{name: sample(name)}))
        assert list(query) == [name]
        parsed = parse_query(query)  # each value judged alone: the combination is the sidebar's to refuse
        assert parsed.problems == [] and parsed.values == {name: sample(name)}


@pytest.mark.heavy
def test_every_field_has_a_sidebar_widget_in_its_group_and_reaches_the_url(runs_dir, data_dir, monkeypatch):
    monkeypatch.setenv("CIFARNET_DATA", str(data_dir))
    at = AppTest.from_file(str(APP), default_timeout=90).run()
    assert [e.label for e in at.sidebar.expander] == list(GROUPS)

    def widget(name: str):
        group = next(e for e in at.sidebar.expander if e.label == FIELDS[name].group)
        return getattr(group, widget_kind(FIELDS[name]))(key=widget_key(name))

    for name, rule in FIELDS.items():
        assert widget(name).label == rule.label, name
        if rule.choices or rule.low is not None:
            assert allowed(name) in widget(name).help, name
        if rule.auto is not None:
            toggle = next(e for e in at.sidebar.expander if e.label == rule.group).toggle(key=auto_key(name))
            assert toggle.label == f"{rule.label}: {rule.auto}" and toggle.value and widget(name).disabled
            toggle.set_value(False)
    switches = {rule.active_when[0] for rule in FIELDS.values() if rule.active_when}
    samples, unset = {name: sample(name) for name in FIELDS}, sorted(FIELDS, key=lambda name: name in switches)
    for _ in range(2):  # one change per rerun, as in a browser; a greyed-out widget waits for its switch to go on
        for name in list(unset):
            if not widget(name).disabled:
                widget(name).set_value(samples[name]).run()
                unset.remove(name)
    assert not at.exception and unset == []
    for name, rule in FIELDS.items():
        switch, wanted = rule.active_when or (None, ())
        assert widget(name).disabled == (switch is not None and samples[switch] not in wanted), name
    assert dict(at.query_params) == to_query(dataclasses.replace(DASHBOARD_DEFAULTS, **samples))
    assert parse_query(dict(at.query_params)).values == samples
    assert "gn_groups=128 does not divide" in texts(at.sidebar.error)  # refused inline, and still in the link


def test_dropout_is_the_architecture_default_or_an_explicit_rate():
    assert DEFAULTS.dropout is None and make_config({"dropout": AUTO}).dropout is None
    assert (make_config({"arch": "seed"}).model_dropout, make_config({}).model_dropout) == (0.05, 0.0)
    assert make_config({"arch": "seed", "dropout": "0.15"}).model_args["dropout"] == 0.15
    assert to_query(make_config({"dropout": 0.15}, base=DASHBOARD_DEFAULTS)) == {"dropout": "0.15"}
    dropped = make_config({"dropout": 0.15}, base=DASHBOARD_DEFAULTS)
    assert to_query(DASHBOARD_DEFAULTS, base=dropped) == {"dropout": AUTO}
    with pytest.raises(
        CifarnetError,
        match=r"dropout=-1.0 is out of range; allowed: a number from 0 to 0.9, or auto "
        r"\(architecture default\)",
    ):
        make_config({"dropout": -1})


@pytest.mark.slow
def test_recipes_are_overrides_of_the_defaults_and_the_cli_takes_them(runs_dir, data_dir):
    for name, recipe in RECIPES.items():
        cfg = recipe_config(name)
        assert {k: v for k, v in cfg.to_dict().items() if v != getattr(DEFAULTS, k)} == recipe.overrides, name
        assert recipe.why
    assert recipe_config("short") == DASHBOARD_DEFAULTS
    assert recipe_config("fast85", {"seed": 1}).seed == 1
    with pytest.raises(CifarnetError, match="unknown recipe 'best'; allowed: shipped, s9, short, fast85"):
        recipe_config("best")
    done = run_cli(
        "train",
        "--recipe",
        "short",
        "--epochs",
        "0.05",
        "--subset",
        "10",
        "--batch-size",
        "20",
        "--eval-subset",
        "5",
        "--name",
        "r",
        "--runs-dir",
        str(runs_dir),
        "--data-dir",
        str(data_dir),
    )
    saved = load_run_config(runs_dir / "r")
    assert done.returncode == 0 and saved == recipe_config(
        "short", {"epochs": 0.05, "subset": 10, "batch_size": 20, "eval_subset": 5, "name": "r"}
    )
    bad = run_cli("train", "--recipe", "best")
    assert bad.returncode == 2 and "invalid choice: 'best'" in bad.stderr and bad.stderr.count("\n") == 1


SHIPPED = {
    "s10-bn": ("shipped", "bn", 0),
    "s10-ln": ("shipped", "ln", 0),
    "s10-gn": ("shipped", "gn", 0),
    "s10-bn-seed1": ("shipped", "bn", 1),
    "s10-ln-seed1": ("shipped", "ln", 1),
    "s10-gn-seed1": ("shipped", "gn", 1),
    "s9-bn": ("s9", "bn", 0),
    "s9-ln": ("s9", "ln", 0),
    "s9-gn": ("s9", "gn", 0),
}


@pytest.mark.parametrize("run_id", SHIPPED)
def test_shipped_runs_are_current_records_of_their_recipe(run_id):
    """Each shipped run is a format-2 record of a named recipe with its norm and seed; only how it was executed
    differs (device and threads; the s9 runs were recorded before `precision` existed, so in fp32)."""
    recipe, norm, seed = SHIPPED[run_id]
    folder = PRETRAINED_DIR / run_id
    saved = json.loads((folder / "config.json").read_text())
    assert saved["format"] == FORMAT and saved["name"] == folder.name and upgrade_config(saved) is saved
    recorded = load_run_config(folder)
    expected = recipe_config(
        recipe,
        {
            "norm": norm,
            "seed": seed,
            "name": run_id,
            "threads": recorded.threads,
            "device": recorded.device,
            "precision": recorded.precision,
        },
    )
    assert recorded.precision == ("fp32" if recipe == "s9" else "auto")
    assert recorded.model_args == expected.model_args
    assert {k: v for k, v in recorded.to_dict().items() if k != "ws"} == {
        k: v for k, v in expected.to_dict().items() if k != "ws"
    }
    model = torch.load(folder / "model.pt", weights_only=True)["model"]
    assert model == recorded.model_args  # the checkpoint's model dict in today's spelling too


def test_a_format1_record_loads_upgraded(runs_dir):
    """A record from before the format version: dropout -1 (architecture default), ws as a switch, no precision
    (tests/test_reliability.py trains one to the end)."""
    path = create_run(
        make_config({"norm": "ln", "subset": 10, "epochs": 1, "batch_size": 50, "eval_subset": 5, "name": "old"}),
        runs_dir,
    )
    saved = json.loads((path / "config.json").read_text())
    for key in ("format", "precision", "compile"):
        saved.pop(key)
    (path / "config.json").write_text(json.dumps({**saved, "dropout": -1.0, "ws": "on"}))
    cfg = load_run_config(path)
    assert (cfg.dropout, cfg.ws, cfg.precision, cfg.compile) == (None, "all", "fp32", False)
    info = read_run(path)
    assert info.config["format"] == FORMAT and info.weight_standardised == "all" and not info.damage
    for old_ws, mode in ((True, "all"), ("true", "all"), ("1", "all"), (False, "off"), ("0", "off"), ("off", "off")):
        assert upgrade_config({"ws": old_ws})["ws"] == mode
    assert read_config(path)[0]["dropout"] is None
