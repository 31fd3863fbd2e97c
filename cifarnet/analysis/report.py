"""The shipped runs' results as the Markdown tables that README.md and docs/RESULTS.md show.

One source per figure: the tables are generated from the runs' own records (``config.json``,
``results.json``, ``status.json`` in ``cifarnet/pretrained/``), the Overview page formats its
figures with the same :func:`percent`, and a test checks that every marked table in the docs
is exactly what this module prints. Two tables: one row per shipped run (``shipped-results``),
and one row per network and norm with the mean over its seeds (``seed-means``). After the
shipped runs change:

    python -m cifarnet.analysis.report --write README.md docs/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cifarnet.config import DEFAULTS, FIELDS, TrainConfig, resolve_ws
from cifarnet.errors import CifarnetError
from cifarnet.recipes import RECIPES, recipe_config
from cifarnet.runs.folders import RunInfo, shipped_runs
from cifarnet.runs.records import load_run_config

EXECUTION_FIELDS = ("name", "device", "threads", "processes")  # how a run was executed, not what it learned


def percent(value: float | None) -> str:
    """An accuracy as the docs and the Overview page print it: two decimals, so 84.98 % never reads as 85.0 %."""
    return "–" if value is None else f"{100 * value:.2f} %"


def _flags(cfg: TrainConfig, base: TrainConfig) -> list[str]:
    """A ``train`` flag for every field of ``cfg`` that differs from ``base`` (how a run was executed aside)."""
    flags = []
    for name, value in cfg.to_dict().items():
        default = getattr(base, name)
        if name in EXECUTION_FIELDS or value == default:
            continue
        if name == "ws" and resolve_ws(cfg.arch, cfg.norm, value) == resolve_ws(cfg.arch, cfg.norm, default):
            continue  # the same convs standardised, however it was spelled
        flag = "--" + name.replace("_", "-")
        if FIELDS[name].kind is bool:
            flags.append(flag if value else f"--no-{flag[2:]}")
        else:
            flags.append(f"{flag} {format(value, 'g') if isinstance(value, float) else value}")
    return flags


def train_command(cfg: TrainConfig) -> str:
    """The shortest ``python -m cifarnet train`` command that trains ``cfg``: a named recipe (or none) and a flag
    for every field off it."""
    options = [_flags(cfg, DEFAULTS)] + [[f"--recipe {name}", *_flags(cfg, recipe_config(name))] for name in RECIPES]
    return " ".join(["python -m cifarnet train", *min(options, key=len)])


def _trained(info: RunInfo) -> str:
    """When the run finished and on what (``2026-12-04, GPU``), from its status and results records."""
    stamp = info.status_record.get("finished") or info.status_record.get("updated")
    day = (
        dt.datetime.fromtimestamp(stamp, dt.timezone.utc).strftime("%Y-%m-%d")
        if isinstance(stamp, (int, float))
        else "–"
    )
    device = str((info.results or {}).get("device", ""))
    return f"{day}, {'GPU' if device.startswith('cuda') else 'CPU'}" if device else day


def results_markdown(runs: Sequence[RunInfo]) -> str:
    """The table: one row per run with its network, test accuracy, flip-TTA accuracy, date and command."""
    lines = [
        "| run | arch | norm | params | epochs | test acc | flip-TTA | trained | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for info in runs:
        try:
            cfg = load_run_config(info.path)
        except CifarnetError as exc:
            raise CifarnetError(f"shipped run {info.run_id}: {exc}") from exc
        results = info.results or {}
        lines.append(
            f"| `{info.run_id}` | `{cfg.arch}` | {short_norm(cfg)} | {info.config.get('params', 0):,} | "
            f"{cfg.epochs:g} | **{percent(results.get('test_acc'))}** | {percent(results.get('tta_acc'))} | "
            f"{_trained(info)} | `{train_command(cfg)}` |"
        )
    return "\n".join(lines)


def seed_groups(runs: Sequence[RunInfo]) -> list[list[RunInfo]]:
    """Runs that differ only in their seed (and name), grouped, in the order of their first run."""
    groups: dict[tuple, list[RunInfo]] = {}
    for info in runs:
        cfg = load_run_config(info.path).to_dict()
        key = tuple(sorted((k, str(v)) for k, v in cfg.items() if k not in ("seed", *EXECUTION_FIELDS)))
        groups.setdefault(key, []).append(info)
    return list(groups.values())


def mean_text(values: Sequence[float]) -> str:
    """``88.20 %`` for one value, ``88.20 ± 0.14 %`` (sample standard deviation) for several."""
    if len(values) < 2:
        return percent(values[0])
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f} %"


def short_norm(cfg: TrainConfig) -> str:
    """``GN (2 groups) + WS``: the norm and whether weight standardisation spares the depthwise convs (``WS``) or
    covers every conv (``WS all``), for compact tables."""
    norm = f"GN ({cfg.gn_groups} groups)" if cfg.norm == "gn" else cfg.norm.upper()
    ws = cfg.model_args["ws"]
    return norm + {"except-depthwise": " + WS", "all": " + WS all"}.get(ws, "")


def means_markdown(runs: Sequence[RunInfo]) -> str:
    """One row per network and norm: the test and flip-TTA accuracy over its seeds (mean ± standard deviation),
    and the command of the first seed (``--seed N`` for the others)."""
    lines = ["| arch | norm | epochs | seeds | test acc | flip-TTA | command |", "|---|---|---|---|---|---|---|"]
    for group in seed_groups(runs):
        cfg = load_run_config(group[0].path)
        seeds = ", ".join(str(load_run_config(info.path).seed) for info in group)
        accs, ttas = ([info.results[key] for info in group] for key in ("test_acc", "tta_acc"))
        lines.append(
            f"| `{cfg.arch}` | {short_norm(cfg)} | {cfg.epochs:g} | {seeds} | **{mean_text(accs)}** | "
            f"{mean_text(ttas)} | `{train_command(cfg)}` |"
        )
    return "\n".join(lines)


# The generated tables, by the name in their marks: ``<!-- NAME -->`` on the lines before and after a table.
TABLES: dict[str, Callable[[Sequence[RunInfo]], str]] = {
    "shipped-results": results_markdown,
    "seed-means": means_markdown,
}


def mark(name: str) -> str:
    return f"<!-- {name} -->"


def marked_block(text: str, name: str) -> str | None:
    """What stands between the two marks of table ``name`` in ``text`` (stripped), or ``None`` without a pair."""
    if text.count(mark(name)) != 2:
        return None
    return text.split(mark(name))[1].strip()


def replace_block(text: str, name: str, table: str) -> str:
    """``text`` with the marked block of table ``name`` replaced by ``table``."""
    head, _, rest = text.partition(mark(name))
    _, _, tail = rest.partition(mark(name))
    return f"{head}{mark(name)}\n{table}\n{mark(name)}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifarnet.analysis.report", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--write",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="replace every marked table of each FILE (marks: " + ", ".join(mark(name) for name in TABLES) + ")",
    )
    args = parser.parse_args(argv)
    runs = shipped_runs()
    tables = {name: make(runs) for name, make in TABLES.items()}
    if not args.write:
        print("\n\n".join(tables.values()))
        return 0
    for path in args.write:
        text = path.read_text()
        found = [name for name in TABLES if marked_block(text, name) is not None]
        if not found:
            print(f"{path}: no marked table (marks: {', '.join(mark(name) for name in TABLES)})", file=sys.stderr)
            return 2
        for name in found:
            text = replace_block(text, name, tables[name])
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
