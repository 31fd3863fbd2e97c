"""The files of a run folder, read and written in one place, and the one upgrade of older records.

Every file name of a run folder, and of the runs folder's own files beside them, is spelt here only (the
``*_FILE`` and ``*_FOLDER`` names; ``tests/test_spelling.py`` checks), so a writer and its readers cannot disagree
on one. Every reader of ``config.json``, ``status.json``, ``results.json``, ``metrics.jsonl`` and
``predictions.npz`` goes through this module, so a check of what a record holds has one home: one schema
per record (each key's JSON type and finite range). Readers never raise for a damaged file or value: they
return what passes the schema and say what is wrong. Writers go through :func:`write_file` (atomic; a
failure removes its temporary file and names the file and the reason) or :class:`MetricsLog`; a status record is
built by :func:`status_record`, whoever writes it.

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

import contextlib
import io
import json
import math
import os
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cifarnet.config import FIELDS, TrainConfig, check_saved, make_config
from cifarnet.errors import SHOWN_CHARS, CifarnetError, WriteError, shown

# The files of a run folder (what each holds: cifarnet.runs.folders).
CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.npz"
MODEL_FILE = "model.pt"  # the final weights
BEST_FILE = "best.pt"  # the weights at the best evaluation so far
LAST_FILE = "last.pt"  # the whole training state, for a resume
LOG_FILE = "log.txt"  # the output of a trainer a launcher started
PID_FILE = "pid"  # the launcher's record of its trainer's process id
STOP_FILE = "STOP"  # a stop request, naming the trainer it is for
LOCK_FILE = ".trainer.lock"  # held by the run's one trainer while it lives (cifarnet.runs.slots)
# The runs folder's own files, beside its run folders: hidden, so no listing takes one for a run.
SLOTS_FOLDER = ".slots"  # one lock per slot of the run limit (cifarnet.runs.slots)
QUEUE_LOCK_FILE = ".queue.lock"  # held by the one queue worker (cifarnet.runs.queue)
QUEUE_LOG_FILE = ".queue.log"  # the queue worker's output
EXPERIMENTS_FOLDER = ".experiments"  # one record per experiment, NAME.json (cifarnet.runs.experiments)
EXPERIMENT_SUFFIX = ".json"

FORMAT = 2
# What config.json holds besides the config's fields; "world_size" is how many processes trained the run last, on
# "nodes" machines (absent: one), written by the trainer at each start (a resume may use other numbers).
RECORD_KEYS = ("format", "params", "created", "world_size", "nodes")
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
    """A checkpoint's model dict (the arguments of :func:`cifarnet.nets.models.build_model`) of any format as
    today's."""
    return {**model, "ws": _upgrade_ws(model.get("ws", FORMAT1_MISSING["ws"]))}


def write_config(folder: Path, cfg: TrainConfig, params: int) -> None:
    """A new run's ``config.json``: the format, the config's fields, the parameter count and the creation time."""
    write_json(folder / CONFIG_FILE, {"format": FORMAT, **cfg.to_dict(), "params": params, "created": time.time()})


def record_world_size(folder: Path, world_size: int, nodes: int = 1) -> None:
    """Note in ``config.json`` how many processes train the run, on how many machines (rewritten only when that
    changes)."""
    saved, problem = read_json(folder / CONFIG_FILE)
    if saved is not None and (saved.get("world_size"), saved.get("nodes", 1)) != (world_size, nodes):
        write_json(folder / CONFIG_FILE, {**saved, "world_size": world_size, "nodes": nodes})


def write_file(path: Path, content: bytes) -> None:
    """Atomic replace: a reader sees the old file or the new one, never half of one.

    Every record file of a run is written here (or appended by :class:`MetricsLog`), so a full disk or an
    unwritable folder has one answer: the temporary file is removed (it would keep the disk full) and a
    :class:`WriteError` names the file and the system's reason; the previous version stays as it was.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(content)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise WriteError.of(path, exc) from exc


def write_json(path: Path, payload: dict) -> None:
    """A record as indented JSON, through :func:`write_file`."""
    write_file(path, json.dumps(payload, indent=1).encode())


def status_record(status: str, pid: int | None = None, **fields: Any) -> dict:
    """A ``status.json`` record as every writer (creation, queue, launcher, trainer) builds it: the status, the
    trainer's pid (None before one exists or after it ended), when it was written, then ``fields``."""
    return {"status": status, "pid": pid, "updated": time.time(), **fields}


def write_status(folder: Path, record: dict, ending: bool = False) -> None:
    """The run's ``status.json``, through :func:`write_json`.

    An ``ending`` (how the run ended) is written even where the atomic replace cannot be (a full disk has no room
    for a second copy, a folder that became read-only refuses a new file): over the old file in place. A reader
    may catch it half-written, but a run that says ``running`` forever would hide why it ended. Raises
    :class:`WriteError` when even that fails.
    """
    path = folder / STATUS_FILE
    try:
        write_json(path, record)
    except WriteError:
        if not ending:
            raise
        try:
            path.write_text(json.dumps(record, indent=1))
        except OSError as exc:
            raise WriteError.of(path, exc) from exc


def experiment_file(folder: Path, name: str) -> Path:
    """Where the record of the experiment ``name`` lies in ``folder`` (:data:`EXPERIMENTS_FOLDER`, or a batch's
    staging folder)."""
    return folder / f"{name}{EXPERIMENT_SUFFIX}"


def experiment_files(folder: Path) -> list[Path]:
    """Every experiment record in ``folder``, in no particular order (none when there is no such folder)."""
    return list(folder.glob(f"*{EXPERIMENT_SUFFIX}")) if folder.is_dir() else []


def write_predictions(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """``predictions.npz``, compressed in memory (a few hundred KB) and written through :func:`write_file`."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_file(folder / PREDICTIONS_FILE, buffer.getvalue())


# The schema of every record: one check per key, each saying whether a value read back is what the trainer
# writes (its JSON type, finite, in range). Readers drop a value that fails and report it as damage, so a
# page never formats a string as a number or turns 1e20 into a date.
Check = Callable[[Any], bool]
EPOCH_SECONDS = 1e10  # time stamps beyond this (the year 2286) are damage, not dates


def number(low: float = -math.inf, high: float = math.inf) -> Check:
    """A finite JSON number in [low, high] (JSON's NaN and Infinity are numbers to the parser, not to a page)."""
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and low <= v <= high


def whole(low: int = 0, high: int = 2**53) -> Check:
    """A whole number in [low, high] (2.0 passes: JSON does not tell 2 from 2.0)."""
    return lambda v: number(low, high)(v) and float(v).is_integer()


def text(v: Any) -> bool:
    """A string."""
    return isinstance(v, str)


def optional(check: Check) -> Check:
    """``check``, or null (a value not known yet, like the ETA before the first step)."""
    return lambda v: v is None or check(v)


def dict_of(schema: dict[str, Check]) -> Check:
    """A nested object whose every key in ``schema`` that is present passes its check."""
    return lambda v: isinstance(v, dict) and not schema_problems(v, schema)


SHARE, SECONDS = number(0.0, 1.0), number(0.0, EPOCH_SECONDS)  # SECONDS: a time stamp or a duration
PROGRESS = {
    "step": whole(),
    "total_steps": whole(),
    "epoch": number(0.0),
    "epochs": number(0.0),
    "img_s": number(0.0),
    "eta_s": optional(SECONDS),
    "train_loss": number(),
    "train_acc": SHARE,
    "test_acc": optional(SHARE),
    "elapsed_s": SECONDS,
}
STATUS_SCHEMA = {
    "status": text,
    "pid": optional(whole(1, 2**31)),
    "updated": SECONDS,
    "finished": SECONDS,
    "error": optional(text),
    "reason": optional(text),
    "progress": dict_of(PROGRESS),
    "host": text,
    "node": text,
    "trainer": text,
    "cluster": optional(text),
}
CONFIG_SCHEMA = {
    "format": whole(1, 100),
    "params": whole(),
    "created": SECONDS,
    "world_size": whole(1, 2**16),
    "nodes": whole(1, 2**16),
}
CLASS_COUNT = 10


def class_name(v: Any) -> bool:
    """A short non-empty string: a class name is drawn in captions, ticks and menus, where 100 KB is damage."""
    return isinstance(v, str) and 0 < len(v) <= SHOWN_CHARS


RESULTS_SCHEMA = {
    "test_acc": SHARE,
    "test_loss": number(0.0),
    "tta_acc": optional(SHARE),
    "best_eval_acc": SHARE,
    "per_class_acc": lambda v: (
        isinstance(v, dict) and len(v) == CLASS_COUNT and all(map(SHARE, v.values())) and all(map(class_name, v))
    ),
    "confusion": lambda v: (
        isinstance(v, list)
        and len(v) == CLASS_COUNT
        and all(isinstance(row, list) and len(row) == CLASS_COUNT and all(map(whole(), row)) for row in v)
    ),
    "classes": lambda v: (
        isinstance(v, list) and len(v) == CLASS_COUNT == len(set(map(str, v))) and all(map(class_name, v))
    ),
    "steps": whole(),
    "epochs": number(0.0),
    "elapsed_s": SECONDS,
    "device": text,
    "precision": text,
}
METRICS_SCHEMA = {
    "kind": lambda v: v in ("train", "eval", "final"),
    "step": whole(),
    "epoch": number(0.0),
    "time": SECONDS,
    "lr": number(0.0),
    "train_loss": number(),
    "train_acc": SHARE,
    "test_loss": number(),
    "test_acc": SHARE,
    "tta_acc": optional(SHARE),
    "img_s": number(0.0),
    "threads": whole(1),
}
METRICS_REQUIRED = ("kind", "step")


def schema_problems(record: dict, schema: dict[str, Check]) -> list[str]:
    """The keys of ``record`` whose values fail their check in ``schema`` (keys it does not name are not checked)."""
    return [key for key, check in schema.items() if key in record and not check(record[key])]


def checked(record: dict, schema: dict[str, Check], name: str) -> tuple[dict, list[str]]:
    """``record`` without the values that fail ``schema``, and one line of damage per value dropped."""
    bad = schema_problems(record, schema)
    return (
        {k: v for k, v in record.items() if k not in bad},
        [f"{name}: {key}={shown(record[key])} is not a valid value" for key in bad],
    )


def read_json(path: Path) -> tuple[dict | None, str | None]:
    """(content, None) or (None, what is wrong) — never raises for a damaged file."""
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except (OSError, ValueError, RecursionError) as exc:
        return None, f"{path.name} is damaged ({type(exc).__name__})"
    if not isinstance(payload, dict):
        return None, f"{path.name} is damaged (not an object)"
    return payload, None


def read_record(path: Path, schema: dict[str, Check]) -> tuple[dict | None, list[str]]:
    """A JSON record with the values that fail ``schema`` dropped, and what is wrong with it (never raises)."""
    payload, problem = read_json(path)
    if payload is None:
        return None, [problem]
    return checked(payload, schema, path.name)


def _config_problems(config: dict) -> dict[str, str]:
    """Each config field of ``config`` that is not what a trainer writes, with why (see :func:`check_saved`)."""
    problems = {}
    for name in FIELDS.keys() & config.keys():
        try:
            check_saved(name, config[name])
        except CifarnetError as exc:
            problems[name] = f"{CONFIG_FILE}: {exc}"
    return problems


def read_config(folder: Path) -> tuple[dict | None, list[str]]:
    """The run's ``config.json`` in the current format (see :func:`upgrade_config`) with its damaged values
    dropped, and what is wrong with it."""
    saved, problems = read_record(folder / CONFIG_FILE, CONFIG_SCHEMA)
    if saved is None:
        return None, problems
    config = upgrade_config(saved)
    bad = _config_problems(config)
    return {k: v for k, v in config.items() if k not in bad}, problems + list(bad.values())


def read_status(folder: Path) -> tuple[dict | None, list[str]]:
    """The run's ``status.json`` with its damaged values dropped, and what is wrong with it."""
    return read_record(folder / STATUS_FILE, STATUS_SCHEMA)


def recorded_status(folder: Path) -> str | None:
    """The status the run's ``status.json`` says (None when it says none readable), taken at its word: cheap, and
    what the queue and its workers act on; whether a live run's trainer still lives is
    :func:`cifarnet.runs.folders.read_run`'s question."""
    return (read_status(folder)[0] or {}).get("status")


def read_results(folder: Path) -> tuple[dict | None, list[str]]:
    """The run's ``results.json`` (written once, at the end) with its damaged values dropped, and what is wrong;
    none yet is not damage."""
    if not (folder / RESULTS_FILE).exists():
        return None, []
    return read_record(folder / RESULTS_FILE, RESULTS_SCHEMA)


def load_run_config(folder: Path) -> TrainConfig:
    """The validated config saved in a run folder, whatever format it was written in."""
    saved, problems = read_config(folder)
    if problems:  # never train with a default where the record's own value was unreadable
        raise CifarnetError(f"run {folder.name}: {problems[0]}")
    return make_config({k: v for k, v in saved.items() if k not in RECORD_KEYS})


class MetricsLog:
    """Append-only JSON-lines log, flushed after every record so readers see it at once.

    A record that cannot be written raises :class:`WriteError` naming the file, like :func:`write_file`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = open(path, "a", buffering=1)
        except OSError as exc:
            raise WriteError.of(path, exc) from exc

    def append(self, record: dict) -> None:
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as exc:
            raise WriteError.of(self.path, exc) from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a flush that fails here was reported by append
            self._file.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _parse_metric(line: str) -> dict | None:
    """One metrics line as a record, or None when it is not a whole record of the schema."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if (
        not isinstance(record, dict)
        or any(key not in record for key in METRICS_REQUIRED)
        or schema_problems(record, METRICS_SCHEMA)
    ):
        return None
    return record


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
        record = _parse_metric(line)
        if record is None:
            damaged.append(number)
        else:
            records.append(record)
    return records, damaged


def cut_metrics(path: Path, step: int) -> None:
    """Cut the log back to what a checkpoint at ``step`` had recorded, so a resumed run does not log twice.

    The log is cut (in place, one truncation, so an open appender carries on) before the first line that is
    later than ``step``, is a ``final`` record (a resume that reaches the end writes its own), or is a line the
    trainer never finished (no newline: it was killed mid-write). Damaged whole lines before it are kept.
    """
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise WriteError.of(path, exc) from exc
    keep = 0
    for line in content.splitlines(keepends=True):
        record = _parse_metric(line.decode(errors="replace"))
        if not line.endswith(b"\n") or record is not None and (record["step"] > step or record["kind"] == "final"):
            break
        keep += len(line)
    if keep < len(content):
        try:
            os.truncate(path, keep)
        except OSError as exc:
            raise WriteError.of(path, exc) from exc


PREDICTION_KEYS = ("labels", "top_classes", "top_probs")
# The largest array a predictions file may declare: the 10,000 test images' top-10 as float64 are 800 KB; a
# hundred times that leaves room for larger test sets and still reads in a moment.
PREDICTION_BYTES = 80_000_000


def _predictions_fit(pack: dict[str, np.ndarray]) -> bool:
    """The arrays the trainer writes: N labels, and N rows of the top classes (at least 3) with their
    probabilities, every class a valid index and every probability in [0, 1]."""
    if any(key not in pack for key in PREDICTION_KEYS):
        return False
    labels, top, probs = (pack[key] for key in PREDICTION_KEYS)
    integer = all(a.dtype.kind in "iu" for a in (labels, top))
    return (
        integer
        and probs.dtype.kind == "f"
        and labels.ndim == 1
        and top.ndim == 2
        and top.shape[1] >= 3
        and probs.shape == top.shape == (len(labels), top.shape[1])
        and bool(((labels >= 0) & (labels < CLASS_COUNT)).all() and ((top >= 0) & (top < CLASS_COUNT)).all())
        and bool(np.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all())
    )


def _declared_bytes(pack: np.lib.npyio.NpzFile, key: str) -> int:
    """How many bytes array ``key`` of an open ``.npz`` says it holds, read from its header alone: a crafted header
    can declare 10^13 elements in a file of a few bytes, and numpy allocates what the header says before reading."""
    with pack.zip.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)  # 1.0, else the 2.0 layout (a bad one raises ValueError)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(member)
    return math.prod(shape) * dtype.itemsize


def read_predictions(folder: Path) -> dict[str, np.ndarray] | None:
    """Test labels with top-5 classes and probabilities (None if the run has none, or none that fit the schema).

    Each array's size is checked from its header before it is read (at most :data:`PREDICTION_BYTES`)."""
    file = folder / PREDICTIONS_FILE
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as pack:
            keys = [key for key in pack.files if key in PREDICTION_KEYS]
            if any(_declared_bytes(pack, key) > PREDICTION_BYTES for key in keys):
                return None
            arrays = {key: pack[key] for key in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):  # a damaged file is "none", not a crash
        return None
    return arrays if _predictions_fit(arrays) else None
