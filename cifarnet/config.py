"""The training configuration, declared once: each field of :class:`TrainConfig` with all its rules.

A field is declared with :func:`option`: its type (the annotation), its default, and as metadata its
limits or choices, the help text users see, its sidebar group and label, its number widget's step and
format, and the switch it depends on. Everything else derives from that one declaration:

- validation: every way a value enters (CLI flag, sidebar widget, URL query string, a run's saved
  ``config.json``) goes through :func:`make_config`, which refuses a bad value with one line naming the
  field, the value and what is allowed, before any work starts;
- the CLI flags (:mod:`cifarnet.cli`), the sidebar widgets (:mod:`cifarnet.ui.sidebar`), URL parsing and
  writing (:mod:`cifarnet.ui.query`) and the augmentation switches (:mod:`cifarnet.data.augment` reads the config).

Adding a field means adding one :func:`option` line here (and using the value where it matters).
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass
from typing import Any

from cifarnet.errors import CifarnetError, shown
from cifarnet.nets.models import ARCHS, DEFAULT_DROPOUT, WHITEN_MODES, WS_MODES, build_model, default_ws
from cifarnet.nets.norms import DEFAULT_GN_GROUPS, NORMS

OPTIMIZERS = ("nesterov", "sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
AFFINES = ("none", "rotate", "ssr")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
FLIP_MODES = ("random", "alternate")
LR_SCALINGS = ("none", "linear", "sqrt")
REFERENCE_BATCH = 128  # the batch the learning rate is given for when lr_scaling scales it
LOOKAHEAD_EVERY = 5  # steps between lookahead's syncs: airbench's
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
AUTO = "auto"  # how text (CLI, URL) spells a field's "no value": the default the field's `auto` words describe
MODEL, TRAINING, AUGMENTATION, ADVANCED = "Model", "Training", "Augmentation", "Advanced"
GROUPS = (MODEL, TRAINING, AUGMENTATION, ADVANCED)  # the sidebar's sections, in order


@dataclass(frozen=True)
class Field:
    """The rules of one config field, read from its declaration (see :func:`option`)."""

    help: str
    group: str
    label: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    choice_labels: dict[str, str] | None = None  # how the sidebar names a choice (bn -> BN); others show as they are
    auto: str | None = None  # for a field that may be None: what None means ("architecture default")
    step: float | None = None  # the number widget's step and display format: presentation only
    fmt: str | None = None
    radio: bool = False  # choices drawn as a horizontal radio rather than a select box
    active_when: tuple[str, tuple[Any, ...]] | None = None  # (switch, its values that make this field matter)
    kind: type = object  # bool, int, float or str: filled in from the annotation


def option(default: Any, help: str, group: str, label: str, **rules: Any) -> Any:
    """Declare a :class:`TrainConfig` field: its default, and its :class:`Field` rules as metadata."""
    return dataclasses.field(default=default, metadata={"rule": Field(help, group, label, **rules)})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs.

    The defaults are the recipe of the shipped runs, shortened to 12 epochs and not compiled, so that
    ``python -m cifarnet train`` without flags is a run of a useful length; :mod:`cifarnet.recipes` names the full
    recipe (``shipped``: 60 epochs, compiled) and the others, as overrides of these defaults.
    """

    arch: str = option("s10", "architecture", MODEL, "Architecture", choices=ARCHS, radio=True)
    norm: str = option(
        "bn",
        "normalisation: bn (BatchNorm), ln (LayerNorm = GroupNorm(1,C)), gn (GroupNorm)",
        MODEL,
        "Normalisation",
        choices=NORMS,
        radio=True,
        choice_labels={"bn": "BN", "ln": "LN", "gn": "GN"},
    )
    gn_groups: int = option(
        DEFAULT_GN_GROUPS,
        "GroupNorm groups (must divide every layer's channels)",
        MODEL,
        "GN groups",
        low=1,
        high=128,
        step=1,
        fmt="%d",
        active_when=("norm", ("gn",)),
    )
    dropout: float | None = option(
        None,
        "dropout after every conv unit (architecture defaults: "
        + ", ".join(f"{arch} {rate:g}" for arch, rate in DEFAULT_DROPOUT.items())
        + ")",
        MODEL,
        "Dropout",
        low=0.0,
        high=0.9,
        auto="architecture default",
        step=0.05,
        fmt="%.2f",
    )
    ws: str = option(
        "auto",
        "weight standardisation: convs that feed a norm use zero-mean, unit-variance filters; "
        "all of them, all except the depthwise ones, or off; auto = except-depthwise for s9 and s10 "
        "with LN or GN, off with BN and for seed (the write-up's network)",
        MODEL,
        "Weight standardisation",
        choices=(AUTO, *WS_MODES),
        choice_labels={"except-depthwise": "all except depthwise"},
    )
    whiten: str = option(
        "off",
        "patch-whitening stem: the first conv starts as the whitening transform of 3x3 patches "
        "of 5,000 training images (the covariance's top eigenvectors, each sign, scaled to unit "
        "variance), then stays frozen or trains on; off = random init",
        MODEL,
        "Whitening stem",
        choices=WHITEN_MODES,
    )
    epochs: float = option(
        12,
        "epochs to train (fractions allowed for short runs)",
        TRAINING,
        "Epochs",
        low=0.05,
        high=500,
        step=1.0,
        fmt="%g",
    )
    batch_size: int = option(128, "images per step", TRAINING, "Batch size", low=2, high=4096, step=32, fmt="%d")
    optimizer: str = option("nesterov", "optimizer", TRAINING, "Optimizer", choices=OPTIMIZERS)
    lr: float = option(
        0.1, "peak learning rate", TRAINING, "Learning rate", low=1e-6, high=10.0, step=0.005, fmt="%.4g"
    )
    momentum: float = option(
        0.9, "SGD momentum / Adam beta1", ADVANCED, "Momentum / β1", low=0.0, high=0.999, step=0.01, fmt="%.3g"
    )
    lr_scaling: str = option(
        "none",
        f"scale the learning rate with the batch: lr is given for batch "
        f"{REFERENCE_BATCH} and multiplied by batch_size/{REFERENCE_BATCH} (linear) or its square "
        "root (sqrt); none = lr as given",
        TRAINING,
        "LR scaling with batch",
        choices=LR_SCALINGS,
    )
    schedule: str = option(
        "onecycle", "learning-rate schedule, stepped every batch", TRAINING, "LR schedule", choices=SCHEDULES
    )
    warmup: float = option(
        0.2,
        "onecycle: fraction of training spent warming up",
        ADVANCED,
        "Warm-up fraction",
        low=0.0,
        high=0.9,
        step=0.05,
        fmt="%.2f",
    )
    weight_decay: float = option(
        5e-4, "weight decay", TRAINING, "Weight decay", low=0.0, high=0.1, step=1e-4, fmt="%.5g"
    )
    label_smoothing: float = option(
        0.1, "label smoothing", TRAINING, "Label smoothing", low=0.0, high=0.5, step=0.05, fmt="%.2f"
    )
    ema: float = option(
        0.0,
        "decay of an exponential moving average of the weights, updated every step (warmed up: "
        "min(ema, (1+t)/(10+t)) at step t); evaluations, the final accuracy and the saved model use "
        "the average; 0 = off",
        TRAINING,
        "Weight EMA decay",
        low=0.0,
        high=0.9999,
        step=0.001,
        fmt="%.4g",
    )
    lookahead: float = option(
        0.0,
        f"lookahead (airbench's): every {LOOKAHEAD_EVERY} steps slow weights move "
        f"towards the trained ones as {LOOKAHEAD_EVERY} EMA steps of this decay would (warmed up "
        "as ema), and the trained weights jump back to them; evaluated and saved unless ema is "
        "on; 0 = off",
        TRAINING,
        "Lookahead decay",
        low=0.0,
        high=0.9999,
        step=0.01,
        fmt="%.4g",
    )
    norm_bias_lr: float = option(
        1.0,
        "learning-rate multiplier for the norms' biases (airbench trains BatchNorm "
        "biases at 64x); like every norm parameter they get no weight decay",
        ADVANCED,
        "Norm-bias LR multiplier",
        low=0.0,
        high=256.0,
        step=1.0,
        fmt="%g",
    )
    freeze_norm_scales: bool = option(
        False,
        "keep the norms' scales (weights) at their initial 1 instead of training them",
        ADVANCED,
        "Freeze norm scales",
    )
    crop: bool = option(True, "random translate: pad then random-crop back to 32x32", AUGMENTATION, "Random crop")
    crop_pad: int = option(
        4,
        "padding for the random crop (pixels)",
        AUGMENTATION,
        "Crop padding (px)",
        low=1,
        high=8,
        step=1,
        fmt="%d",
        active_when=("crop", (True,)),
    )
    flip: bool = option(True, "random horizontal flip", AUGMENTATION, "Horizontal flip")
    flip_mode: str = option(
        "random",
        "random: each image mirrored with probability 1/2 every epoch; alternate: at "
        "random in the first epoch, then each image the opposite of its previous epoch "
        "(airbench's derandomised flip)",
        AUGMENTATION,
        "Flip mode",
        choices=FLIP_MODES,
        active_when=("flip", (True,)),
    )
    affine: str = option(
        "none",
        "none, rotate (random rotation) or ssr (shift-scale-rotate)",
        AUGMENTATION,
        "Rotation",
        choices=AFFINES,
        choice_labels={"ssr": "shift-scale-rotate"},
    )
    rotate_deg: float = option(
        10.0,
        "largest rotation in degrees for rotate / ssr",
        AUGMENTATION,
        "Max rotation (°)",
        low=0.0,
        high=45.0,
        step=5.0,
        fmt="%g",
        active_when=("affine", ("rotate", "ssr")),
    )
    cutout: bool = option(False, "cutout (CoarseDropout): one square hole per image", AUGMENTATION, "Cutout")
    cutout_size: int = option(
        8,
        "cutout square side (pixels)",
        AUGMENTATION,
        "Cutout size (px)",
        low=1,
        high=24,
        step=2,
        fmt="%d",
        active_when=("cutout", (True,)),
    )
    mixup: float = option(
        0.0,
        "mixup: each batch blended with itself reversed, weight ~ Beta(alpha, alpha), labels "
        "blended alike (alpha; 0 = off; with cutmix too, each batch takes one of the two)",
        AUGMENTATION,
        "Mixup alpha",
        low=0.0,
        high=2.0,
        step=0.1,
        fmt="%g",
    )
    cutmix: float = option(
        0.0,
        "cutmix: a box of each image replaced by the same box of the batch reversed, labels "
        "blended by area (alpha of the Beta draw; 0 = off)",
        AUGMENTATION,
        "Cutmix alpha",
        low=0.0,
        high=2.0,
        step=0.1,
        fmt="%g",
    )
    subset: int = option(
        0,
        "train images per class (0 = all 5,000)",
        TRAINING,
        "Train images per class",
        low=0,
        high=5000,
        step=100,
        fmt="%d",
    )
    eval_subset: int = option(
        0,
        "test images per class for evaluations during training (0 = all 1,000)",
        ADVANCED,
        "Eval images per class",
        low=0,
        high=1000,
        step=50,
        fmt="%d",
    )
    eval_every: int = option(
        0,
        "also evaluate every N steps (0 = once per epoch)",
        ADVANCED,
        "Evaluate every N steps",
        low=0,
        high=100000,
        step=1,
        fmt="%d",
    )
    tta: bool = option(
        True, "also report flip test-time-augmentation accuracy at the end", ADVANCED, "Flip TTA at the end"
    )
    tta_translate: bool = option(
        False,
        "TTA also over the image and its mirror shifted one pixel up-left and one "
        "down-right (half the weight; airbench's tta_level 2): the TTA accuracy is then "
        "flip + translate",
        ADVANCED,
        "TTA: also translate",
        active_when=("tta", (True,)),
    )
    seed: int = option(0, "random seed", TRAINING, "Seed", low=0, high=2**31 - 1, step=1, fmt="%d")
    device: str = option("auto", "auto = CUDA when present, else CPU", ADVANCED, "Device", choices=DEVICES)
    threads: int = option(
        0,
        "CPU threads (0 = a share of the cores: all of them for a run alone, divided among "
        "the runs training side by side)",
        ADVANCED,
        "CPU threads",
        low=0,
        high=256,
        step=1,
        fmt="%d",
    )
    processes: int = option(
        1,
        "training processes on this machine: DistributedDataParallel (launched through "
        "torchrun), each taking an equal share of every batch; batch_size must be a multiple "
        "(torchrun itself may start more). Pays with several GPUs or machines; on one CPU the "
        "processes share its cores: at best as fast as one process, 0.75x with synchronised BN "
        "(docs/DISTRIBUTED.md)",
        ADVANCED,
        "Processes (DDP)",
        low=1,
        high=8,
        step=1,
        fmt="%d",
    )
    sync_bn: bool = option(
        False,
        "with several processes and bn: BatchNorm statistics over the whole batch "
        "(synchronised), as one process computes them; off (the default, as in torchvision's "
        "reference scripts) = each process normalises its share: 0.2-0.4 points less after a short "
        "run, and on one CPU the synchronisation costs a quarter of the speed (docs/DISTRIBUTED.md)",
        ADVANCED,
        "Synchronised BatchNorm",
        active_when=("norm", ("bn",)),
    )
    precision: str = option(
        "auto",
        "arithmetic of the training step: bf16 = bfloat16 autocast (convs and matmuls in "
        "bfloat16, weights and optimizer in fp32; evaluation always fp32); auto = bf16 on CUDA and "
        "on CPUs with native bfloat16 (AVX512-BF16 or AMX), fp32 elsewhere",
        ADVANCED,
        "Precision",
        choices=PRECISIONS,
    )
    compile: bool = option(
        False,
        "torch.compile the model for training: faster steps after a one-off compile "
        "(worth it for runs of several minutes; a CPU needs a C++ compiler)",
        ADVANCED,
        "torch.compile",
    )
    name: str = option("", "run name (letters, digits, _ . -; empty = automatic)", ADVANCED, "Run name")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def model_dropout(self) -> float:
        """The dropout the model is built with (None: the architecture's default)."""
        return DEFAULT_DROPOUT[self.arch] if self.dropout is None else self.dropout

    @property
    def model_args(self) -> dict[str, Any]:
        """The keyword arguments of :func:`cifarnet.nets.models.build_model` for this run's network."""
        args = {
            "arch": self.arch,
            "norm": self.norm,
            "gn_groups": self.gn_groups,
            "dropout": self.model_dropout,
            "ws": resolve_ws(self.arch, self.norm, self.ws),
        }
        return args if self.whiten == "off" else {**args, "whiten": self.whiten}  # as build_model records it

    @property
    def peak_lr(self) -> float:
        """The learning rate the schedule peaks at: ``lr``, scaled to the batch as ``lr_scaling`` says."""
        ratio = self.batch_size / REFERENCE_BATCH
        return self.lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[self.lr_scaling]

    @property
    def train_size(self) -> int:
        return 50_000 if self.subset == 0 else 10 * self.subset

    @property
    def steps_per_epoch(self) -> int:
        return self.train_size // self.batch_size  # the last partial batch is dropped (BN needs >1)

    @property
    def total_steps(self) -> int:
        return max(1, round(self.epochs * self.steps_per_epoch))


def _read_declaration() -> dict[str, Field]:
    """Each field's :class:`Field`, its ``kind`` taken from the annotation (``float | None`` needs ``auto``)."""
    hints = typing.get_type_hints(TrainConfig)
    fields = {}
    for declared in dataclasses.fields(TrainConfig):
        hint, rule = hints[declared.name], declared.metadata["rule"]
        kinds = [k for k in typing.get_args(hint) or (hint,) if k is not type(None)]
        if len(kinds) != 1 or (type(None) in typing.get_args(hint)) != (rule.auto is not None):
            raise TypeError(f"{declared.name}: one type, optional (| None) exactly when it says what None means (auto)")
        fields[declared.name] = dataclasses.replace(rule, kind=kinds[0])
    return fields


FIELDS: dict[str, Field] = _read_declaration()
DEFAULTS = TrainConfig()


def resolve_ws(arch: str, norm: str, ws: Any) -> str:
    """Which of the model's convs are weight-standardised: ``ws`` checked, with ``auto`` resolved.

    Cheap on purpose: the Runs table asks it of every run on every refresh, without a full config check.
    """
    value = coerce("ws", ws)
    _check_field("ws", value)
    return default_ws(str(arch), str(norm)) if value == AUTO else value


def coerce(name: str, value: Any) -> Any:
    """Turn strings (CLI, URL) and JSON values into the field's type, or refuse clearly."""
    rule = FIELDS[name]
    if rule.auto is not None and (value is None or str(value).strip().lower() == AUTO):
        return None
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
        return str(value).strip() if name == "name" else str(value).strip().lower()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CifarnetError(f"{name}={shown(value)} is not a number; allowed: {allowed(name)}") from None
    if not math.isfinite(number):
        raise CifarnetError(f"{name}={shown(value)} is not a finite number; allowed: {allowed(name)}")
    if rule.kind is int:
        if number != int(number) or isinstance(value, bool):
            raise CifarnetError(f"{name}={shown(value)} must be a whole number; allowed: {allowed(name)}")
        return int(number)
    return number


def allowed(name: str) -> str:
    """What field ``name`` accepts, in words: its choices, its range, and ``auto`` where None is allowed."""
    rule = FIELDS[name]
    if rule.choices:
        return ", ".join(rule.choices)
    if rule.kind is bool:
        return "true or false"
    if rule.low is None:
        return "text"
    if rule.kind is int:
        words = f"a whole number from {rule.low:d} to {rule.high:d}"
    else:
        words = f"a number from {rule.low:g} to {rule.high:g}"
    return words + (f", or {AUTO} ({rule.auto})" if rule.auto else "")


def _check_field(name: str, value: Any) -> None:
    rule = FIELDS[name]
    if rule.choices and value not in rule.choices:
        raise CifarnetError(f"{name}={shown(value)} is not known; allowed: {allowed(name)}")
    if rule.low is not None and value is not None and not rule.low <= value <= rule.high:
        raise CifarnetError(f"{name}={shown(value)} is out of range; allowed: {allowed(name)}")
    if name == "name" and value and (not NAME_PATTERN.match(value) or ".." in value):
        raise CifarnetError(
            f"name={shown(value)} is not allowed; use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (no path separators, no '..')"
        )


def check_saved(name: str, value: Any) -> None:
    """Refuse a value read back from a run's ``config.json`` unless it is already the field's own type and allowed.

    Stricter than :func:`coerce` on purpose: a record holds what the trainer wrote, so a string where a number
    belongs is damage to report, not text to convert.
    """
    rule = FIELDS[name]
    if value is None and rule.auto is not None:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    fits = {
        bool: isinstance(value, bool),
        str: isinstance(value, str),
        int: number and float(value).is_integer(),
        float: number,
    }[rule.kind]
    if not fits:
        raise CifarnetError(f"{name}={shown(value)} is not a {rule.kind.__name__}; allowed: {allowed(name)}")
    _check_field(name, coerce(name, value))


def check_shares(batch_size: int, processes: int) -> None:
    """Every data-parallel process takes an equal share of each batch, so the batch must split evenly."""
    if batch_size % processes:
        raise CifarnetError(
            f"batch_size={batch_size} does not split evenly between {processes} processes; "
            f"allowed: a multiple of {processes}"
        )


def parse_value(name: str, value: Any) -> Any:
    """One value of field ``name`` (a string from a list, e.g. an experiment's ``--vary``), coerced and checked
    alone; refused in one line like any other."""
    coerced = coerce(name, value)
    _check_field(name, coerced)
    return coerced


def _check_combination(cfg: TrainConfig) -> None:
    """Rules between fields: GN groups against the model, batch against the subset and the processes."""
    build_model(**cfg.model_args)
    if cfg.batch_size > cfg.train_size:
        raise CifarnetError(
            f"batch_size={cfg.batch_size} is larger than the training set ({cfg.train_size} images with "
            f"subset={cfg.subset}); allowed: at most {cfg.train_size}"
        )
    check_shares(cfg.batch_size, cfg.processes)


def make_config(values: dict[str, Any] | None = None, base: TrainConfig = DEFAULTS) -> TrainConfig:
    """A validated config from ``base`` updated with ``values`` (unknown keys refused)."""
    values = dict(values or {})
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise CifarnetError(f"unknown config field(s) {', '.join(unknown)}; allowed: {', '.join(FIELDS)}")
    coerced = {}
    for name, value in values.items():
        coerced[name] = coerce(name, value)
        _check_field(name, coerced[name])
    cfg = dataclasses.replace(base, **coerced)
    _check_combination(cfg)
    return cfg
