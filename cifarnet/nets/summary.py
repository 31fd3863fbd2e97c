"""A torchsummary-style table of a model: leaf layers in execution order.

Rows come from forward hooks on every leaf module during one real forward pass, so the
order is the order in which layers run (parallel branches one after the other, as in
the write-up's table) and shapes are what the layers really produce.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

MB = 1024.0**2


@dataclass(frozen=True)
class LayerRow:
    """One executed leaf layer: ``name`` is torchsummary's ``Type-index``."""

    name: str
    type: str
    module: str
    output_shape: list[int]
    params: int


@dataclass(frozen=True)
class Summary:
    layers: list[LayerRow]
    total_params: int
    trainable_params: int
    input_mb: float
    forward_backward_mb: float
    params_mb: float

    @property
    def total_mb(self) -> float:
        return self.input_mb + self.forward_backward_mb + self.params_mb

    def to_dict(self) -> dict:
        """The JSON contract: totals, sizes and ``layers`` with name/type/output_shape/params."""
        return {
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "layers": [{k: v for k, v in asdict(row).items() if k != "module"} for row in self.layers],
            "input_mb": round(self.input_mb, 2),
            "forward_backward_mb": round(self.forward_backward_mb, 2),
            "params_mb": round(self.params_mb, 2),
            "total_mb": round(self.total_mb, 2),
        }


def summarize(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> Summary:
    """Run one forward pass on a zero image and record every leaf layer it executes."""
    rows: list[LayerRow] = []
    names = {module: name for name, module in model.named_modules()}

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        kind = type(module).__name__
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append(LayerRow(f"{kind}-{len(rows) + 1}", kind, names[module], list(output.shape[1:]), params))

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    activations = sum(int(torch.tensor(r.output_shape).prod()) for r in rows)
    return Summary(
        rows,
        total,
        trainable,
        4.0 * float(torch.tensor(input_size).prod()) / MB,
        2.0 * 4.0 * activations / MB,
        4.0 * total / MB,
    )


def format_summary(summary: Summary) -> str:
    """The table as torchsummary prints it, so it can be compared with the write-up by eye."""
    line, double = "-" * 64, "=" * 64
    out = [line, f"{'Layer (type)':>20}  {'Output Shape':>25} {'Param #':>15}", double]
    for row in summary.layers:
        shape = str([-1, *row.output_shape])
        out.append(f"{row.name:>20}  {shape:>25} {row.params:>15,}")
    out += [
        double,
        f"Total params: {summary.total_params:,}",
        f"Trainable params: {summary.trainable_params:,}",
        f"Non-trainable params: {summary.total_params - summary.trainable_params:,}",
        line,
        f"Input size (MB): {summary.input_mb:.2f}",
        f"Forward/backward pass size (MB): {summary.forward_backward_mb:.2f}",
        f"Params size (MB): {summary.params_mb:.2f}",
        f"Estimated Total Size (MB): {summary.total_mb:.2f}",
        line,
    ]
    return "\n".join(out)
