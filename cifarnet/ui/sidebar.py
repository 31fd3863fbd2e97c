"""The shared sidebar: a widget for every training setting, drawn from the config fields' declaration.

``dashboard.py`` calls :func:`render` before the page on every rerun, so the widgets
(and their state) are the same on every page. Values are seeded once per session from
the URL query string and written back to it on every rerun, so the address bar always
holds a shareable link. Group, label, widget kind, step and format, and which switch a
field depends on all come from :data:`cifarnet.config.FIELDS`. Number inputs carry no
min/max of their own: a bad value is refused by ``make_config`` with its one-line message,
shown inline, never as a traceback.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st
from torch import nn

from cifarnet.config import FIELDS, GROUPS, Field, TrainConfig, allowed, make_config
from cifarnet.errors import CifarnetError
from cifarnet.ui.common import cached_model, message
from cifarnet.ui.query import DASHBOARD_DEFAULTS, parse_query, to_query

EXPANDED = GROUPS[:2]  # the sections open at first: the model and the training budget
CONFIG_KEY, ERROR_KEY, PROBLEMS_KEY, SEEDED_KEY = "cfg", "cfg_error", "cfg_link_problems", "cfg_seeded"


def widget_key(name: str) -> str:
    """The session-state key of field ``name``'s widget (for a field that may be None, its number box)."""
    return f"cfg_{name}"


def auto_key(name: str) -> str:
    """The session-state key of the toggle that chooses a field's ``auto`` (None) value."""
    return f"cfg_{name}_auto"


def widget_kind(rule: Field) -> str:
    """Which Streamlit widget a field gets: its element type's name as ``AppTest`` knows it."""
    if rule.choices:
        return "radio" if rule.radio else "selectbox"
    return {bool: "toggle", str: "text_input"}.get(rule.kind, "number_input")


def _help(name: str) -> str:
    rule = FIELDS[name]
    return rule.help if rule.kind in (bool, str) and not rule.choices else f"{rule.help}. Allowed: {allowed(name)}."


def _set_widgets(values: dict[str, Any]) -> None:
    """Put config values into the widgets' state (a field's None: its toggle on, its number box at the low end)."""
    for name, rule in FIELDS.items():
        value = values[name]
        if rule.auto is not None:
            st.session_state[auto_key(name)] = value is None
            value = rule.low if value is None else value
        st.session_state[widget_key(name)] = value


def _seed_from_link() -> None:
    """Once per session: widget values from the query string, defaults for the rest."""
    if st.session_state.get(SEEDED_KEY):
        return
    parsed = parse_query(st.query_params.to_dict())
    _set_widgets({name: parsed.values.get(name, getattr(DASHBOARD_DEFAULTS, name)) for name in FIELDS})
    st.session_state[PROBLEMS_KEY] = parsed.problems
    st.session_state[SEEDED_KEY] = True


def _reset() -> None:
    """Button callback: back to the short-run defaults (runs before widgets are drawn)."""
    _set_widgets(DASHBOARD_DEFAULTS.to_dict())
    st.session_state[PROBLEMS_KEY] = []


def _disabled(name: str) -> bool:
    """A field whose switch is off is greyed out, not hidden, so its value (and the user's edit) survives."""
    rule = FIELDS[name]
    if rule.active_when is None:
        return False
    switch, wanted = rule.active_when
    return st.session_state.get(widget_key(switch)) not in wanted


def _widget(name: str) -> Any:
    """The widget for ``name``: radio/selectbox for choices, toggle for switches, else a number (or text).

    A field that may be None gets a toggle for that choice first ("Dropout: architecture default"), which
    greys out its number box.
    """
    rule, label = FIELDS[name], FIELDS[name].label
    common = {"key": widget_key(name), "help": _help(name), "disabled": _disabled(name)}
    kind = widget_kind(rule)
    if kind in ("radio", "selectbox"):
        labels = rule.choice_labels or {}
        fmt = lambda v: labels.get(v, v)  # noqa: E731 - a one-line label mapping
        if kind == "radio":
            return st.radio(label, rule.choices, horizontal=True, format_func=fmt, **common)
        return st.selectbox(label, rule.choices, format_func=fmt, **common)
    if kind == "toggle":
        return st.toggle(label, **common)
    if kind == "text_input":
        return st.text_input(label, placeholder="automatic", **common)
    auto = rule.auto is not None and st.toggle(
        f"{label}: {rule.auto}", key=auto_key(name), help=common["help"], disabled=common["disabled"]
    )
    common["disabled"] = common["disabled"] or auto
    step = int(rule.step) if rule.kind is int else float(rule.step)
    number = st.number_input(label, step=step, format=rule.fmt, **common)
    return None if auto else number


def render() -> TrainConfig | None:
    """Draw the sidebar and return the validated config (``None`` when a value is refused)."""
    _seed_from_link()
    values: dict[str, Any] = {}
    with st.sidebar:
        st.header("Settings")
        for problem in st.session_state.get(PROBLEMS_KEY, []):
            st.warning(message(problem), icon=":material/link:")
        error_slot = st.empty()
        for group in GROUPS:
            with st.expander(group, expanded=group in EXPANDED):
                for name in (name for name, rule in FIELDS.items() if rule.group == group):
                    values[name] = _widget(name)
        st.button("Reset to defaults", on_click=_reset, width="stretch")
        st.caption("The address bar holds these settings: copy it to share or reload this configuration.")
    try:
        cfg = make_config(values, base=DASHBOARD_DEFAULTS)
        error = None
    except CifarnetError as exc:
        cfg, error = None, str(exc)
        error_slot.error(f"**Invalid setting.** {message(error)}", icon=":material/warning:")
    st.session_state[CONFIG_KEY], st.session_state[ERROR_KEY] = cfg, error
    _write_link(values)
    return cfg


def _write_link(values: dict[str, Any]) -> None:
    """Mirror the settings into the URL (also invalid ones, so a reload shows the same message)."""
    draft = dataclasses.replace(DASHBOARD_DEFAULTS, **values)
    wanted = to_query(draft, current=st.query_params.to_dict())
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
        st.error(f"Fix the sidebar setting first: {message(error)}", icon=":material/warning:")
        st.stop()
    return cfg, cached_model(**cfg.model_args)
