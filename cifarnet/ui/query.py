"""A configuration as URL query parameters, and back, for sharing dashboard settings.

The dashboard keeps its sidebar settings in the query string so a link reproduces a
configuration. Only the fields that differ from :data:`DASHBOARD_DEFAULTS` (the ``short``
recipe) are written,
which keeps links short. A link is outside input: every value goes through
:func:`cifarnet.config.make_config`, and a value that cannot be used is dropped with a
one-line reason instead of breaking the page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cifarnet.config import AUTO, FIELDS, TrainConfig, make_config
from cifarnet.errors import CifarnetError, shown
from cifarnet.recipes import FIRST_RECIPE, recipe_config

DASHBOARD_DEFAULTS: TrainConfig = recipe_config(FIRST_RECIPE)  # a first run should draw its curve within minutes


# Parameters a page keeps in the link for itself (which run and which test image the Inside page
# shows, which experiment the Compare page shows): they are not settings, so the sidebar neither reports nor
# drops them.
RUN_PARAM, INDEX_PARAM, EXPERIMENT_PARAM = "run", "index", "experiment"
PAGE_PARAMS = (RUN_PARAM, INDEX_PARAM, EXPERIMENT_PARAM)


@dataclass
class QueryResult:
    """The usable values found in a query string, and why the others were dropped."""

    values: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _single(raw: Any) -> str:
    """``?lr=1&lr=2`` arrives as a list; the last value wins, as in a browser form."""
    if isinstance(raw, (list, tuple)):
        return str(raw[-1]) if raw else ""
    return str(raw)


def parse_query(params: Mapping[str, Any], base: TrainConfig = DASHBOARD_DEFAULTS) -> QueryResult:
    """Values from ``params`` that pass field validation; the rest become ``problems``.

    Each field is checked on its own so one bad value does not discard the others.
    Rules between fields (GroupNorm groups against the model, batch against the subset)
    are left to the caller's full :func:`make_config`, which reports them inline.
    """
    result = QueryResult()
    for name, raw in params.items():
        if name in PAGE_PARAMS:
            continue
        if name not in FIELDS:
            result.problems.append(f"unknown setting {shown(name)} in the link was ignored")
            continue
        value = _single(raw)
        try:
            result.values[name] = getattr(make_config({name: value}, base=_lenient(base, name)), name)
        except CifarnetError as exc:
            result.problems.append(f"link value ignored: {exc}")
    return result


def _lenient(base: TrainConfig, name: str) -> TrainConfig:
    """A base whose combination rules cannot fail, so only the field ``name`` is judged: a batch of 2 fits any
    subset; one that every allowed process count divides, when that count is the field judged."""
    batch = math.lcm(*range(1, FIELDS["processes"].high + 1)) if name == "processes" else 2
    return make_config({"norm": "bn", "subset": 0, "batch_size": batch, "processes": 1}, base=base)


def to_query(
    cfg: TrainConfig, base: TrainConfig = DASHBOARD_DEFAULTS, current: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The fields of ``cfg`` that differ from ``base``, as query-string text, plus the page's own
    parameters found in ``current`` (the query string now)."""
    page = {name: _single(raw) for name, raw in (current or {}).items() if name in PAGE_PARAMS}
    return {**{name: _text(value) for name, value in cfg.to_dict().items() if value != getattr(base, name)}, **page}


def _text(value: Any) -> str:
    """``true``/``false`` for switches, 12 significant digits for numbers (``3`` not ``3.0``), ``auto`` for None."""
    if value is None:
        return AUTO
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, ".12g")
    return str(value)
