"""An exponential moving average (EMA) of a model's weights: the model that is evaluated and saved when asked.

The weights of the last steps of training jitter around a good point; their average sits nearer it
(Polyak averaging; cifar10-tiniest keeps an EMA at 0.999 as its final model). The average is a second copy of
the network, updated after every optimizer step with one fused ``torch._foreach_lerp_`` over the parameters
(a few microseconds for a small net); norm buffers (BatchNorm's running statistics) are copied from the
trained model, as timm's ModelEmaV3 does by default, so they describe the activations the averaged weights
are evaluated on no worse than the live ones'.

The decay warms up: at step ``t`` it is ``min(decay, (1 + t) / (10 + t))``, so in a short run the average
forgets the random initialisation instead of being dominated by it (TensorFlow's ``num_updates`` rule).
"""

from __future__ import annotations

import copy

import torch

from cifarnet.nets.models import CifarNet


def decay_at(step: int, decay: float) -> float:
    """The decay used for the update after optimizer step ``step`` (0-based): see the module's docstring."""
    return min(decay, (1 + step) / (10 + step))


class WeightAverage:
    """The EMA of a model's parameters (and a copy of its buffers), kept as a model of its own; lookahead's slow
    weights are one too, updated every few steps (``steps``) and pulled into the model (:meth:`pull`)."""

    def __init__(self, model: CifarNet, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: CifarNet, step: int, steps: int = 1) -> None:
        """Move the average towards ``model``'s weights after optimizer step ``step``, as ``steps`` updates would
        (the decay to that power); copy its buffers."""
        mine, theirs = list(self.model.parameters()), list(model.parameters())
        torch._foreach_lerp_(mine, theirs, 1.0 - decay_at(step, self.decay) ** steps)
        for own, live in zip(self.model.buffers(), model.buffers()):
            own.copy_(live)

    @torch.no_grad()
    def pull(self, model: CifarNet) -> None:
        """Lookahead: set ``model``'s weights to the average (the trained weights jump back)."""
        torch._foreach_copy_(list(model.parameters()), list(self.model.parameters()))

    def load(self, state: dict) -> None:
        """Continue from a saved average (its ``state_dict``)."""
        self.model.load_state_dict(state)
