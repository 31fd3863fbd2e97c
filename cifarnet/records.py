"""The files of a run folder, read and written in one place, and the one upgrade of older records.

Every reader of ``config.json``, ``status.json``, ``results.json``, ``metrics.jsonl`` and
``predictions.npz`` goes through this module, so a check of what a record holds has one home.
Readers never raise for a damaged file: they return what is readable and say what is wrong.

Run records carry a format version (``"format"`` in ``config.json``). Records written before it
existed are format 1; :func:`upgrade_config` and :func:`upgrade_model` turn a config or a
checkpoint's model dict of any older format into the current one, and they are the only place
that knows the old spellings.

Format 2 (current): ``dropout`` is ``null`` for the architecture's default; ``ws`` is a mode
(``auto``, ``off``, ``all``, ``except-depthwise``); ``precision`` and ``compile`` are present.
Format 1 (no ``"format"`` key): ``dropout`` -1 meant the architecture's default; ``ws`` was missing
(trained before weight standardisation: plain convs) or a switch (``true``/``"on"`` = every conv);
``precision`` and ``compile`` were missing (trained in fp32, not compiled).
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from cifarnet.config import TrainConfig, make_config
from cifarnet.errors import CifarnetError

FORMAT = 2
# What config.json holds besides the config's fields; "world_size" is how many processes trained the run last
# (absent: one), written by the trainer at each start (a resume may use another number).
RECORD_KEYS = ("format", "params", "created", "world_size")
# The values format-1 records trained with where a field was missing: not today's defaults (an old LN run
# resumed with ws=auto would rebuild a different model than its checkpoint holds).
FORMAT1_MISSING = {"ws": "off", "precision": "fp32", "compile": False}
FORMAT1_WS = {"on": "all", "true": "all", "1": "all", "false": "off", "0": "off"}


def _upgrade_ws(ws: Any) -> Any:
    """``ws`` as a mode: format 1's switch spellings (true/"on" = every conv) mapped, anything else kept as is."""
    if isinstance(ws, bool):
        return "all" if ws else "off"
    return FORMAT1_WS.get(ws, ws) if isinstance(ws, str) else ws


def upgrade_config(saved: dict) -> dict:
    """A ``config.json`` of any format as the current one; values it cannot read are left for validation to refuse."""
    if saved.get("format") == FORMAT:
        return saved
    upgraded = {**FORMAT1_MISSING, **saved, "format": FORMAT}
    upgraded["ws"] = _upgrade_ws(upgraded["ws"])
    dropout = upgraded.get("dropout")
    if isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and dropout < 0:
        upgraded["dropout"] = None  # format 1's -1: the architecture's default
    return upgraded


def upgrade_model(model: dict) -> dict:
    """A checkpoint's model dict (the arguments of :func:`cifarnet.models.build_model`) of any format as today's."""
    return {**model, "ws": _upgrade_ws(model.get("ws", FORMAT1_MISSING["ws"]))}


def config_record(cfg: TrainConfig, params: int) -> dict:
    """What ``config.json`` holds: the format, the config's fields, the parameter count and the creation time."""
    return {"format": FORMAT, **cfg.to_dict(), "params": params, "created": time.time()}


def record_world_size(folder: Path, world_size: int) -> None:
    """Note in ``config.json`` how many processes train the run (rewritten only when that changes)."""
    saved, problem = read_json(folder / "config.json")
    if saved is not None and saved.get("world_size") != world_size:
        write_json(folder / "config.json", {**saved, "world_size": world_size})


def write_json(path: Path, payload: dict) -> None:
    """Atomic replace: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> tuple[dict | None, str | None]:
    """(content, None) or (None, what is wrong) — never raises for a damaged file."""
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except (OSError, ValueError) as exc:
        return None, f"{path.name} is damaged ({type(exc).__name__})"
    if not isinstance(payload, dict):
        return None, f"{path.name} is damaged (not an object)"
    return payload, None


def read_config(folder: Path) -> tuple[dict | None, str | None]:
    """The run's ``config.json`` in the current format (see :func:`upgrade_config`), or what is wrong with it."""
    saved, problem = read_json(folder / "config.json")
    return (None, problem) if saved is None else (upgrade_config(saved), None)


def read_status(folder: Path) -> tuple[dict | None, str | None]:
    """The run's ``status.json``, or what is wrong with it."""
    return read_json(folder / "status.json")


def read_results(folder: Path) -> tuple[dict | None, str | None]:
    """The run's ``results.json`` (written once, at the end), or what is wrong with it."""
    return read_json(folder / "results.json")


def load_run_config(folder: Path) -> TrainConfig:
    """The validated config saved in a run folder, whatever format it was written in."""
    saved, problem = read_config(folder)
    if problem:
        raise CifarnetError(f"run {folder.name}: {problem}")
    return make_config({k: v for k, v in saved.items() if k not in RECORD_KEYS})


class MetricsLog:
    """Append-only JSON-lines log, flushed after every record so readers see it at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "a", buffering=1)

    def append(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def read_metrics(path: Path) -> tuple[list[dict], list[int]]:
    """All readable records, and the line numbers that were damaged (skipped, not fatal)."""
    records, damaged = [], []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError
            records.append(record)
        except ValueError:
            damaged.append(number)
    return records, damaged


def read_predictions(folder: Path) -> dict[str, np.ndarray] | None:
    """Test labels with top-5 classes and probabilities (None if the run has none yet)."""
    file = folder / "predictions.npz"
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as pack:
            return {key: pack[key] for key in pack.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # a damaged file is "none", not a crash
        return None
