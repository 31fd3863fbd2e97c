"""Following a live run from outside its process: which run to show, and its progress in words.

The Train page polls every second or two, so this reads only what it must: the
``status.json`` and ``config.json`` of each run folder, not every metrics file. Picking
the run from the folder (not from a browser session) is what lets a reload or a second
tab show the same live run.
"""

from __future__ import annotations

import os
from pathlib import Path

from cifarnet.config import TrainConfig
from cifarnet.records import read_config, read_status
from cifarnet.runs import LIVE, RunInfo, resolve_runs_dir, trainer_alive


def newest_live_run(runs_dir: str | os.PathLike | None = None) -> str | None:
    """The id of the most recently created run whose trainer is still alive, if any."""
    root = resolve_runs_dir(runs_dir)
    if not root.is_dir():
        return None
    live: list[tuple[float, str]] = []
    for folder in root.iterdir():
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        status, _ = read_status(folder)
        if not status or status.get("status") not in LIVE:
            continue
        if not trainer_alive(folder, status):
            continue
        live.append((_created(folder), folder.name))
    return max(live)[1] if live else None


def _created(folder: Path) -> float:
    config, _ = read_config(folder)
    created = (config or {}).get("created")
    return float(created) if isinstance(created, (int, float)) else folder.stat().st_mtime


def clock(seconds: float | None) -> str:
    """``1:05`` or ``1:02:03``; ``--:--`` while unknown (before the first throughput)."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_fraction(progress: dict) -> float:
    """Share of steps done, clipped to [0, 1] (a resumed run can report odd numbers briefly)."""
    total = progress.get("total_steps") or 0
    step = progress.get("step") or 0
    return 0.0 if total <= 0 else max(0.0, min(1.0, step / total))


def progress_text(progress: dict) -> str:
    """One line for the progress bar: epoch, step, throughput and time left."""
    if not progress:
        return "starting: loading data and building the model..."
    return (f"epoch {progress.get('epoch', 0):.2f} / {progress.get('epochs', 0):g} · "
            f"step {progress.get('step', 0)} / {progress.get('total_steps', 0)} · "
            f"{progress.get('img_s') or 0:.0f} img/s · ETA {clock(progress.get('eta_s'))}")


WS_WORDS = {"all": "weight-standardised convs",
            "except-depthwise": "weight-standardised convs except the depthwise ones"}
NORM_NAMES = {"bn": "BatchNorm", "ln": "LayerNorm", "gn": "GroupNorm"}


def ws_note(infos: list[RunInfo]) -> str:
    """`` (LayerNorm and GroupNorm with weight-standardised convs ..., their default)`` for a caption over
    runs that differ only in their norm; empty when none of them is weight-standardised."""
    norms_by_ws: dict[str | None, list[str]] = {}
    for info in infos:
        norms_by_ws.setdefault(info.weight_standardised, []).append(NORM_NAMES.get(info.config.get("norm"), "?"))
    notes = [f"{' and '.join(norms_by_ws[ws])} with {words}" for ws, words in WS_WORDS.items() if ws in norms_by_ws]
    return f" ({'; '.join(notes)}, their default)" if notes else ""


def describe(cfg: TrainConfig) -> str:
    """The configuration in one line, so the user sees what a launch will do before clicking."""
    norm = f"GN ({cfg.gn_groups} groups)" if cfg.norm == "gn" else cfg.norm.upper()
    ws = cfg.model_args["ws"]
    norm += f", {WS_WORDS[ws]}" if ws in WS_WORDS else ""
    affine = {"rotate": f"rotate ±{cfg.rotate_deg:g}°", "ssr": f"shift-scale-rotate ±{cfg.rotate_deg:g}°"}
    switches = (("crop", cfg.crop), ("flip", cfg.flip), (affine.get(cfg.affine), cfg.affine != "none"),
                ("cutout", cfg.cutout))
    augs = [name for name, on in switches if on]
    speed = {"bf16": " · bfloat16 autocast", "fp32": " · fp32"}.get(cfg.precision, "")  # auto: nothing to say
    speed += " · torch.compile" if cfg.compile else ""
    return (f"{cfg.arch} · {norm} · {cfg.epochs:g} epochs of {cfg.steps_per_epoch} steps "
            f"({cfg.total_steps} in all) · {cfg.train_size:,} train images · batch {cfg.batch_size} · "
            f"{cfg.optimizer} lr {cfg.lr:g} ({cfg.schedule}) · augmentation: {', '.join(augs) or 'none'}{speed}")
