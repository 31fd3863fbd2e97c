"""What the activations look like layer by layer over a batch, and what each norm does to them.

Two kinds of layer are measured in one forward pass:

- after each **ReLU**: the mean, the standard deviation and the fraction of exact zeros
  (units that are off for a picture pass nothing on);
- around each **norm**: how far the per-channel means (each channel averaged over all
  images and pixels) and the per-image means (each image averaged over all channels and
  pixels) spread, before the norm and after it. "After" is the norm's own work, before its
  learned scale and shift, which would move every channel's mean to a learned value.

The spreads are the standard deviation of those means in units of the tensor's own
standard deviation, so layers of any scale compare. BatchNorm subtracts each channel's
batch mean, so its per-channel spread after the norm is 0 (exactly so with the batch's
statistics, as in training; nearly so with the running statistics a trained model uses)
while images still differ. LayerNorm and GroupNorm subtract each image's own mean, so the
per-image spread is 0 and channels still differ: the plot that tells BN from LN and GN.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from cifarnet.gradcam import as_batch
from cifarnet.layers import hooks
from cifarnet.tables import block_of

NORMS = (nn.BatchNorm2d, nn.GroupNorm)


def relu_stats(values: torch.Tensor) -> dict[str, float]:
    """Mean, standard deviation (of all values) and fraction of exact zeros."""
    values = values.float()
    return {"mean": float(values.mean()), "std": float(values.std(correction=0)),
            "zeros": float((values == 0).float().mean())}


def spreads(values: torch.Tensor) -> dict[str, float]:
    """Spread of the per-channel and per-image means of an NxCxHxW batch, over its overall std."""
    values = values.float()
    scale = values.std(correction=0).clamp_min(1e-12)
    return {"channel": float(values.mean(dim=(0, 2, 3)).std(correction=0) / scale),
            "image": float(values.mean(dim=(1, 2, 3)).std(correction=0) / scale)}


def normalised(norm: nn.Module, values: torch.Tensor) -> torch.Tensor:
    """``values`` as ``norm`` normalises them, without its learned scale and shift."""
    if isinstance(norm, nn.BatchNorm2d):
        if norm.training:
            return F.batch_norm(values, None, None, training=True, eps=norm.eps)
        return F.batch_norm(values, norm.running_mean, norm.running_var, training=False, eps=norm.eps)
    return F.group_norm(values, norm.num_groups, eps=norm.eps)


@dataclass(frozen=True)
class ActivationStats:
    """One row per ReLU (``#, layer, block, mean, std, zeros``) and one per norm
    (``#, layer, block, channel_before, image_before, channel_after, image_after``), in the order they run."""

    relu: pd.DataFrame
    norm: pd.DataFrame


@torch.inference_mode()
def activation_stats(model: nn.Module, images: torch.Tensor, batch_statistics: bool = False) -> ActivationStats:
    """Measure every ReLU and norm of ``model`` over a batch of pictures (uint8 or floats in [0, 1]).

    ``batch_statistics`` runs BatchNorm on the batch's own statistics, as in training,
    on a copy of the model (its running statistics stay as they are); otherwise the
    model runs as it predicts.
    """
    if batch_statistics:
        model = copy.deepcopy(model)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.train()
    modules = dict(model.named_modules())
    relus, norms = [], []

    def record(name: str, module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> None:
        if isinstance(module, nn.ReLU):
            relus.append({"layer": name, **relu_stats(output)})
            return
        before, after = spreads(inputs), spreads(normalised(module, inputs))
        norms.append({"layer": name, "channel_before": before["channel"], "image_before": before["image"],
                      "channel_after": after["channel"], "image_after": after["image"]})

    watched = {name: m for name, m in modules.items() if isinstance(m, (nn.ReLU, *NORMS))}
    with hooks(watched, record):
        model(as_batch(images).to(next(model.parameters()).device))
    return ActivationStats(_numbered(relus), _numbered(norms))


def _numbered(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame.insert(0, "#", range(1, len(frame) + 1))
    frame.insert(2, "block", [block_of(name) for name in frame["layer"]])
    return frame


def compare(models: Mapping[str, nn.Module], images: torch.Tensor, batch_statistics: bool = False) -> ActivationStats:
    """The statistics of several models on the same pictures, stacked with a ``model`` column."""
    measured = {label: activation_stats(model, images, batch_statistics) for label, model in models.items()}
    return ActivationStats(*(pd.concat([getattr(s, kind).assign(model=label) for label, s in measured.items()],
                                       ignore_index=True) for kind in ("relu", "norm")))
