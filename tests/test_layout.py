"""The package's layout: each part imports only the parts below it, and no private name crosses a part.

A part is a subpackage of ``cifarnet`` (``nets``, ``data``, ...) or one of its top-level modules (``config``,
``cli``, ...). Imports are read with the ast, so a lazy import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cifarnet"

# What each part may import (besides itself). Floors, bottom up: errors, wording < nets < config, recipes,
# devices < data < runs < training < analysis < ui | cli. Parts on one floor are apart ("|") unless listed. Runs
# sit above data: a launch checks that the data set is there before a trainer starts.
BELOW_DATA_AND_RUNS = {"errors", "wording", "nets", "config", "recipes", "devices"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "wording": set(),
    "nets": {"errors"},
    "devices": {"errors"},
    "config": {"errors", "nets"},
    "recipes": {"errors", "nets", "config"},
    "data": BELOW_DATA_AND_RUNS,
    "runs": BELOW_DATA_AND_RUNS | {"data"},
    "training": BELOW_DATA_AND_RUNS | {"data", "runs"},
    "analysis": BELOW_DATA_AND_RUNS | {"data", "runs", "training"},
    "ui": BELOW_DATA_AND_RUNS | {"data", "runs", "training", "analysis"},
    "cli": BELOW_DATA_AND_RUNS | {"data", "runs", "training", "analysis"},
}
ROOT_MODULES = {"__init__", "__main__"}  # the package's face: re-exports and ``python -m cifarnet``

pytestmark = pytest.mark.skipif(
    not (PACKAGE / "nets").is_dir(),
    reason="the flat layout is still in place: the subpackages arrive with the "
    "mechanical move at integration (issue #26)",
)


def part_of(module: str) -> str | None:
    """``cifarnet.runs.slots`` -> ``runs``; ``cifarnet.config`` -> ``config``; outside cifarnet -> None."""
    parts = module.split(".")
    if parts[0] != "cifarnet":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    names = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(names[:-1] if names[-1] == "__init__" else names)


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names) for every import in the file; ``import a.b`` has no names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; write the absolute one"
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return found


def package_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "pretrained" not in p.parts)


def test_every_part_has_a_place_in_the_table():
    parts = {part_of(module_name(p)) for p in package_files()} - ROOT_MODULES
    assert parts <= set(ALLOWED), f"parts without a row in ALLOWED: {sorted(parts - set(ALLOWED))}"


def test_subpackages_say_what_they_own_and_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert len(doc.split()) >= 30, f"{init.relative_to(ROOT)}: a paragraph on what it owns and may import"
        assert "import" in doc, f"{init.relative_to(ROOT)}: its docstring says nothing of what it may import"


def test_imports_go_only_downward():
    wrong = []
    for path in package_files():
        here = part_of(module_name(path))
        if here in ROOT_MODULES:
            continue
        for line, module, names in imports(path):
            there = part_of(module)
            if there == "__init__":  # from cifarnet import x: x is a part (module or subpackage) or a re-export
                targets = [
                    n if (PACKAGE / n).is_dir() or (PACKAGE / f"{n}.py").is_file() else "__init__" for n in names
                ]
            else:
                targets = [there] if there else []
            for target in targets:
                if target != here and target not in ALLOWED.get(here, set()):
                    wrong.append(f"{path.relative_to(ROOT)}:{line}: {here} imports {target} ({module})")
    assert not wrong, "imports against the floors:\n" + "\n".join(wrong)


def test_no_private_name_crosses_a_part():
    """A leading underscore means "this part's own": pages, scripts and other parts use the public names."""
    users = package_files() + sorted((ROOT / "app_pages").glob("*.py")) + [ROOT / "dashboard.py"]
    users += sorted((ROOT / "bench").glob("*.py"))
    wrong = []
    for path in users:
        here = part_of(module_name(path)) if PACKAGE in path.parents else None
        for line, module, names in imports(path):
            there = part_of(module)
            if there is None or there == here:
                continue
            wrong += [
                f"{path.relative_to(ROOT)}:{line}: {module}.{n}"
                for n in names
                if n.startswith("_") and not n.startswith("__")
            ]
            if any(part.startswith("_") and not part.startswith("__") for part in module.split(".")):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert not wrong, "private names imported from another part:\n" + "\n".join(wrong)


def test_harnesses_live_outside_the_package():
    """Test and benchmark helpers (the dashboard server harness) are not shipped inside ``cifarnet``."""
    shipped = [module_name(p) for p in package_files() if "harness" in p.stem or p.stem == "server"]
    assert not shipped, f"harness modules inside the package: {shipped}"
