"""Experiments: named groups of runs that share every setting except the ones varied (by default the norm).

An experiment is one small JSON record in the runs folder's hidden ``.experiments/`` folder (hidden, so the Runs
page never mistakes it for a run); its runs stay ordinary run folders. The shipped BN/LN/GN trio, with its second
seed, is an experiment too, built from the pretrained runs so the comparison works offline.

Writing one (:func:`plan_experiment`, then :func:`launch_experiment`): every varied value is checked through the
config's own declaration, and every run's whole config, name and folder, and what its trainer would check at its
start (run limit, device, data), before anything is created; then its runs are queued all together or not at all
(:class:`cifarnet.runs.queue.QueuedBatch`) and start as slots of the run limit free.

Reading one's runs: :func:`experiment_runs` only, for every page, command and the comparison, so they agree. A run
whose folder is gone stays listed, with the status ``missing`` (shown, never silently dropped), and is not pending
(:func:`pending`), so nothing waits for it forever.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarnet.config import FIELDS, NAME_PATTERN, TrainConfig, make_config, parse_value
from cifarnet.errors import CifarnetError, shown
from cifarnet.runs.folders import (
    PRETRAINED_DIR,
    SHIPPED_TRIO,
    RunInfo,
    check_not_shipped,
    is_run_id,
    read_run_cached,
    resolve_runs_dir,
)
from cifarnet.runs.launch import check_startable
from cifarnet.runs.monitor import progress_fraction
from cifarnet.runs.queue import QueuedBatch, check_queue_files, ensure_worker
from cifarnet.runs.records import EXPERIMENTS_FOLDER, experiment_file, experiment_files, read_json, write_json
from cifarnet.runs.slots import check_plain
from cifarnet.runs.status import PENDING, Status

SHIPPED_NAME = "shipped"
MAX_RUNS = 32  # runs in one experiment: variants x seeds
NOT_VARIED = {"name": "each run is named after its experiment", "seed": "give several seeds with --seeds"}
DEFAULT_VARY = {"norm": ["bn", "ln", "gn"]}  # the course exercise's comparison, in its order
VARIABLE = tuple(name for name in FIELDS if name not in NOT_VARIED)  # the settings an experiment may vary
ExperimentRun = tuple[str, RunInfo]  # (variant label, the run as read now)


@dataclass
class Experiment:
    """What a reader knows about one experiment: its varied settings and which runs carry each variant."""

    name: str
    vary: dict[str, list]  # field -> the values it takes, e.g. {"norm": ["bn", "ln", "gn"]}
    seeds: list[int]
    variants: dict[str, list[Path]]  # variant label (e.g. "norm=bn") -> its runs' folders, one per seed
    shipped: bool = False
    damage: list[str] = field(default_factory=list)


def shipped_experiment() -> Experiment:
    """The shipped BN/LN/GN trio, seeds 0 and 1 (the ``-seed1`` runs beside each shipped run)."""
    variants = {}
    for run_id in SHIPPED_TRIO:
        norm = run_id.rsplit("-", 1)[1]
        variants[f"norm={norm}"] = [
            p for p in (PRETRAINED_DIR / run_id, PRETRAINED_DIR / f"{run_id}-seed1") if p.is_dir()
        ]
    norms = [label.split("=", 1)[1] for label in variants]
    return Experiment(SHIPPED_NAME, {"norm": norms}, [0, 1], variants, shipped=True)


def experiments_dir(runs_dir: str | os.PathLike | None = None) -> Path:
    """Where experiment records live: ``.experiments/`` inside the runs folder."""
    return resolve_runs_dir(runs_dir) / EXPERIMENTS_FOLDER


def read_experiment(path: Path, runs_dir: str | os.PathLike | None = None) -> Experiment:
    """One experiment record; its run ids resolve inside the runs folder. A damaged record is named, not raised:
    what does not read as the record :func:`launch_experiment` writes (variants that are not label -> run ids, a
    run id outside the runs folder, a run named twice) is left out and said in ``damage``."""
    record, problem = read_json(path)
    root = resolve_runs_dir(runs_dir)
    if problem or not isinstance(record, dict):
        return Experiment(path.stem, {}, [], {}, damage=[problem or "experiment record is not an object"])
    listed = record.get("variants")
    damage = (
        []
        if isinstance(listed, dict)
        else [f"{path.name}: variants={shown(listed)} is not an object of variant -> run ids"]
    )
    variants: dict[str, list[Path]] = {}
    seen: set[str] = set()
    for label, run_ids in (listed if isinstance(listed, dict) else {}).items():
        if not isinstance(run_ids, list):
            damage.append(f"{path.name}: variant {shown(label)} lists {shown(run_ids)}, not a list of run ids")
            continue
        for run_id in run_ids:
            if not is_run_id(run_id):
                damage.append(f"{path.name}: variant {shown(label)} names {shown(run_id)}, not a run id")
            elif run_id in seen:
                damage.append(f"{path.name}: run {shown(run_id)} is listed twice; counted once")
            else:
                seen.add(run_id)
                variants.setdefault(str(label), []).append(root / run_id)
    vary, seeds = record.get("vary"), record.get("seeds")
    return Experiment(
        path.stem,
        vary if isinstance(vary, dict) else {},
        seeds if isinstance(seeds, list) else [0],
        variants,
        damage=damage,
    )


def _modified(path: Path) -> float:
    """When a record changed (a dangling link: when the link did), for newest-first order; never raises."""
    for follow in (True, False):
        try:
            return path.stat(follow_symlinks=follow).st_mtime
        except OSError:
            continue
    return 0.0


def list_experiments(runs_dir: str | os.PathLike | None = None) -> list[Experiment]:
    """Every experiment in the runs folder, newest first, then the shipped one (a damaged record is listed with
    its damage)."""
    folder = experiments_dir(runs_dir)
    records = sorted(experiment_files(folder), key=_modified, reverse=True)
    return [read_experiment(p, runs_dir) for p in records] + [shipped_experiment()]


def parse_vary(specs: list[str]) -> dict[str, list]:
    """``["norm=bn,ln,gn", "lr=0.05,0.1"]`` as ``{"norm": ["bn", "ln", "gn"], "lr": [0.05, 0.1]}``, each value
    checked through its field's declaration; an unknown field, a bad, repeated or missing value is refused."""
    vary: dict[str, list] = {}
    for spec in specs:
        name, sep, listed = str(spec).partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise CifarnetError(f"--vary {shown(spec)} is not FIELD=V1,V2,...; e.g. norm=bn,ln,gn")
        if name not in FIELDS:
            raise CifarnetError(f"--vary {shown(spec)}: no setting {shown(name)}; allowed: {', '.join(VARIABLE)}")
        if name in NOT_VARIED:
            raise CifarnetError(f"--vary {shown(spec)}: {name} is not varied ({NOT_VARIED[name]})")
        if name in vary:
            raise CifarnetError(f"--vary names {name} twice; give all its values in one list")
        texts = [text.strip() for text in listed.split(",")]
        if not any(texts):
            raise CifarnetError(f"--vary {shown(spec)} has no values; give one or more, comma-separated")
        if "" in texts:
            raise CifarnetError(f"--vary {shown(spec)} has an empty value; separate values by single commas")
        try:
            values = [parse_value(name, text) for text in texts]
        except CifarnetError as exc:
            raise CifarnetError(f"--vary {shown(spec)}: {exc}") from None
        if len(set(values)) < len(values):  # as the trainer uses them: 0.1 and 0.10 are one value, 0.1000001 another
            raise CifarnetError(f"--vary {shown(spec)} repeats a value; each value once")
        vary[name] = values
    return vary


def parse_seeds(texts: list[Any]) -> list[int]:
    """The seeds of an experiment, each checked like the seed setting; repeated seeds are refused."""
    seeds = [parse_value("seed", text) for text in texts]
    if not seeds or len(set(seeds)) < len(seeds):
        raise CifarnetError(f"seeds {shown(' '.join(map(str, texts)))}: give one or more different seeds")
    return seeds


def spelled(value: Any) -> str:
    """A varied value as labels and run ids spell it: ``on``/``off``, ``auto`` for None, numbers short."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "auto"
    if isinstance(value, float):  # short, unless that would read as another number (0.1000001 is not 0.1)
        short = format(value, "g")
        return short if float(short) == value else repr(value)
    return str(value)


def variant_label(values: dict[str, Any]) -> str:
    """The label of one variant, e.g. ``norm=bn`` or ``norm=gn lr=0.05``."""
    return " ".join(f"{name}={spelled(value)}" for name, value in values.items())


def _run_id(experiment: str, values: dict[str, Any], seed: int, number: int) -> str:
    """A readable run id (``EXP-norm-bn-s0``) in the allowed alphabet; the variant's number when that is too long."""
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(f"{n}-{spelled(v)}" for n, v in values.items()))
    run_id = f"{experiment}-{readable}-s{seed}".replace("..", "_")
    return run_id if NAME_PATTERN.match(run_id) else f"{experiment}-v{number}-s{seed}"


@dataclass
class Plan:
    """An experiment checked and ready to queue: every run's validated config, by variant label."""

    name: str
    vary: dict[str, list]
    seeds: list[int]
    runs: dict[str, list[TrainConfig]]
    extra: dict[str, Any] = field(default_factory=dict)  # more of the record: a sweep's spec, its stopping rule


def grid_points(vary: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of the varied values, the first setting's values changing slowest."""
    return [dict(zip(vary, combination)) for combination in itertools.product(*vary.values())]


def varied_values(points: list[dict[str, Any]]) -> dict[str, list]:
    """Each setting the points vary, with its distinct values in the order they first come."""
    vary: dict[str, list] = {}
    for point in points:
        for name, value in point.items():
            if value not in vary.setdefault(name, []):
                vary[name].append(value)
    return vary


def plan_experiment(
    base: TrainConfig,
    vary: dict[str, list] | None = None,
    seeds: list[int] | None = None,
    name: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    points: list[dict[str, Any]] | None = None,
    max_runs: int = MAX_RUNS,
    extra: dict[str, Any] | None = None,
) -> Plan:
    """Every run of the experiment checked (settings, names, free folders, then what its trainer would refuse:
    run limit, device, data; and the runs folder's own files) before anything is created.

    The variants are ``points`` (a sweep's, :mod:`cifarnet.runs.sweep`), else every combination of ``vary``, which
    defaults to the three norms; ``seeds`` defaults to the base config's seed, ``name`` to a time stamp. More
    than ``max_runs`` runs are refused: a cap the user raises deliberately (``--max-runs``), not by accident.
    """
    points = points or grid_points(vary or DEFAULT_VARY)
    vary, seeds = varied_values(points), seeds or [base.seed]
    count = len(points) * len(seeds)
    if count > max_runs:
        raise CifarnetError(
            f"the experiment would train {count} runs; allowed: at most {max_runs} "
            "(fewer values or seeds, or raise the cap with --max-runs)"
        )
    name = name or time.strftime("%Y%m%d-%H%M%S")
    if not NAME_PATTERN.match(name) or ".." in name or len(name) > 40:
        raise CifarnetError(
            f"experiment name {shown(name)} is not allowed; use 1-40 letters, digits, '_', '.' or "
            "'-', starting with a letter or digit"
        )
    if name == SHIPPED_NAME:
        raise CifarnetError(f"experiment name {shown(name)} is the shipped experiment's; choose another name")
    if experiment_file(experiments_dir(runs_dir), name).exists():
        raise CifarnetError(f"an experiment named {shown(name)} already exists; choose another name")
    root, runs = resolve_runs_dir(runs_dir), {}
    for number, values in enumerate(points):
        configs = [
            make_config({**values, "seed": seed, "name": _run_id(name, values, seed, number)}, base) for seed in seeds
        ]
        for cfg in configs:
            check_not_shipped(cfg.name)
        taken = [cfg.name for cfg in configs if (root / cfg.name).exists()]
        if taken:
            raise CifarnetError(f"a run named {shown(taken[0])} already exists; choose another experiment name")
        runs[variant_label(values)] = configs
    for configs in runs.values():
        for cfg in configs:
            check_startable(cfg, data_dir)
    check_queue_files(root)
    check_plain(experiments_dir(runs_dir), folder=True)
    return Plan(name, vary, seeds, runs, dict(extra or {}))


def launch_experiment(
    plan: Plan, runs_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None
) -> Experiment:
    """Queue the plan's runs with its record, all or nothing; start those that fit under the run limit now and
    make sure the queue worker starts the others."""
    root = resolve_runs_dir(runs_dir)
    with QueuedBatch(root, data_dir, plan.extra.get("cluster")) as batch:  # a cluster's address, if for one
        variants = {label: [batch.add(cfg) for cfg in configs] for label, configs in plan.runs.items()}
        record = experiment_file(batch.stage, plan.name)
        write_json(
            record,
            {
                "name": plan.name,
                "vary": plan.vary,
                "seeds": plan.seeds,
                "variants": {label: [p.name for p in paths] for label, paths in variants.items()},
                **plan.extra,
            },
        )
        batch.publish(record, experiments_dir(root) / record.name)
    ensure_worker(root)
    return Experiment(plan.name, plan.vary, plan.seeds, variants)


def start_experiment(
    base: TrainConfig,
    vary: dict[str, list] | None = None,
    seeds: list[int] | None = None,
    name: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Experiment:
    """Plan (every check), then queue: what the CLI's ``compare`` and the Train page's buttons do."""
    return launch_experiment(plan_experiment(base, vary, seeds, name, runs_dir, data_dir), runs_dir, data_dir)


def newest_pending(runs_dir: str | os.PathLike | None = None) -> Experiment | None:
    """The newest experiment of the runs folder that still has runs waiting or training (what a page that did
    not launch it, e.g. a new tab or after a dashboard restart, shows), even when newer ones have ended: its queued
    runs must stay within reach of a Cancel."""
    return next((e for e in list_experiments(runs_dir) if not e.shipped and pending(experiment_runs(e))), None)


def experiment_rows(runs: list[ExperimentRun]) -> list[dict]:
    """An experiment's runs (as :func:`experiment_runs` read them) as table rows: variant, seed, status, progress
    and test accuracy; a missing run keeps its row, so its absence shows."""
    rows = []
    for label, info in runs:
        rows.append(
            {
                "run": info.run_id,
                "variant": label,
                "seed": info.config.get("seed"),
                "status": info.status,
                "progress": 1.0 if info.status == Status.FINISHED else progress_fraction(info.progress),
                "test accuracy": "–" if info.final_acc is None else f"{100 * info.final_acc:.2f} %",
            }
        )
    return rows


def missing_run(path: Path) -> RunInfo:
    """A run the experiment names whose folder is gone (deleted, or the record is wrong): listed, so the user sees
    it is missing rather than the experiment silently shrinking, and ended, so nothing waits for it."""
    return RunInfo(path.name, path, {}, Status.MISSING, {"error": "its run folder is missing"}, [], None)


def experiment_runs(experiment: Experiment) -> list[ExperimentRun]:
    """(variant label, run as read now) for every run the experiment names, in its record's order: the one reader
    of an experiment's runs (pages, ``compare``, the comparison), so they agree on what it holds.

    Ended runs come from :func:`read_run_cached`'s memory (pages re-read an experiment every few seconds while it
    trains); a run whose folder is gone is :func:`missing_run`."""
    return [
        (label, read_run_cached(path, pretrained=experiment.shipped) if path.is_dir() else missing_run(path))
        for label, paths in experiment.variants.items()
        for path in paths
    ]


def pending(runs: list[ExperimentRun]) -> bool:
    """Whether any of an experiment's runs still waits or trains: the one test of "pending" its readers use (pages
    keep refreshing and ``compare`` keeps following while it holds). A missing run never is: nothing would end it.
    Takes the runs already read, so a page that needs both the runs and this answer reads the experiment once."""
    return any(info.status in PENDING for _, info in runs)


def load_experiment(name: str, runs_dir: str | os.PathLike | None = None) -> Experiment:
    """The experiment named ``name`` in the runs folder (the shipped one by its name)."""
    if name == SHIPPED_NAME:
        return shipped_experiment()
    path = experiment_file(experiments_dir(runs_dir), name)
    if not NAME_PATTERN.match(str(name)) or not path.is_file():
        raise CifarnetError(f"no experiment {shown(name)} in {resolve_runs_dir(runs_dir)}")
    return read_experiment(path, runs_dir)
