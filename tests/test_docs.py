"""The docs state the shipped runs' figures exactly as their records do, stay short, and name no build machine."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cifarnet.analysis.report import (
    EXECUTION_FIELDS,
    TABLES,
    mark,
    marked_block,
    mean_text,
    percent,
    replace_block,
    seed_groups,
    train_command,
)
from cifarnet.cli import build_parser
from cifarnet.config import FIELDS, make_config
from cifarnet.recipes import recipe_config
from cifarnet.runs.folders import SHIPPED_TRIO, shipped_runs
from cifarnet.runs.records import load_run_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
TABLE_FILES = {ROOT / "README.md": ("seed-means",), ROOT / "docs" / "RESULTS.md": ("shipped-results", "seed-means")}


def words(path: Path) -> int:
    return len(path.read_text().split())


@pytest.mark.parametrize(
    "path, name",
    [(path, name) for path, names in TABLE_FILES.items() for name in names],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_results_tables_are_the_shipped_records(path, name):
    """Regenerate with ``python -m cifarnet.analysis.report --write README.md docs/RESULTS.md`` after retraining."""
    assert marked_block(path.read_text(), name) == TABLES[name](shipped_runs())


def test_every_shipped_figure_is_in_the_tables_and_the_trio_on_the_overview_page(monkeypatch, tmp_path):
    runs = shipped_runs()
    assert [info.run_id for info in runs] == [
        "s10-bn",
        "s10-bn-seed1",
        "s10-gn",
        "s10-gn-seed1",
        "s10-ln",
        "s10-ln-seed1",
        "s9-bn",
        "s9-gn",
        "s9-ln",
    ]
    table = marked_block((ROOT / "docs" / "RESULTS.md").read_text(), "shipped-results")
    means = marked_block((ROOT / "README.md").read_text(), "seed-means")
    for info in runs:
        assert f"**{percent(info.results['test_acc'])}**" in table and percent(info.results["tta_acc"]) in table
    for group in seed_groups(runs):  # README: the mean over each network's seeds
        assert f"**{mean_text([info.results['test_acc'] for info in group])}**" in means
    monkeypatch.setenv("CIFARNET_RUNS", str(tmp_path / "runs"))
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=90)
    at.run()
    shown = {metric.value for metric in at.metric}
    assert shown == {percent(info.final_acc) for info in runs if info.run_id in SHIPPED_TRIO}


def test_the_tables_command_trains_the_shipped_config():
    """Each row's command, parsed by the real CLI, gives the run's own config (apart from how it was executed)."""
    for info in shipped_runs():
        saved = load_run_config(info.path)
        command = train_command(saved)
        args = build_parser().parse_args(shlex.split(command)[3:])
        values = {name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None}
        rebuilt = recipe_config(args.recipe, values) if args.recipe else make_config(values)
        for name in FIELDS:
            if name not in EXECUTION_FIELDS and name != "ws":
                assert getattr(rebuilt, name) == getattr(saved, name), (info.run_id, name)
        assert rebuilt.model_args == saved.model_args  # the same network, weight standardisation included


def test_report_writes_only_between_the_marks(tmp_path):
    mark_ = mark("seed-means")
    text = f"intro\n{mark_}\nold table\n{mark_}\noutro\n"
    assert replace_block(text, "seed-means", "new") == f"intro\n{mark_}\nnew\n{mark_}\noutro\n"
    assert marked_block("no marks", "seed-means") is None and marked_block(text, "shipped-results") is None


def test_readme_and_docs_stay_short():
    assert words(ROOT / "README.md") <= 1200
    assert {path.name: words(path) for path in DOCS if words(path) > 2500} == {}  # each read in ten minutes


BUILD_MACHINE = re.compile(r"/work/|\.\./shared|shared/data|build machine|/root/", re.IGNORECASE)


def test_no_paths_of_the_build_machine_in_docs_or_ui():
    texts = [ROOT / "README.md", *DOCS, *(ROOT / "app_pages").glob("*.py"), *(ROOT / "cifarnet" / "ui").glob("*.py")]
    found = [
        f"{path.relative_to(ROOT)}: {match.group()}"
        for path in texts
        for match in BUILD_MACHINE.finditer(path.read_text())
    ]
    assert not found
