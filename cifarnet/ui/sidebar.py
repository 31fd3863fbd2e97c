"""The shared sidebar: every training setting, generated from ``cifarnet.config.FIELDS``.

``dashboard.py`` calls :func:`render` before the page on every rerun, so the widgets
(and their state) are the same on every page. Values are seeded once per session from
the URL query string and written back to it on every rerun, so the address bar always
holds a shareable link. Number inputs carry no min/max of their own: the limits live
in ``FIELDS`` and a bad value is refused by ``make_config`` with its one-line message,
shown inline, never as a traceback.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st
from torch import nn

from cifarnet.config import FIELDS, TrainConfig, make_config
from cifarnet.errors import CifarnetError
from cifarnet.query import DASHBOARD_DEFAULTS, parse_query, to_query
from cifarnet.ui.common import cached_model, literal

GROUPS: dict[str, tuple[str, ...]] = {
    "Model": ("arch", "norm", "gn_groups", "dropout", "ws"),
    "Training": ("epochs", "batch_size", "optimizer", "lr", "schedule", "weight_decay", "label_smoothing",
                 "subset", "seed"),
    "Augmentation": ("crop", "crop_pad", "flip", "affine", "rotate_deg", "cutout", "cutout_size"),
    "Advanced": ("momentum", "warmup", "eval_subset", "eval_every", "tta", "device", "threads", "precision",
                 "compile", "name"),
}
LABELS = {
    "arch": "Architecture", "norm": "Normalisation", "gn_groups": "GN groups",
    "dropout": "Dropout (−1 = architecture default)", "ws": "Weight standardisation",
    "epochs": "Epochs", "batch_size": "Batch size", "optimizer": "Optimizer", "lr": "Learning rate",
    "schedule": "LR schedule", "weight_decay": "Weight decay", "label_smoothing": "Label smoothing",
    "subset": "Train images per class", "seed": "Seed", "crop": "Random crop", "crop_pad": "Crop padding (px)",
    "flip": "Horizontal flip", "affine": "Rotation", "rotate_deg": "Max rotation (°)", "cutout": "Cutout",
    "cutout_size": "Cutout size (px)", "momentum": "Momentum / β1", "warmup": "Warm-up fraction",
    "eval_subset": "Eval images per class", "eval_every": "Evaluate every N steps", "tta": "Flip TTA at the end",
    "device": "Device", "threads": "CPU threads", "precision": "Precision", "compile": "torch.compile",
    "name": "Run name",
}
CHOICE_NAMES = {"bn": "BN", "ln": "LN", "gn": "GN", "ssr": "shift-scale-rotate",
                "except-depthwise": "all except depthwise"}  # others show as they are
RADIO_FIELDS = ("arch", "norm")
# Step and display format of each number input: presentation only, the limits are in FIELDS.
NUMBER_STYLE: dict[str, tuple[float, str]] = {
    "gn_groups": (1, "%d"), "dropout": (0.05, "%.2f"), "epochs": (1.0, "%g"), "batch_size": (32, "%d"),
    "lr": (0.005, "%.4g"), "weight_decay": (1e-4, "%.5g"), "label_smoothing": (0.05, "%.2f"),
    "subset": (100, "%d"), "seed": (1, "%d"), "crop_pad": (1, "%d"), "rotate_deg": (5.0, "%g"),
    "cutout_size": (2, "%d"), "momentum": (0.01, "%.3g"), "warmup": (0.05, "%.2f"), "eval_subset": (50, "%d"),
    "eval_every": (1, "%d"), "threads": (1, "%d"),
}
# Switches that make another field meaningless; its widget is greyed out, not hidden, so
# its value (and the user's edit) survives.
DEPENDS_ON = {"gn_groups": ("norm", "gn"), "crop_pad": ("crop", True), "rotate_deg": ("affine", ("rotate", "ssr")),
              "cutout_size": ("cutout", True)}
CONFIG_KEY, ERROR_KEY, PROBLEMS_KEY, SEEDED_KEY = "cfg", "cfg_error", "cfg_link_problems", "cfg_seeded"


def _key(name: str) -> str:
    return f"cfg_{name}"


def _help(name: str) -> str:
    rule = FIELDS[name]
    if rule.choices:
        return f"{rule.help}. Allowed: {', '.join(rule.choices)}."
    if rule.low is not None:
        kind = "a whole number" if rule.kind is int else "a number"
        return f"{rule.help}. Allowed: {kind} from {rule.low:g} to {rule.high:g}."
    return rule.help


def _seed_from_link() -> None:
    """Once per session: widget values from the query string, defaults for the rest."""
    if st.session_state.get(SEEDED_KEY):
        return
    parsed = parse_query(st.query_params.to_dict())
    for name in FIELDS:
        st.session_state[_key(name)] = parsed.values.get(name, getattr(DASHBOARD_DEFAULTS, name))
    st.session_state[PROBLEMS_KEY] = parsed.problems
    st.session_state[SEEDED_KEY] = True


def _reset() -> None:
    """Button callback: back to the short-run defaults (runs before widgets are drawn)."""
    for name in FIELDS:
        st.session_state[_key(name)] = getattr(DASHBOARD_DEFAULTS, name)
    st.session_state[PROBLEMS_KEY] = []


def _disabled(name: str) -> bool:
    if name not in DEPENDS_ON:
        return False
    other, wanted = DEPENDS_ON[name]
    value = st.session_state.get(_key(other))
    return value not in wanted if isinstance(wanted, tuple) else value != wanted


def _widget(name: str) -> Any:
    """The one widget for ``name``: radio/selectbox for choices, toggle for switches, else a number."""
    rule, key, label = FIELDS[name], _key(name), LABELS[name]
    common = {"key": key, "help": _help(name), "disabled": _disabled(name)}
    if rule.choices:
        fmt = lambda v: CHOICE_NAMES.get(v, v)  # noqa: E731 - a one-line label mapping
        if name in RADIO_FIELDS:
            return st.radio(label, rule.choices, horizontal=True, format_func=fmt, **common)
        return st.selectbox(label, rule.choices, format_func=fmt, **common)
    if rule.kind is bool:
        return st.toggle(label, **common)
    if rule.kind is str:
        return st.text_input(label, placeholder="automatic", **common)
    step, fmt = NUMBER_STYLE[name]
    if rule.kind is int:
        return st.number_input(label, step=int(step), format=fmt, **common)
    return st.number_input(label, step=float(step), format=fmt, **common)


def render() -> TrainConfig | None:
    """Draw the sidebar and return the validated config (``None`` when a value is refused)."""
    _seed_from_link()
    values: dict[str, Any] = {}
    with st.sidebar:
        st.header("Settings")
        for problem in st.session_state.get(PROBLEMS_KEY, []):
            st.warning(literal(problem), icon=":material/link:")
        error_slot = st.empty()
        for group, names in GROUPS.items():
            with st.expander(group, expanded=group in ("Model", "Training")):
                for name in names:
                    values[name] = _widget(name)
        st.button("Reset to defaults", on_click=_reset, width="stretch")
        st.caption("The address bar holds these settings: copy it to share or reload this configuration.")
    try:
        cfg = make_config(values, base=DASHBOARD_DEFAULTS)
        error = None
    except CifarnetError as exc:
        cfg, error = None, str(exc)
        error_slot.error(f"**Invalid setting.** {literal(error)}", icon=":material/warning:")
    st.session_state[CONFIG_KEY], st.session_state[ERROR_KEY] = cfg, error
    _write_link(values)
    return cfg


def _write_link(values: dict[str, Any]) -> None:
    """Mirror the settings into the URL (also invalid ones, so a reload shows the same message)."""
    draft = dataclasses.replace(DASHBOARD_DEFAULTS, **values)
    wanted = to_query(draft)
    if st.query_params.to_dict() != wanted:
        st.query_params.from_dict(wanted)


def current_config() -> tuple[TrainConfig | None, str | None]:
    """The sidebar's config and its error message, for pages (the sidebar ran just before)."""
    return st.session_state.get(CONFIG_KEY), st.session_state.get(ERROR_KEY)


def configured_model() -> tuple[TrainConfig, nn.Module]:
    """The sidebar's config and its (cached) model, for pages that show a model without training it.

    A bad setting stops the page with its message: there is no model to show.
    """
    cfg, error = current_config()
    if cfg is None:
        st.error(f"Fix the sidebar setting first: {literal(error)}", icon=":material/warning:")
        st.stop()
    return cfg, cached_model(**cfg.model_args)
