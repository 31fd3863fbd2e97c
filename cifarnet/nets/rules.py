"""The course write-up's rules for a network, checked on a built model.

Every architecture here must keep them (the tests check each one with every norm), and the
Model page shows them, so a user who edits an architecture sees which rule it breaks:
blocks C1–C4 then global average pooling and a 1x1 conv, no max-pooling (strided or dilated
convs shrink the map), at least one dilated and one depthwise-separable conv, a receptive
field of at least 44 pixels and fewer than 200,000 parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cifarnet.nets.models import CifarNet, count_params
from cifarnet.nets.receptive_field import receptive_field

PARAM_LIMIT = 200_000
MIN_RF = 44
BLOCKS = ["c1", "c2", "c3", "c4", "head"]


@dataclass(frozen=True)
class Rule:
    """One rule: its name, whether the model keeps it, and what was found."""

    name: str
    passed: bool
    found: str


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == module.in_channels > 1


def _is_pointwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1


def _separable_pairs(model: nn.Module) -> int:
    """Depthwise convs directly followed by a 1x1 conv in the same container: depthwise-separable convs."""
    pairs = 0
    for module in model.modules():
        children = list(module.children())
        pairs += sum(_is_depthwise(a) and _is_pointwise(b) for a, b in zip(children, children[1:]))
    return pairs


def _head_is_gap_then_1x1(model: CifarNet) -> bool:
    head = list(getattr(model.body, "head", nn.Sequential()).children())
    return (
        len(head) == 2
        and isinstance(head[0], nn.AdaptiveAvgPool2d)
        and head[0].output_size in (1, (1, 1))
        and _is_pointwise(head[1])
        and head[1].out_channels == 10
    )


def check_rules(model: CifarNet) -> list[Rule]:
    """Each rule with its verdict; a model meets the write-up's rules when every one passes."""
    modules = list(model.modules())
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    params = count_params(model)
    blocks = [name for name, _ in model.body.named_children()]
    dilated = sum(m.dilation[0] > 1 for m in convs)
    pools = sum(isinstance(m, nn.MaxPool2d) for m in modules)
    separable = _separable_pairs(model)
    rf = receptive_field(model).rf
    return [
        Rule("fewer than 200,000 parameters", params < PARAM_LIMIT, f"{params:,}"),
        Rule("blocks C1, C2, C3, C4, then the head", blocks == BLOCKS, ", ".join(blocks)),
        Rule("no max-pooling", pools == 0, f"{pools} max-pool layer(s)"),
        Rule("a dilated convolution", dilated > 0, f"{dilated} dilated conv(s)"),
        Rule("a depthwise-separable convolution", separable > 0, f"{separable} depthwise + 1x1 pair(s)"),
        Rule(
            "global average pooling, then a 1x1 conv to 10 classes",
            _head_is_gap_then_1x1(model),
            "yes" if _head_is_gap_then_1x1(model) else "no",
        ),
        Rule(f"receptive field of at least {MIN_RF} px", rf >= MIN_RF, f"{rf} px"),
    ]
