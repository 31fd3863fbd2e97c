"""Following a run from outside its process: which run to show, and its progress in words.

The Train page polls every second or two while a run trains, so this reads only what it
must: the ``status.json`` and ``config.json`` of each run folder, not every metrics file.
Which run a page shows is decided in one place, :func:`choose_run`, in a fixed order: the
run this browser tab launched or picked, then the run named in the page's address (so a
reload keeps it), then the newest live run (one started in another tab or from the
command line), then the newest run of all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cifarnet.config import TrainConfig
from cifarnet.errors import CifarnetError
from cifarnet.runs.folders import RunInfo, is_run_id, resolve_runs_dir, run_path, trainer_alive
from cifarnet.runs.records import read_config, read_status, recorded_status
from cifarnet.runs.status import LIVE, Status
from cifarnet.wording import plural


def _folders(runs_dir: str | os.PathLike | None) -> list[Path]:
    root = resolve_runs_dir(runs_dir)
    if not root.is_dir():
        return []
    # Only folders a run id can name: the Train page follows a run by its id (run_path), and a folder it cannot
    # name would be chosen, refused and chosen again.
    return [folder for folder in root.iterdir() if folder.is_dir() and is_run_id(folder.name)]


def live_run_ids(runs_dir: str | os.PathLike | None = None) -> list[str]:
    """Ids of the runs whose trainer is still alive, the most recently created first."""
    live: list[tuple[float, str]] = []
    for folder in _folders(runs_dir):
        status, _ = read_status(folder)
        if status and status.get("status") in LIVE and trainer_alive(folder, status):
            live.append((created(folder), folder.name))
    return [run_id for _, run_id in sorted(live, reverse=True)]


def newest_live_run(runs_dir: str | os.PathLike | None = None) -> str | None:
    """The id of the most recently created run whose trainer is still alive, if any."""
    live = live_run_ids(runs_dir)
    return live[0] if live else None


def is_live(run_id: str, runs_dir: str | os.PathLike | None = None) -> bool:
    """Whether the run's status says it trains and its trainer is alive (cheap: no metrics are read)."""
    try:
        folder = run_path(run_id, runs_dir)
    except CifarnetError:
        return False
    status, _ = read_status(folder)
    return bool(status) and status.get("status") in LIVE and trainer_alive(folder, status)


def is_pending(run_id: str, runs_dir: str | os.PathLike | None = None) -> bool:
    """Whether the run waits in the queue or trains: a page showing it keeps refreshing."""
    if is_live(run_id, runs_dir):
        return True
    try:
        return recorded_status(run_path(run_id, runs_dir)) == Status.QUEUED
    except CifarnetError:
        return False


def newest_run(runs_dir: str | os.PathLike | None = None) -> str | None:
    """The id of the most recently created run in the runs folder, whatever its status."""
    ages = [(created(folder), folder.name) for folder in _folders(runs_dir)]
    return max(ages)[1] if ages else None


def created(folder: Path) -> float:
    """When the run was created (its config's time stamp, else its folder's modification time)."""
    config, _ = read_config(folder)
    stamp = (config or {}).get("created")
    return float(stamp) if isinstance(stamp, (int, float)) else folder.stat().st_mtime


# How this tab came to follow its own run: it launched it, or the user picked it among the live runs.
OWN_REASONS = {
    "launched": "you launched it in this tab",
    "resumed": "you resumed it in this tab",
    "picked": "you chose it in this tab",
}
LINKED_REASON = "the page's address names it"  # a link or a reload: the page did not write that address itself


@dataclass(frozen=True)
class Choice:
    """The run a page shows (``None``: there is none) and why, in words for the user."""

    run_id: str | None
    why: str


def choose_run(own: tuple[str, str] | None, linked: str | None, runs_dir: str | os.PathLike | None = None) -> Choice:
    """Which run the Train page follows, in this order (a run that no longer exists is skipped):

    1. ``own``: ``(run id, how)`` of the run this tab launched or picked (``how`` is a key of ``OWN_REASONS``);
    2. ``linked``: the run named in the page's address, so a reload or a shared link shows the same run;
    3. the newest live run, wherever it was started;
    4. the newest run of all, so a reload after training still shows the last result.
    """
    if own and _exists(own[0], runs_dir):
        return Choice(own[0], OWN_REASONS.get(own[1], OWN_REASONS["picked"]))
    if linked and _exists(linked, runs_dir):
        return Choice(linked, LINKED_REASON)
    live = newest_live_run(runs_dir)
    if live:
        return Choice(live, "it is the newest run training (started in another tab or from the command line)")
    newest = newest_run(runs_dir)
    if newest:
        return Choice(newest, "it is the newest run; none is training")
    return Choice(None, "there is no run yet")


def _exists(run_id: str, runs_dir: str | os.PathLike | None) -> bool:
    try:
        run_path(run_id, runs_dir)
    except CifarnetError:
        return False
    return True


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


def elapsed_now(status_record: dict, now: float) -> float | None:
    """A live run's training time now: its last recorded elapsed time plus the time since the trainer wrote it,
    so the clock ticks between records (a step on a busy CPU can take seconds). None before the first record."""
    elapsed, updated = status_record.get("progress", {}).get("elapsed_s"), status_record.get("updated")
    if not isinstance(elapsed, (int, float)):
        return None
    return elapsed + max(0.0, now - updated) if isinstance(updated, (int, float)) else elapsed


def ended_text(status: str, progress: dict) -> str:
    """The progress bar's line for a run that is not training: how far it got, in what is known."""
    step, total = progress.get("step") or 0, progress.get("total_steps")
    if not step:
        return f"{status} before its first step"
    return f"{status} after {step} of {plural(total, 'step')}" if total else f"{status} after {plural(step, 'step')}"


def progress_text(progress: dict) -> str:
    """One line for the progress bar: epoch, step, throughput and time left."""
    if not progress:
        return "starting: loading data and building the model..."
    return (
        f"epoch {progress.get('epoch', 0):.2f} / {progress.get('epochs', 0):g} · "
        f"step {progress.get('step', 0)} / {progress.get('total_steps', 0)} · "
        f"{throughput_text(progress)} · ETA {clock(progress.get('eta_s'))}"
    )


def throughput_text(progress: dict) -> str:
    """Images a second, and on how many CPU threads when the trainer said (they change as runs share the CPU)."""
    threads = progress.get("threads")
    on = f" on {plural(threads, 'thread')}" if threads else ""
    return f"{progress.get('img_s') or 0:.0f} img/s{on}"


WS_WORDS = {
    "all": "weight-standardised convs",
    "except-depthwise": "weight-standardised convs except the depthwise ones",
}
NORM_NAMES = {"bn": "BatchNorm", "ln": "LayerNorm", "gn": "GroupNorm"}


def ws_note(infos: list[RunInfo]) -> str:
    """`` (LayerNorm and GroupNorm with weight-standardised convs ..., their default)`` for a caption over
    runs that differ only in their norm; empty when none of them is weight-standardised."""
    norms_by_ws: dict[str | None, list[str]] = {}
    for info in infos:
        norms_by_ws.setdefault(info.weight_standardised, []).append(NORM_NAMES.get(info.config.get("norm"), "?"))
    notes = [f"{' and '.join(norms_by_ws[ws])} with {words}" for ws, words in WS_WORDS.items() if ws in norms_by_ws]
    return f" ({'; '.join(notes)}, their default)" if notes else ""


def norm_words(cfg: TrainConfig) -> str:
    """``BN``, ``LN, weight-standardised convs``, ``GN (2 groups), weight-standardised convs except ...``."""
    norm = f"GN ({cfg.gn_groups} groups)" if cfg.norm == "gn" else cfg.norm.upper()
    ws = cfg.model_args["ws"]
    return norm + (f", {WS_WORDS[ws]}" if ws in WS_WORDS else "")


def describe(cfg: TrainConfig) -> str:
    """The configuration in one line, so the user sees what a launch will do before clicking."""
    norm = norm_words(cfg)
    affine = {"rotate": f"rotate ±{cfg.rotate_deg:g}°", "ssr": f"shift-scale-rotate ±{cfg.rotate_deg:g}°"}
    flip = "alternating flip" if cfg.flip_mode == "alternate" else "flip"
    switches = (
        ("crop", cfg.crop),
        (flip, cfg.flip),
        (affine.get(cfg.affine), cfg.affine != "none"),
        ("cutout", cfg.cutout),
        (f"mixup α {cfg.mixup:g}", cfg.mixup > 0),
        (f"cutmix α {cfg.cutmix:g}", cfg.cutmix > 0),
    )
    augs = [name for name, on in switches if on]
    tricks = (
        (f"{cfg.whiten} whitening stem", cfg.whiten != "off"),
        (f"weight EMA {cfg.ema:g}", cfg.ema > 0),
        (f"lookahead {cfg.lookahead:g}", cfg.lookahead > 0),
        (f"norm biases at {cfg.norm_bias_lr:g}x lr", cfg.norm_bias_lr != 1),
        ("norm scales frozen", cfg.freeze_norm_scales),
    )
    augs_text = ", ".join(augs) or "none"
    augs_text += "".join(f" · {name}" for name, on in tricks if on)
    speed = {"bf16": " · bfloat16 autocast", "fp32": " · fp32"}.get(cfg.precision, "")  # auto: nothing to say
    speed += " · torch.compile" if cfg.compile else ""
    speed += f" · {cfg.processes} processes (DDP)" if cfg.processes > 1 else ""
    return (
        f"{cfg.arch} · {norm} · {plural(cfg.epochs, 'epoch')} of {plural(cfg.steps_per_epoch, 'step')} "
        f"({cfg.total_steps} in all) · {cfg.train_size:,} train images · batch {cfg.batch_size} · "
        f"{cfg.optimizer} lr {cfg.peak_lr:g} ({cfg.schedule}) · augmentation: {augs_text}{speed}"
    )
