"""What the Compare page's run-by-run views of an experiment show: one row per run with its settings, the best
test accuracy and the step it came at, filters on the varied settings, and curves per run.

A sweep is read run by run, not variant by variant: with random draws every variant has its own values, and the
question is which region of the settings is good. The table's *best* is the highest test accuracy any evaluation
of the run reached (not the last), with the step it was reached at; *final* is the full-test-set accuracy of a
finished run. Everything reads the runs' own records through :mod:`cifarnet.analysis.comparison`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from cifarnet.analysis.comparison import Comparison
from cifarnet.analysis.curves import curves_frame
from cifarnet.config import FIELDS
from cifarnet.runs.folders import RunInfo
from cifarnet.runs.status import Status

BEST, BEST_STEP, FINAL = "best test acc", "best at step", "final test acc"  # accuracies in percent
IDENTITY = ("run", "variant", "status")
SETTINGS = tuple(name for name in FIELDS if name != "name")  # a run's settings, as its config records them


def best_eval(info: RunInfo) -> tuple[float | None, int | None]:
    """The run's highest evaluated test accuracy (a fraction) and the step of its first evaluation that reached it.

    The final record repeats the last evaluation (same step), so it never moves the step of a tie later."""
    best, step = None, None
    for record in info.evals:
        value = record.get("test_acc")
        if isinstance(value, (int, float)) and (best is None or value > best):
            best, step = float(value), record.get("step")
    return best, step


def _percent(value: Any) -> float | None:
    return round(100.0 * float(value), 2) if isinstance(value, (int, float)) else None


def run_table(comparison: Comparison) -> pd.DataFrame:
    """One row per run of the experiment: identity, every setting of its config, best (and its step), final
    accuracy and, for a run that did not finish, why (a rule's reason or the trainer's error)."""
    rows = []
    for variant in comparison.variants:
        for info in variant.runs:
            best, step = best_eval(info)
            final = (info.results or {}).get("test_acc") if info.status == Status.FINISHED else None
            error = info.status_record.get("error") if info.status not in (Status.FINISHED, Status.RUNNING) else None
            why = info.status_record.get("reason") or error
            rows.append(
                {
                    "run": info.run_id,
                    "variant": variant.label,
                    "status": info.status,
                    **{name: info.config.get(name) for name in SETTINGS},
                    BEST: _percent(best),
                    BEST_STEP: step,
                    FINAL: _percent(final),
                    "why": why or "",
                }
            )
    return pd.DataFrame(rows, columns=[*IDENTITY, *SETTINGS, BEST, BEST_STEP, FINAL, "why"])


def placed(table: pd.DataFrame) -> pd.Series:
    """A mask of the runs of ``table`` that have settings to place on the axes and filters. A run with none (its
    folder missing, its config unreadable) would make every setting look varied; it is left off the axes, and
    every filter keeps it listed, so it never vanishes from the table."""
    return table[[name for name in SETTINGS if name in table]].notna().any(axis=1)


def differing(table: pd.DataFrame) -> list[str]:
    """The settings whose value is not the same in every placed run of ``table`` (what "only settings that differ"
    keeps)."""
    runs = table[placed(table)]
    return [name for name in SETTINGS if name in runs and runs[name].astype(str).nunique(dropna=False) > 1]


def numeric(table: pd.DataFrame, name: str) -> bool:
    """Whether setting ``name`` is drawn on a number axis (ints and floats, not switches or choices)."""
    values = table.loc[placed(table), name]
    return FIELDS[name].kind in (int, float) and pd.to_numeric(values, errors="coerce").notna().all()


@dataclass
class Filter:
    """Which runs to keep: for a number setting the range ``(low, high)``, for any other the values allowed."""

    ranges: dict[str, tuple[float, float]]
    allowed: dict[str, list]

    def keep(self, table: pd.DataFrame) -> pd.Series:
        """A mask of the rows of ``table`` inside every range and among every setting's allowed values, and of
        the runs no filter can place (:func:`placed`)."""
        mask = pd.Series(True, index=table.index)
        for name, (low, high) in self.ranges.items():
            values = pd.to_numeric(table[name], errors="coerce")
            mask &= values.between(low, high)
        for name, values in self.allowed.items():
            mask &= table[name].astype(str).isin([str(v) for v in values])
        return mask | ~placed(table)


def run_curves(comparison: Comparison, runs: list[str], metric: str = "test_acc") -> pd.DataFrame:
    """The curve of ``metric`` of each run named in ``runs`` (the long frame of :mod:`cifarnet.analysis.curves`), one
    value per run and step (the final record repeats the last evaluation)."""
    chosen = [info for variant in comparison.variants for info in variant.runs if info.run_id in runs]
    frame = curves_frame(chosen, (metric,))
    return frame.drop_duplicates(["run", "metric", "step"], keep="last").reset_index(drop=True)
