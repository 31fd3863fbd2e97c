"""Experiments: named groups of runs that share every setting except the ones varied (by default the norm).

An experiment is one small JSON record in the runs folder's hidden ``.experiments/`` folder (hidden, so the Runs
page never mistakes it for a run); its runs stay ordinary run folders. The shipped BN/LN/GN trio, with its second
seed, is an experiment too, built from the pretrained runs so the comparison works offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cifarnet.records import read_json
from cifarnet.runs import PRETRAINED_DIR, SHIPPED_TRIO, resolve_runs_dir

EXPERIMENTS_FOLDER = ".experiments"
SHIPPED_NAME = "shipped"


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
        variants[f"norm={norm}"] = [p for p in (PRETRAINED_DIR / run_id, PRETRAINED_DIR / f"{run_id}-seed1")
                                    if p.is_dir()]
    norms = [label.split("=", 1)[1] for label in variants]
    return Experiment(SHIPPED_NAME, {"norm": norms}, [0, 1], variants, shipped=True)


def experiments_dir(runs_dir: str | os.PathLike | None = None) -> Path:
    """Where experiment records live: ``.experiments/`` inside the runs folder."""
    return resolve_runs_dir(runs_dir) / EXPERIMENTS_FOLDER


def read_experiment(path: Path, runs_dir: str | os.PathLike | None = None) -> Experiment:
    """One experiment record; its run ids resolve inside the runs folder. A damaged record is named, not raised."""
    record, problem = read_json(path)
    root = resolve_runs_dir(runs_dir)
    if problem or not isinstance(record, dict):
        return Experiment(path.stem, {}, [], {}, damage=[problem or "experiment record is not an object"])
    variants = {str(label): [root / str(run_id) for run_id in run_ids]
                for label, run_ids in (record.get("variants") or {}).items() if isinstance(run_ids, list)}
    return Experiment(path.stem, record.get("vary") or {}, record.get("seeds") or [0], variants)


def list_experiments(runs_dir: str | os.PathLike | None = None) -> list[Experiment]:
    """Every experiment in the runs folder, newest first, then the shipped one."""
    folder = experiments_dir(runs_dir)
    records = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []
    return [read_experiment(p, runs_dir) for p in records] + [shipped_experiment()]
