"""The training configuration: one dataclass, one table of rules, one validator.

Every way a value enters (CLI flag, sidebar widget, URL query string, a run's saved
``config.json``) goes through :func:`make_config`, which checks each field against the
``FIELDS`` table below and refuses a bad value with a message naming the field, the
value and what is allowed — before any work starts. The CLI builds its flags and the
dashboard its widgets from the same table, so limits are written once.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from cifarnet.errors import CifarnetError, shown
from cifarnet.models import ARCHS, DEFAULT_DROPOUT, WS_MODES, build_model, default_ws
from cifarnet.norms import NORMS

OPTIMIZERS = ("nesterov", "sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
AFFINES = ("none", "rotate", "ssr")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Field:
    """Rules for one config field: kind, limits or choices, and the help text users see."""

    kind: type
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    aliases: tuple[tuple[str, str], ...] = ()  # other spellings accepted for a choice (on -> all)


FIELDS: dict[str, Field] = {
    "arch": Field(str, "architecture", choices=ARCHS),
    "norm": Field(str, "normalisation: bn (BatchNorm), ln (LayerNorm = GroupNorm(1,C)), gn (GroupNorm)", choices=NORMS),
    "gn_groups": Field(int, "GroupNorm groups (must divide every layer's channels)", 1, 128),
    "dropout": Field(float, "dropout after every conv unit; -1 = the architecture's default", -1, 0.9),
    "ws": Field(str, "weight standardisation: convs that feed a norm use zero-mean, unit-variance filters; all of "
                "them, all except the depthwise ones, or off; auto = except-depthwise for s9 with LN or GN, off with "
                "BN and for seed (the write-up's network)",
                choices=("auto", *WS_MODES),
                aliases=(("on", "all"), ("true", "all"), ("1", "all"), ("false", "off"), ("0", "off"))),
    "epochs": Field(float, "epochs to train (fractions allowed for short runs)", 0.05, 500),
    "batch_size": Field(int, "images per step", 2, 4096),
    "optimizer": Field(str, "optimizer", choices=OPTIMIZERS),
    "lr": Field(float, "peak learning rate", 1e-6, 10.0),
    "momentum": Field(float, "SGD momentum / Adam beta1", 0.0, 0.999),
    "schedule": Field(str, "learning-rate schedule, stepped every batch", choices=SCHEDULES),
    "warmup": Field(float, "onecycle: fraction of training spent warming up", 0.0, 0.9),
    "weight_decay": Field(float, "weight decay", 0.0, 0.1),
    "label_smoothing": Field(float, "label smoothing", 0.0, 0.5),
    "crop": Field(bool, "random translate: pad then random-crop back to 32x32"),
    "crop_pad": Field(int, "padding for the random crop (pixels)", 1, 8),
    "flip": Field(bool, "random horizontal flip"),
    "affine": Field(str, "none, rotate (random rotation) or ssr (shift-scale-rotate)", choices=AFFINES),
    "rotate_deg": Field(float, "largest rotation in degrees for rotate / ssr", 0.0, 45.0),
    "cutout": Field(bool, "cutout (CoarseDropout): one square hole per image"),
    "cutout_size": Field(int, "cutout square side (pixels)", 1, 24),
    "subset": Field(int, "train images per class (0 = all 5,000)", 0, 5000),
    "eval_subset": Field(int, "test images per class for evaluations during training (0 = all 1,000)", 0, 1000),
    "eval_every": Field(int, "also evaluate every N steps (0 = once per epoch)", 0, 100000),
    "tta": Field(bool, "also report flip test-time-augmentation accuracy at the end"),
    "seed": Field(int, "random seed", 0, 2**31 - 1),
    "device": Field(str, "auto = CUDA when present, else CPU", choices=DEVICES),
    "threads": Field(int, "CPU threads (0 = PyTorch's default)", 0, 256),
    "precision": Field(str, "arithmetic of the training step: bf16 = bfloat16 autocast (convs and matmuls in "
                       "bfloat16, weights and optimizer in fp32); auto = bf16 on CUDA, fp32 on a CPU; on a CPU, bf16 is "
                       "for those with native bfloat16 (AVX512-BF16 or AMX)", choices=PRECISIONS),
    "compile": Field(bool, "torch.compile the model for training: faster steps after a one-off compile of "
                     "tens of seconds (worth it for runs of several minutes; a CPU needs a C++ compiler)"),
    "name": Field(str, "run name (letters, digits, _ . -; empty = automatic)"),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; defaults are the recipe of the shipped s9 runs (docs/RESULTS.md).

    Batch 128 at peak LR 0.1 rather than 256 at 0.2 (the same LR-to-batch ratio): twice the
    steps per epoch, which LN and GN need to pass 85 % in 30 epochs; BN does as well either way.
    Weight standardisation ``auto``: on for s9 with LN and GN (depthwise convs spared), which end higher with
    it; off with BN.
    """

    arch: str = "s9"
    norm: str = "bn"
    gn_groups: int = 2
    dropout: float = -1.0
    ws: str = "auto"
    epochs: float = 12
    batch_size: int = 128
    optimizer: str = "nesterov"
    lr: float = 0.1
    momentum: float = 0.9
    schedule: str = "onecycle"
    warmup: float = 0.2
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    crop: bool = True
    crop_pad: int = 4
    flip: bool = True
    affine: str = "none"
    rotate_deg: float = 10.0
    cutout: bool = False
    cutout_size: int = 8
    subset: int = 0
    eval_subset: int = 0
    eval_every: int = 0
    tta: bool = True
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    precision: str = "auto"
    compile: bool = False
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def model_dropout(self) -> float:
        """The dropout the model is built with (-1 means the architecture's default)."""
        return DEFAULT_DROPOUT[self.arch] if self.dropout < 0 else self.dropout

    @property
    def model_args(self) -> dict[str, Any]:
        """The keyword arguments of :func:`cifarnet.models.build_model` for this run's network."""
        return {"arch": self.arch, "norm": self.norm, "gn_groups": self.gn_groups, "dropout": self.model_dropout,
                "ws": resolve_ws(self.arch, self.norm, self.ws)}

    @property
    def train_size(self) -> int:
        return 50_000 if self.subset == 0 else 10 * self.subset

    @property
    def steps_per_epoch(self) -> int:
        return self.train_size // self.batch_size  # the last partial batch is dropped (BN needs >1)

    @property
    def total_steps(self) -> int:
        return max(1, round(self.epochs * self.steps_per_epoch))


DEFAULTS = TrainConfig()


def resolve_ws(arch: str, norm: str, ws: Any) -> str:
    """Which of the model's convs are weight-standardised: ``ws`` (any accepted spelling) with ``auto`` resolved.

    Cheap on purpose: the Runs table asks it of every run on every refresh, without a full config check.
    """
    value = _coerce("ws", ws)
    _check_field("ws", value)
    return default_ws(str(arch), str(norm)) if value == "auto" else value


def _coerce(name: str, value: Any) -> Any:
    """Turn strings (CLI, URL) and JSON values into the field's type, or refuse clearly."""
    rule = FIELDS[name]
    if rule.kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise CifarnetError(f"{name}={shown(value)} is not a switch; allowed: true or false")
    if rule.kind is str:
        if name == "name":
            return str(value).strip()
        text = str(value).strip().lower()
        return dict(rule.aliases).get(text, text)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CifarnetError(f"{name}={shown(value)} is not a number; {_allowed(name)}") from None
    if not math.isfinite(number):
        raise CifarnetError(f"{name}={shown(value)} is not a finite number; {_allowed(name)}")
    if rule.kind is int:
        if number != int(number) or isinstance(value, bool):
            raise CifarnetError(f"{name}={shown(value)} must be a whole number; {_allowed(name)}")
        return int(number)
    return number


def _allowed(name: str) -> str:
    rule = FIELDS[name]
    if rule.choices:
        return f"allowed: {', '.join(rule.choices)}"
    kind = "a whole number" if rule.kind is int else "a number"
    return f"allowed: {kind} from {rule.low:g} to {rule.high:g}"


def _check_field(name: str, value: Any) -> None:
    rule = FIELDS[name]
    if rule.choices and value not in rule.choices:
        raise CifarnetError(f"{name}={shown(value)} is not known; {_allowed(name)}")
    if rule.low is not None and not rule.low <= value <= rule.high:
        raise CifarnetError(f"{name}={shown(value)} is out of range; {_allowed(name)}")
    if name == "name" and value and (not NAME_PATTERN.match(value) or ".." in value):
        raise CifarnetError(
            f"name={shown(value)} is not allowed; use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (no path separators, no '..')"
        )


def _check_combination(cfg: TrainConfig) -> None:
    """Rules between fields: GN groups against the model, batch against the subset."""
    build_model(**cfg.model_args)
    if cfg.batch_size > cfg.train_size:
        raise CifarnetError(
            f"batch_size={cfg.batch_size} is larger than the training set ({cfg.train_size} images with "
            f"subset={cfg.subset}); allowed: at most {cfg.train_size}"
        )


def make_config(values: dict[str, Any] | None = None, base: TrainConfig = DEFAULTS) -> TrainConfig:
    """A validated config from ``base`` updated with ``values`` (unknown keys refused)."""
    values = dict(values or {})
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise CifarnetError(f"unknown config field(s) {', '.join(unknown)}; allowed: {', '.join(FIELDS)}")
    coerced = {}
    for name, value in values.items():
        coerced[name] = _coerce(name, value)
        _check_field(name, coerced[name])
    cfg = dataclasses.replace(base, **coerced)
    _check_combination(cfg)
    return cfg


def diff_from_defaults(cfg: TrainConfig) -> dict[str, Any]:
    """Only the fields that differ from the defaults (short URLs, short CLI echoes)."""
    return {k: v for k, v in cfg.to_dict().items() if v != getattr(DEFAULTS, k)}
