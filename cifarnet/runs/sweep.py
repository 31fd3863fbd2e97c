"""Sweeps: an experiment over several settings at once, a grid and random draws, each with every seed.

``sweep --grid norm=bn,ln,gn --grid lr=0.05,0.1 --random 4 weight_decay=log:1e-5:1e-3 --seeds 0 1`` trains every
combination of the grid with each of the 4 random draws (a draw picks a value for every random setting), each
with every seed: 3 x 2 x 4 x 2 = 48 runs. A sweep is an ordinary experiment (:mod:`cifarnet.runs.experiments`): one
record, its runs queued under the run limit, cancelled, stopped and compared like any other; ``compare --vary``
is the sweep with one grid setting and no draws. Everything is checked before anything is created, and the
number of runs is capped (:data:`cifarnet.runs.experiments.MAX_RUNS`) unless the user raises the cap deliberately.

The draws come from their own seeded generator (``--sample-seed``), so a sweep's plan is reproducible, and are
rounded to three significant digits: labels and run ids stay readable, and a repeated draw is dropped.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from typing import Any

from cifarnet.config import FIELDS, TrainConfig, parse_value
from cifarnet.errors import CifarnetError, shown
from cifarnet.runs.cluster import check_cluster
from cifarnet.runs.early_stop import check_rule
from cifarnet.runs.experiments import (
    DEFAULT_VARY,
    MAX_RUNS,
    NOT_VARIED,
    VARIABLE,
    Experiment,
    Plan,
    grid_points,
    launch_experiment,
    plan_experiment,
)

SCALES = ("log", "uniform")  # how a random setting is drawn between its bounds
MAX_CAP = 1000  # the most a user may raise the run cap to: beyond it a sweep is a typo, not a plan


@dataclass(frozen=True)
class Range:
    """One random setting: drawn between ``low`` and ``high``, evenly on a log or a linear scale."""

    name: str
    scale: str
    low: float
    high: float

    def draw(self, rng: random.Random) -> Any:
        """One value, rounded to three significant digits (whole numbers for a whole-number setting)."""
        if self.scale == "log":
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        if FIELDS[self.name].kind is int:
            return round(value)
        return float(f"{value:.3g}")


def parse_range(spec: str) -> Range:
    """``lr=log:0.01:0.5`` or ``weight_decay=uniform:0:1e-3`` as a :class:`Range`, both bounds checked through
    the setting's own declaration; anything else is refused in one line."""
    name, sep, rest = str(spec).partition("=")
    name = name.strip().replace("-", "_")
    parts = rest.split(":")
    if not sep or len(parts) != 3:
        raise CifarnetError(f"--random {shown(spec)} is not FIELD=SCALE:LOW:HIGH; e.g. lr=log:0.01:0.5")
    if name not in FIELDS:
        raise CifarnetError(f"--random {shown(spec)}: no setting {shown(name)}; allowed: {', '.join(VARIABLE)}")
    if name in NOT_VARIED:
        raise CifarnetError(f"--random {shown(spec)}: {name} is not varied ({NOT_VARIED[name]})")
    if FIELDS[name].kind not in (int, float):
        raise CifarnetError(f"--random {shown(spec)}: {name} is not a number; give its values with --grid")
    scale = parts[0].strip()
    if scale not in SCALES:
        raise CifarnetError(f"--random {shown(spec)}: scale {shown(scale)} is not known; allowed: {', '.join(SCALES)}")
    try:
        low, high = (float(parse_value(name, text.strip())) for text in parts[1:])
    except CifarnetError as exc:
        raise CifarnetError(f"--random {shown(spec)}: {exc}") from None
    if not low < high:
        raise CifarnetError(f"--random {shown(spec)}: the low bound must be below the high one")
    if scale == "log" and low <= 0:
        raise CifarnetError(f"--random {shown(spec)}: a log scale needs a low bound above 0")
    return Range(name, scale, low, high)


def parse_random(texts: list[str] | None) -> tuple[int, list[Range]]:
    """``--random N SPEC [SPEC ...]``: how many draws, and the settings drawn."""
    if not texts:
        return 0, []
    count, *specs = texts
    try:
        draws = int(count)
    except ValueError:
        raise CifarnetError(
            f"--random {shown(count)}: give the number of draws first, then FIELD=SCALE:LOW:HIGH "
            "(e.g. --random 8 lr=log:0.01:0.5)"
        ) from None
    if draws < 1 or not specs:
        raise CifarnetError("--random needs 1 or more draws and at least one FIELD=SCALE:LOW:HIGH")
    ranges = [parse_range(spec) for spec in specs]
    names = [r.name for r in ranges]
    if len(set(names)) < len(names):
        raise CifarnetError("--random names a setting twice; give each setting one range")
    return draws, ranges


def draws_of(ranges: list[Range], count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` draws of every random setting from a generator seeded by ``seed``; repeated draws dropped."""
    rng, found = random.Random(seed), []
    for _ in range(count):
        draw = {r.name: r.draw(rng) for r in ranges}
        if draw not in found:
            found.append(draw)
    return found


def sweep_points(grid: dict[str, list], draws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every grid combination with every draw (just one of them when the other is empty)."""
    combos = grid_points(grid) if grid else [{}]
    return [{**combo, **draw} for combo in combos for draw in draws or [{}]]


def check_cap(value: Any) -> int:
    """The run cap a user asked for (``--max-runs``): a whole number from 1 to :data:`MAX_CAP`."""
    try:
        cap = int(value)
    except (TypeError, ValueError):
        cap = 0
    if not 1 <= cap <= MAX_CAP or str(value).strip() != str(cap):
        raise CifarnetError(f"--max-runs {shown(value)} is not allowed; allowed: a whole number from 1 to {MAX_CAP}")
    return cap


def plan_sweep(
    base: TrainConfig,
    grid: dict[str, list] | None = None,
    ranges: list[Range] | None = None,
    count: int = 0,
    seeds: list[int] | None = None,
    name: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    max_runs: int = MAX_RUNS,
    sample_seed: int = 0,
    early_stop: str = "off",
    data_dir: str | os.PathLike | None = None,
    cluster: str | None = None,
) -> Plan:
    """A sweep checked run by run, nothing created yet. No grid and no draws is the default norm comparison.
    ``cluster``: its runs train on the Ray cluster at this address ("" for ``$RAY_ADDRESS``), checked first; None:
    on this machine."""
    cluster = check_cluster(cluster) if cluster is not None else None
    ranges = ranges or []
    clash = sorted(set(grid or {}) & {r.name for r in ranges})
    if clash:
        raise CifarnetError(f"{clash[0]} is both in --grid and --random; give it one way")
    check_rule(early_stop)
    draws = draws_of(ranges, count, sample_seed) if ranges else []
    points = sweep_points(grid or ({} if draws else DEFAULT_VARY), draws)
    spec = (
        {
            "grid": grid or {},
            "random": {r.name: f"{r.scale}:{r.low:g}:{r.high:g}" for r in ranges},
            "draws": count,
            "sample_seed": sample_seed,
        }
        if ranges
        else {}
    )
    extra = {
        **({"sweep": spec} if spec else {}),
        **({"early_stop": early_stop} if early_stop != "off" else {}),
        **({"cluster": cluster} if cluster else {}),
    }
    return plan_experiment(base, None, seeds, name, runs_dir, data_dir, points=points, max_runs=max_runs, extra=extra)


def start_sweep(
    base: TrainConfig,
    grid: dict[str, list] | None = None,
    ranges: list[Range] | None = None,
    count: int = 0,
    seeds: list[int] | None = None,
    name: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    max_runs: int = MAX_RUNS,
    sample_seed: int = 0,
    early_stop: str = "off",
    cluster: str | None = None,
) -> Experiment:
    """Plan (every check), then queue: what ``sweep``, ``compare`` and the Train page's buttons do."""
    plan = plan_sweep(
        base, grid, ranges, count, seeds, name, runs_dir, max_runs, sample_seed, early_stop, data_dir, cluster
    )
    return launch_experiment(plan, runs_dir, data_dir)
