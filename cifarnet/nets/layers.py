"""The layers a user can look into, by name, and how to watch their outputs.

Introspection (Grad-CAM, feature maps) addresses a layer by its module name, the same
name the receptive-field and summary tables print: every convolution (``body.c2.body.0.1``)
and the output of each block (``body.c4``, the map that enters global pooling). Each
comes with its output size, channels and receptive field, so a picture of it can say
how much of the image one of its pixels sees.

Outputs are captured with forward hooks. A dashboard shares one cached model between
sessions, each in its own thread, so a hook only records calls from the thread that set
it: another session's forward pass through the same model cannot leak into this one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass
from weakref import WeakKeyDictionary

import torch
from torch import nn

from cifarnet.errors import CifarnetError
from cifarnet.nets.receptive_field import receptive_field
from cifarnet.nets.tables import block_of

BLOCKS = ("body.c1", "body.c2", "body.c3", "body.c4")
DEFAULT_LAYER = "body.c4"  # the last block: what global pooling, and so the classifier, reads
IMAGE_SIZE = 32


@dataclass(frozen=True)
class Layer:
    """One inspectable layer: its module name, kind and geometry for a 32x32 input."""

    name: str
    kind: str  # "conv" or "block" (the output of C1..C4, after its norms, ReLUs and sums)
    block: str  # C1..C4, as the write-up names them
    channels: int
    size: int  # side of its output map in pixels
    rf: int  # receptive field of one output pixel, in input pixels
    jump: int  # input pixels between neighbouring outputs

    @property
    def title(self) -> str:
        """How a picker shows it: ``body.c4 (C4 output, 128 x 8x8)``."""
        what = f"{self.block} output" if self.kind == "block" else f"{self.block} conv"
        return f"{self.name} ({what}, {self.channels} x {self.size}x{self.size})"


_FOUND: WeakKeyDictionary[nn.Module, list[Layer]] = WeakKeyDictionary()


def layers(model: nn.Module) -> list[Layer]:
    """Every conv (the classifier's 1x1 after pooling excepted) and block output, in graph order.

    Found once per model object (a trace and a forward pass), since every Grad-CAM call checks its layer name.
    """
    if model not in _FOUND:
        _FOUND[model] = _find_layers(model)
    return _FOUND[model]


def _find_layers(model: nn.Module) -> list[Layer]:
    report = receptive_field(model, IMAGE_SIZE)
    modules = dict(model.named_modules())
    convs = [row for row in report.rows if isinstance(modules.get(row.name), nn.Conv2d) and row.size > 1]
    shapes = _output_shapes(model, [row.name for row in convs] + [b for b in BLOCKS if b in modules])
    found: list[Layer] = []
    for i, row in enumerate(convs):
        found.append(Layer(row.name, "conv", block_of(row.name), shapes[row.name][0], row.size, row.rf, row.jump))
        block = next((b for b in BLOCKS if row.name.startswith(b + ".")), None)
        last_in_block = i + 1 == len(convs) or not convs[i + 1].name.startswith(f"{block}.")
        if block in shapes and last_in_block:  # a block's output: its widest field (branches summed)
            widest = max((r for r in convs if r.name.startswith(block + ".")), key=lambda r: r.rf)
            channels, size = shapes[block]
            found.append(Layer(block, "block", block_of(block), channels, size, widest.rf, widest.jump))
    return found


def _output_shapes(model: nn.Module, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(channels, side) of each named module's output, from one forward pass of a blank image
    through an eval-mode copy (a model in training mode would fold the blank into its BatchNorm statistics)."""
    copy = deepcopy(model).eval()
    probe = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE, device=next(model.parameters()).device)
    with torch.inference_mode(), capture(copy, names) as outputs:
        copy(probe)
    return {name: (int(out.shape[1]), int(out.shape[-1])) for name, out in outputs.items()}


def layer_names(model: nn.Module) -> list[str]:
    return [layer.name for layer in layers(model)]


def find_layer(model: nn.Module, name: str) -> Layer:
    """The layer called ``name``, or a refusal that lists every allowed name."""
    for layer in layers(model):
        if layer.name == name:
            return layer
    raise CifarnetError(f"unknown layer {name!r}; allowed: {', '.join(layer_names(model))}")


def default_layer(model: nn.Module) -> str:
    """The last block's output when the model has blocks, else its last conv."""
    names = layer_names(model)
    return DEFAULT_LAYER if DEFAULT_LAYER in names else names[-1]


Record = Callable[[str, nn.Module, torch.Tensor, torch.Tensor], "torch.Tensor | None"]


@contextmanager
def hooks(modules: Mapping[str, nn.Module], record: Record) -> Iterator[None]:
    """Call ``record(name, module, input, output)`` after each named module runs, inside the block only.

    What ``record`` returns (if not ``None``) replaces the module's output for the rest of the network.
    """
    owner = threading.get_ident()

    def make(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            return record(name, module, inputs[0], output) if threading.get_ident() == owner else None

        return hook

    handles = [module.register_forward_hook(make(name)) for name, module in modules.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named modules during forward passes inside the block.

    The hook hands the rest of the network a copy, so an in-place operation downstream
    (``ReLU(inplace=True)``) cannot overwrite the recorded values, and gradients taken
    with respect to them stay exact.
    """
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str, module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        outputs[name] = output
        return output.clone()

    with hooks({name: modules[name] for name in names}, keep):
        yield outputs
