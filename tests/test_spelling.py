"""One spelling per concept: a run's status and a record file's name are written as a string only where they are
declared (``cifarnet/runs/status.py``, ``cifarnet/runs/records.py``). Every other module, page and benchmark uses
the declared name, so a misspelling is an import error rather than a comparison that silently never matches.

Strings are read with the ast: docstrings, comments and sentences that merely contain a word such as "failed" do
not count, only a string constant that is exactly a status or a file name. A record's key is a key, not a status
or a file, even where it is spelt like one (``"pid"``, ``"finished"``: keys of ``status.json``): a dict literal's
key, a subscript and the key a ``.get`` looks up are left alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

from cifarnet.runs import records
from cifarnet.runs.status import STATUSES, Status

ROOT = Path(__file__).resolve().parents[1]
DECLARING = {ROOT / "cifarnet" / "runs" / "status.py", ROOT / "cifarnet" / "runs" / "records.py"}
STATUS_SPELLINGS = {value for name, value in vars(Status).items() if name.isupper()}
FILE_SPELLINGS = {
    value for name, value in vars(records).items() if name.endswith(("_FILE", "_FOLDER")) and isinstance(value, str)
}


def sources() -> list[Path]:
    """The package (its shipped runs hold no code), the pages, the entry point and the benchmarks."""
    files = sorted((ROOT / "cifarnet").rglob("*.py")) + sorted((ROOT / "app_pages").glob("*.py"))
    return files + [ROOT / "dashboard.py"] + sorted((ROOT / "bench").glob("*.py"))


def keys(tree: ast.AST) -> set[int]:
    """The ids of the string constants of ``tree`` that are used as a record's key or as text on their own
    (a docstring)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            found.update(id(key) for key in node.keys if key is not None)
        elif isinstance(node, ast.Subscript):
            found.add(id(node.slice))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
        ):
            found.add(id(node.args[0]))
        elif isinstance(node, ast.Expr):
            found.add(id(node.value))
    return found


def spelt_out(source: str, spellings: set[str]) -> list[tuple[int, str]]:
    """(line, string) for each string constant of ``source`` that is exactly one of ``spellings``, keys aside."""
    tree = ast.parse(source)
    skipped = keys(tree)
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in spellings
        and id(node) not in skipped
    )


def test_the_declarations_name_every_status_and_record_file():
    """What the guard below looks for comes from the declarations; renaming one must not drop it from the guard."""
    assert set(STATUSES) | {"missing"} == STATUS_SPELLINGS
    assert {
        "status.json",
        "config.json",
        "metrics.jsonl",
        "results.json",
        "predictions.npz",
        "model.pt",
        "best.pt",
        "last.pt",
        "log.txt",
        "pid",
        "STOP",
        ".trainer.lock",
        ".experiments",
        ".slots",
        ".queue.lock",
        ".queue.log",
    } <= FILE_SPELLINGS


def test_the_guard_sees_a_literal_but_not_a_key_a_docstring_or_a_sentence():
    source = '''"""finished"""
if status == "failed" or record.get("pid") or record["finished"]:
    write({"pid": None}, "the run failed", path / "STOP")
'''
    assert spelt_out(source, STATUS_SPELLINGS | FILE_SPELLINGS) == [(2, "failed"), (3, "STOP")]


def test_statuses_and_record_file_names_are_spelt_only_where_declared():
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {value!r}"
        for path in sources()
        if path not in DECLARING
        for line, value in spelt_out(path.read_text(encoding="utf-8"), STATUS_SPELLINGS | FILE_SPELLINGS)
    ]
    assert not wrong, (
        "spelt out instead of named (use cifarnet.runs.status.Status or the names in "
        "cifarnet.runs.records):\n" + "\n".join(wrong)
    )
