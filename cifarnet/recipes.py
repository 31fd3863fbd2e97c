"""Named recipes: each a set of overrides of the :class:`~cifarnet.config.TrainConfig` defaults, with why it exists.

A recipe is data (as in nanoGPT's config files), so a better one is a change of values here and
nowhere else: ``python -m cifarnet train --recipe NAME`` trains it (flags override it), the dashboard
starts from ``short``, and the presets of ``bench/run_matrix.py`` build on these. Figures measured
with each recipe are in docs/RESULTS.md and docs/PERFORMANCE.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cifarnet.config import TrainConfig, make_config
from cifarnet.errors import CifarnetError


@dataclass(frozen=True)
class Recipe:
    why: str
    overrides: dict[str, Any]


RECIPES: dict[str, Recipe] = {
    # The defaults' batch 128 at peak LR 0.1 and one-cycle schedule, for 60 epochs: about an hour of a small CPU,
    # minutes on a GPU; compiled, since a one-off compile is nothing against an hour of steps.
    "shipped": Recipe(
        "the recipe of the shipped s10 runs (BN, LN and GN, seeds 0 and 1)", {"epochs": 60, "compile": True}
    ),
    # The previous default network and its recipe: 30 epochs at batch 128 (twice the steps per epoch of batch 256,
    # which LN and GN need within 30 epochs).
    "s9": Recipe("the recipe of the shipped s9 runs (BN, LN and GN)", {"arch": "s9", "epochs": 30}),
    # Two epochs of s9 on all 50,000 images at the defaults' batch and LR: a real learning curve in a few minutes on a
    # 2-core CPU, three of them (BN, LN, GN) within a coffee break; the 2-px crop suits so short a run (in 3-epoch
    # probes it beat the default 4 px), and flip-TTA is left for runs that last. Of the fast trainers' tricks, the
    # norms' biases at 16x the LR with their scales frozen, and label smoothing 0.2, gained 0.8-2.4 points with
    # every norm at this budget (BN and GN on two seeds, LN on one; docs/RESULTS.md); the others gave no more.
    "short": Recipe(
        "the dashboard's first run and a quick comparison: a learning curve within minutes on a CPU",
        {
            "arch": "s9",
            "epochs": 2,
            "crop_pad": 2,
            "tta": False,
            "norm_bias_lr": 16.0,
            "freeze_norm_scales": True,
            "label_smoothing": 0.2,
        },
    ),
    # s9: fewer multiply-adds per image than s10, which wins when the budget is minutes; bfloat16 and a compiled
    # step make each epoch faster, and the epochs saved buy margin above 85 % with both seeds.
    "fast85": Recipe(
        "the quickest to 85 % test accuracy on a CPU with native bfloat16 (s9 with BN)",
        {"arch": "s9", "epochs": 18, "precision": "bf16", "compile": True},
    ),
}


# What a newcomer trains without choosing: the dashboard's first run, and the budget of a comparison
# (`compare` without --recipe), whose three norms must finish within minutes on a small CPU (docs/RESULTS.md).
FIRST_RECIPE = "short"


def recipe_config(name: str, values: dict[str, Any] | None = None) -> TrainConfig:
    """The validated config of recipe ``name`` with ``values`` on top."""
    if name not in RECIPES:
        raise CifarnetError(f"unknown recipe {name!r}; allowed: {', '.join(RECIPES)}")
    return make_config({**RECIPES[name].overrides, **(values or {})})
