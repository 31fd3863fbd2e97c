"""The docs state the shipped runs' figures exactly as their records do, stay short, and name no build machine."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cifarnet.cli import build_parser
from cifarnet.config import FIELDS, make_config
from cifarnet.report import (EXECUTION_FIELDS, MARK, marked_block, percent, replace_block, results_markdown,
                             shipped_runs, train_command)
from cifarnet.records import load_run_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
TABLE_FILES = [ROOT / "README.md", ROOT / "docs" / "RESULTS.md"]


def words(path: Path) -> int:
    return len(path.read_text().split())


@pytest.mark.parametrize("path", TABLE_FILES, ids=lambda p: p.name)
def test_results_tables_are_the_shipped_records(path):
    """Regenerate with ``python -m cifarnet.report --write README.md docs/RESULTS.md`` after retraining."""
    assert marked_block(path.read_text()) == results_markdown(shipped_runs())


def test_every_shipped_figure_is_in_the_table_and_on_the_overview_page(monkeypatch, tmp_path):
    table = marked_block((ROOT / "README.md").read_text())
    runs = shipped_runs()
    assert len(runs) == 3
    monkeypatch.setenv("CIFARNET_RUNS", str(tmp_path / "runs"))
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=90)
    at.run()
    shown = {metric.value for metric in at.metric}
    for info in runs:
        assert f"**{percent(info.results['test_acc'])}**" in table and percent(info.results["tta_acc"]) in table
        assert percent(info.final_acc) in shown
    assert len(shown) == len(runs)


def test_the_tables_command_trains_the_shipped_config():
    """Each row's command, parsed by the real CLI, gives the run's own config (apart from how it was executed)."""
    for info in shipped_runs():
        saved = load_run_config(info.path)
        command = train_command(saved)
        args = build_parser().parse_args(shlex.split(command)[3:])
        rebuilt = make_config({name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None})
        for name in FIELDS:
            if name not in EXECUTION_FIELDS and name != "ws":
                assert getattr(rebuilt, name) == getattr(saved, name), (info.run_id, name)
        assert rebuilt.model_args == saved.model_args  # the same network, weight standardisation included


def test_report_writes_only_between_the_marks(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"intro\n{MARK}\nold table\n{MARK}\noutro\n")
    assert replace_block(page.read_text(), "new") == f"intro\n{MARK}\nnew\n{MARK}\noutro\n"
    assert marked_block("no marks") is None


def test_readme_and_docs_stay_short():
    assert words(ROOT / "README.md") <= 1200
    assert sum(words(path) for path in DOCS) <= 5000


BUILD_MACHINE = re.compile(r"/work/|\.\./shared|shared/data|build machine|/root/", re.IGNORECASE)


def test_no_paths_of_the_build_machine_in_docs_or_ui():
    texts = [ROOT / "README.md", *DOCS, *(ROOT / "app_pages").glob("*.py"), *(ROOT / "cifarnet" / "ui").glob("*.py")]
    found = [f"{path.relative_to(ROOT)}: {match.group()}" for path in texts
             for match in BUILD_MACHINE.finditer(path.read_text())]
    assert not found
