"""Early stopping of a sweep's runs that are clearly behind the others at the same step.

A sweep (:mod:`cifarnet.runs.sweep`) may name a rule in its experiment record (``"early_stop": "median"``). Each of its
trainers, after every evaluation, judges itself against the other runs of its experiment at that same step, read
from their ``metrics.jsonl``; a run judged behind asks itself to stop (its ``STOP`` file, with the rule's reason on
the second line) and ends as ``stopped early`` with that reason in ``status.json``, keeping its checkpoint and
records. The judging is done by the trainers themselves, so it needs no supervisor process and works the same
for the local queue and for runs on other machines that write into the same runs folder.

Both rules are asynchronous, as runs of a queue start at different times: a run is judged only against the runs
that already reached its step, and only once enough of them have (so the first runs of a sweep always go on).

- ``median``, the median stopping rule (Golovin et al., *Google Vizier*, 2017), made to stop only runs clearly
  behind: stop when the run's best test accuracy so far is below :data:`BEHIND` times the median of the other
  runs' best by the same step (the plain rule stops every run under the median, half of a fair sweep).
- ``asha``, successive halving as ASHA does it (Li et al., 2020) with every evaluation a rung: stop when the
  run's test accuracy at a step is not in the top 1/:data:`ETA` of the runs that reached that step. Aggressive by
  design: of runs that are all fair, it stops two in three.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from cifarnet.errors import CifarnetError, shown
from cifarnet.runs.records import (
    EXPERIMENTS_FOLDER,
    METRICS_FILE,
    STOP_FILE,
    experiment_files,
    read_json,
    read_metrics,
    write_file,
)

RULES = ("off", "median", "asha")
MIN_PEERS = 2  # other runs that must have reached a step before a run is judged there
ETA = 3  # ASHA's reduction factor: the top third goes on
BEHIND = 0.8  # the median rule stops a run whose best is under 80 % of the median: clearly behind, not unlucky


def check_rule(rule: str) -> str:
    """A rule's name, refused in one line when unknown."""
    if rule not in RULES:
        raise CifarnetError(f"early stopping rule {shown(rule)} is not known; allowed: {', '.join(RULES)}")
    return rule


def experiment_record(run: Path) -> dict | None:
    """The record of the experiment that holds the run in ``run`` (None when it is in none)."""
    for path in sorted(experiment_files(run.parent / EXPERIMENTS_FOLDER)):
        record, _ = read_json(path)
        variants = record.get("variants") if isinstance(record, dict) else None
        if isinstance(variants, dict) and any(isinstance(ids, list) and run.name in ids for ids in variants.values()):
            return record
    return None


def test_accuracies(run: Path) -> dict[int, float]:
    """Step -> test accuracy of each evaluation the run has logged (the last record of a step wins)."""
    records, _ = read_metrics(run / METRICS_FILE)
    return {
        int(r["step"]): float(r["test_acc"])
        for r in records
        if r.get("kind") == "eval" and isinstance(r.get("test_acc"), (int, float)) and isinstance(r.get("step"), int)
    }


def best_by(curve: dict[int, float], step: int) -> float:
    """The best accuracy of ``curve`` up to ``step``."""
    return max(value for at, value in curve.items() if at <= step)


def median_reason(own: dict[int, float], peers: list[dict[int, float]], step: int) -> str | None:
    """The median rule at ``step``: a reason to stop, or None."""
    reached = [best_by(curve, step) for curve in peers if curve and max(curve) >= step and min(curve) <= step]
    if len(reached) < MIN_PEERS:
        return None
    mine, median = best_by(own, step), statistics.median(reached)
    if mine >= BEHIND * median:
        return None
    return (
        f"median rule: best test accuracy {100 * mine:.1f}% by step {step} is below {100 * BEHIND:.0f}% of the "
        f"median {100 * median:.1f}% of the {len(reached)} other runs at that step"
    )


def asha_reason(own: dict[int, float], peers: list[dict[int, float]], step: int) -> str | None:
    """Successive halving at ``step``: a reason to stop, or None."""
    others = [curve[step] for curve in peers if step in curve]
    if len(others) < max(MIN_PEERS, ETA - 1):
        return None
    ranked = sorted([*others, own[step]], reverse=True)
    keep = max(1, len(ranked) // ETA)
    if own[step] >= ranked[keep - 1]:
        return None
    return (
        f"successive halving (ASHA, eta={ETA}): test accuracy {100 * own[step]:.1f}% at step {step} is not in "
        f"the top {keep} of the {len(ranked)} runs that reached it"
    )


JUDGES = {"median": median_reason, "asha": asha_reason}


def judge(run: Path, step: int) -> str | None:
    """Why the run in ``run`` should stop at ``step`` under its experiment's rule, or None (no rule, no sweep,
    not enough runs at that step yet, or not behind)."""
    record = experiment_record(run)
    rule = record.get("early_stop") if record else None
    if rule not in JUDGES:
        return None
    own = test_accuracies(run)
    if step not in own:
        return None
    peers = [
        test_accuracies(run.parent / str(run_id))
        for ids in record["variants"].values()
        if isinstance(ids, list)
        for run_id in ids
        if run_id != run.name
    ]
    return JUDGES[rule](own, peers, step)


def stop_if_behind(run: Path, step: int, trainer: str) -> str | None:
    """Judge the run at ``step``; when it is behind, ask its ``trainer``
    (its :func:`~cifarnet.runs.folders.trainer_identity`) to stop after this step, the reason on the ``STOP``
    file's second line. Returns the reason."""
    reason = judge(run, step)
    if reason:
        write_file(run / STOP_FILE, f"{trainer}\n{reason}".encode())
    return reason


def stop_reason(stop_file: Path) -> str | None:
    """The early-stopping reason a ``STOP`` file carries (None for a plain stop request)."""
    try:
        lines = stop_file.read_text().splitlines()
    except OSError:
        return None
    return (lines[1].strip() or None) if len(lines) > 1 else None
