"""Receptive field of every layer, computed from the module graph itself.

The model is traced with ``torch.fx`` and the standard recurrence is propagated along
the graph's edges, so any architecture works without a hand-kept list:

    k_eff = d·(k−1)+1      rf_out = rf_in + (k_eff−1)·jump_in      jump_out = jump_in·s
    size_out = ⌊(size_in + 2p − k_eff)/s⌋ + 1

Where branches meet (a sum of parallel convs, or a residual ``x + f(x)``) the larger
field wins. Norms, activations, dropout and the input normalisation pass through.
Global average pooling sees the whole map: its kernel is the input size.
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass

import torch
from torch import fx, nn


@dataclass(frozen=True)
class RFRow:
    name: str
    type: str
    kernel: int
    stride: int
    dilation: int
    padding: int
    size: int
    jump: int
    rf: int


@dataclass(frozen=True)
class _State:
    size: int
    jump: int
    rf: int


def _pair(value) -> int:
    return int(value[0] if isinstance(value, tuple) else value)


def _spatial(module: nn.Module) -> tuple[int, int, int, int] | None:
    """(kernel, stride, dilation, padding) of a layer that moves the field, else None."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
        return _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation), _pair(module.padding)
    if isinstance(module, nn.AvgPool2d):
        return _pair(module.kernel_size), _pair(module.stride), 1, _pair(module.padding)
    return None


def _merge(states: list[_State]) -> _State:
    """Branches joined by addition: same grid, the larger field."""
    return max(states, key=lambda s: s.rf)


@dataclass(frozen=True)
class RFReport:
    """The per-layer rows and ``rf``: the field of the features that enter global pooling."""

    rows: list[RFRow]
    rf: int

    def to_dict(self) -> dict:
        """The JSON contract: ``{"rf": int, "layers": [...]}``."""
        return {"rf": self.rf, "layers": [asdict(r) for r in self.rows]}


class _LayerTracer(fx.Tracer):
    """Keeps every conv whole, subclasses too (a :class:`~cifarnet.nets.models.StdConv2d` would
    otherwise be traced into its weight arithmetic and lose its geometry)."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, nn.Conv2d) or super().is_leaf_module(module, qualified_name)


def receptive_field(model: nn.Module, image_size: int = 32) -> RFReport:
    """One row per layer that changes the field (convs, pools), in graph order."""
    graph = _LayerTracer().trace(model)
    modules = dict(model.named_modules())
    states: dict[fx.Node, _State] = {}
    rows: list[RFRow] = []
    pooled_rf: int | None = None
    for node in graph.nodes:
        inputs = [states[a] for a in node.all_input_nodes if a in states]
        if node.op == "placeholder":
            states[node] = _State(image_size, 1, 1)
            continue
        if not inputs:
            continue
        state = _merge(inputs) if node.target in (operator.add, torch.add, "add") else inputs[0]
        module = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, nn.AdaptiveAvgPool2d):
            pooled_rf = state.rf if pooled_rf is None else pooled_rf
            geometry = (state.size, state.size, 1, 0)
        else:
            geometry = _spatial(module) if module is not None else None
        if geometry is not None:
            k, s, d, p = geometry
            k_eff = d * (k - 1) + 1
            state = _State((state.size + 2 * p - k_eff) // s + 1, state.jump * s, state.rf + (k_eff - 1) * state.jump)
            rows.append(RFRow(str(node.target), type(module).__name__, k, s, d, p, state.size, state.jump, state.rf))
        states[node] = state
    last = list(states.values())[-1]
    return RFReport(rows, pooled_rf if pooled_rf is not None else last.rf)


def format_rf(report: RFReport) -> str:
    """Aligned table for the terminal."""
    head = f"{'layer':<34} {'type':<18} {'k':>2} {'s':>2} {'d':>2} {'p':>2} {'size':>5} {'jump':>5} {'rf':>5}"
    lines = [head, "-" * len(head)]
    for r in report.rows:
        lines.append(
            f"{r.name:<34} {r.type:<18} {r.kernel:>2} {r.stride:>2} {r.dilation:>2} {r.padding:>2} "
            f"{r.size:>5} {r.jump:>5} {r.rf:>5}"
        )
    lines.append(f"receptive field before global pooling: {report.rf} px (image: 32 px)")
    return "\n".join(lines)
