"""The shipped runs' results as the Markdown table that README.md and docs/RESULTS.md show.

One source per figure: the table is generated from the runs' own records (``config.json``,
``results.json``, ``status.json`` in ``cifarnet/pretrained/``), the Overview page formats its
figures with the same :func:`percent`, and a test checks that every marked table in the docs
is exactly what this module prints. After the shipped runs change:

    python -m cifarnet.report --write README.md docs/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path

from cifarnet.config import DEFAULTS, FIELDS, TrainConfig, resolve_ws
from cifarnet.errors import CifarnetError
from cifarnet.monitor import norm_words
from cifarnet.records import load_run_config
from cifarnet.runs import RunInfo, list_runs

MARK = "<!-- shipped-results -->"  # a generated table sits between two of these
EXECUTION_FIELDS = ("name", "device", "threads")  # how a run was executed, not what it learned


def percent(value: float | None) -> str:
    """An accuracy as the docs and the Overview page print it: two decimals, so 84.98 % never reads as 85.0 %."""
    return "–" if value is None else f"{100 * value:.2f} %"


def shipped_runs() -> list[RunInfo]:
    """The runs shipped in ``cifarnet/pretrained/``, in name order."""
    return [info for info in list_runs("/nonexistent-runs-folder") if info.pretrained]


def train_command(cfg: TrainConfig) -> str:
    """The ``python -m cifarnet train`` command that trains ``cfg``: a flag for every field off its default."""
    flags = []
    for name, value in cfg.to_dict().items():
        default = getattr(DEFAULTS, name)
        if name in EXECUTION_FIELDS or value == default:
            continue
        if name == "ws" and resolve_ws(cfg.arch, cfg.norm, value) == resolve_ws(cfg.arch, cfg.norm, default):
            continue  # the same convs standardised, however it was spelled
        flag = "--" + name.replace("_", "-")
        if FIELDS[name].kind is bool:
            flags.append(flag if value else f"--no-{flag[2:]}")
        else:
            flags.append(f"{flag} {format(value, 'g') if isinstance(value, float) else value}")
    return " ".join(["python -m cifarnet train", *flags])


def _finished(info: RunInfo) -> str:
    stamp = info.status_record.get("finished") or info.status_record.get("updated")
    if not isinstance(stamp, (int, float)):
        return "–"
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).strftime("%Y-%m-%d")


def results_markdown(runs: Sequence[RunInfo]) -> str:
    """The table: one row per run with its network, test accuracy, flip-TTA accuracy, date and command."""
    lines = ["| run | arch | norm | params | epochs | test acc | flip-TTA | trained | command |",
             "|---|---|---|---|---|---|---|---|---|"]
    for info in runs:
        try:
            cfg = load_run_config(info.path)
        except CifarnetError as exc:
            raise CifarnetError(f"shipped run {info.run_id}: {exc}") from exc
        results = info.results or {}
        lines.append(f"| `{info.run_id}` | `{cfg.arch}` | {norm_words(cfg)} | {info.config.get('params', 0):,} | "
                     f"{cfg.epochs:g} | **{percent(results.get('test_acc'))}** | {percent(results.get('tta_acc'))} | "
                     f"{_finished(info)} | `{train_command(cfg)}` |")
    return "\n".join(lines)


def marked_block(text: str) -> str | None:
    """What stands between the two marks in ``text`` (stripped), or ``None`` without a pair of marks."""
    if text.count(MARK) != 2:
        return None
    return text.split(MARK)[1].strip()


def replace_block(text: str, table: str) -> str:
    """``text`` with the marked block replaced by ``table``."""
    head, _, rest = text.partition(MARK)
    _, _, tail = rest.partition(MARK)
    return f"{head}{MARK}\n{table}\n{MARK}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifarnet.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", nargs="+", type=Path, metavar="FILE",
                        help=f"replace the table between the two {MARK} marks of each FILE")
    args = parser.parse_args(argv)
    table = results_markdown(shipped_runs())
    if not args.write:
        print(table)
        return 0
    for path in args.write:
        text = path.read_text()
        if marked_block(text) is None:
            print(f"{path}: needs exactly two {MARK} marks around the table", file=sys.stderr)
            return 2
        path.write_text(replace_block(text, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
