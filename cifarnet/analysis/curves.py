"""Runs' metrics as pandas frames: learning curves, smoothing, x-axis choice, CSV export.

The dashboard overlays runs of different lengths and record rates, so curves are kept
in one long frame (``run, metric, step, epoch, time, value``): any subset of runs and
metrics plots against any x-axis without reshaping, and exports as one CSV.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd

from cifarnet.config import TrainConfig
from cifarnet.runs.folders import RunInfo
from cifarnet.runs.status import Status
from cifarnet.training.schedule import lr_at

# Which record kind carries each metric: test numbers only exist at evaluations, while
# train numbers and the learning rate are logged more often by "train" records.
METRICS: dict[str, tuple[str, str]] = {
    "test_acc": ("test accuracy (%)", "eval"),
    "train_acc": ("train accuracy (%)", "train"),
    "test_loss": ("test loss", "eval"),
    "train_loss": ("train loss", "train"),
    "lr": ("learning rate", "train"),
}
X_AXES: dict[str, str] = {"step": "step (batches)", "epoch": "epoch", "time": "training time (s)"}
CURVE_COLUMNS = ["run", "metric", "step", "epoch", "time", "value"]


def run_label(info: RunInfo) -> str:
    """The name a run goes by in tables and legends; shipped runs say so."""
    return f"{info.run_id} (shipped)" if info.pretrained else info.run_id


def curves_frame(runs: Sequence[RunInfo], metrics: Sequence[str] = tuple(METRICS)) -> pd.DataFrame:
    """One row per (run, metric, record) with every x-axis column present; accuracies in percent."""
    rows = []
    for info in runs:
        for record in info.metrics:
            for metric in metrics:
                value = record.get(metric)
                if record.get("kind") == METRICS[metric][1] and isinstance(value, (int, float)):
                    rows.append(
                        (
                            run_label(info),
                            metric,
                            record.get("step"),
                            record.get("epoch"),
                            record.get("time"),
                            float(value) * (100.0 if metric.endswith("_acc") else 1.0),
                        )
                    )
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def smooth(frame: pd.DataFrame, weight: float) -> pd.DataFrame:
    """Exponential moving average per run and metric (TensorBoard's debiased EMA).

    ``weight`` 0 leaves the curve alone; 0.9 averages over roughly the last ten points.
    The first point is not dragged towards zero because pandas' ``adjust=True`` debiases.
    """
    if weight <= 0 or frame.empty:
        return frame
    out = frame.copy()
    out["value"] = frame.groupby(["run", "metric"], sort=False)["value"].transform(
        lambda s: s.ewm(alpha=1.0 - min(weight, 0.999), adjust=True).mean()
    )
    return out


def curves_csv(frame: pd.DataFrame) -> bytes:
    """The long frame as UTF-8 CSV (one row per point; pivot in any spreadsheet)."""
    return frame.to_csv(index=False).encode()


def _notes(info: RunInfo) -> str:
    """Why a run is not healthy: its error text and any damaged files, in one line."""
    error = info.status_record.get("error") if info.status != Status.FINISHED else None
    return "; ".join(filter(None, [error, *info.damage]))


def runs_table(runs: Sequence[RunInfo]) -> pd.DataFrame:
    """One row per run: identity, the settings that matter most, outcome and notes."""
    rows = []
    for info in runs:
        cfg = info.config
        created = cfg.get("created")
        rows.append(
            {
                "run": run_label(info),
                "shipped": info.pretrained,
                "status": info.status,
                "arch": cfg.get("arch"),
                "norm": cfg.get("norm"),
                "gn_groups": cfg.get("gn_groups"),
                "ws": info.weight_standardised,
                "epochs": cfg.get("epochs"),
                "batch_size": cfg.get("batch_size"),
                "optimizer": cfg.get("optimizer"),
                "lr": cfg.get("lr"),
                "schedule": cfg.get("schedule"),
                "subset": cfg.get("subset"),
                "params": cfg.get("params"),
                "processes": info.world_size,
                "best_acc": _percent(info.best_acc),
                "final_acc": _percent(info.final_acc),
                "tta_acc": _percent((info.results or {}).get("tta_acc")),
                "duration_s": None if info.duration_s is None else round(info.duration_s, 1),
                "created": dt.datetime.fromtimestamp(created) if isinstance(created, (int, float)) else None,
                "notes": _notes(info),
            }
        )
    return pd.DataFrame(rows)


def _percent(value: float | None) -> float | None:
    return None if not isinstance(value, (int, float)) else round(100.0 * value, 2)


def lr_schedule(cfg: TrainConfig, points: int = 200) -> pd.DataFrame:
    """The learning rate ``cfg`` will follow, sampled at up to ``points`` steps."""
    total = cfg.total_steps
    steps = sorted({round(i * total / points) for i in range(points + 1)})
    return pd.DataFrame(
        {"step": steps, "epoch": [s / max(cfg.steps_per_epoch, 1) for s in steps], "lr": [lr_at(s, cfg) for s in steps]}
    )
