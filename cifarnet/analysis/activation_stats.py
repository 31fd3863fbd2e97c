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
from torch import nn

from cifarnet.analysis.gradcam import as_batch
from cifarnet.nets.layers import hooks
from cifarnet.nets.tables import block_of

NORMS = (nn.BatchNorm2d, nn.GroupNorm)


def relu_stats(values: torch.Tensor) -> dict[str, float]:
    """Mean, standard deviation (of all values) and fraction of exact zeros."""
    var, mean = torch.var_mean(values.float(), correction=0)
    zeros = 1 - int(torch.count_nonzero(values)) / values.numel()
    return {"mean": float(mean), "std": float(var.sqrt()), "zeros": zeros}


def moments(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance over the pixels of each image's each channel (both NxC, float64).

    One pass over the activations; every spread below, before and after a norm, follows
    from these small tensors.
    """
    var, mean = torch.var_mean(values.float(), dim=(2, 3), correction=0)
    return mean.double(), var.double()


def spreads(mean: torch.Tensor, var: torch.Tensor) -> dict[str, float]:
    """Spread of the per-channel and per-image means, over the overall standard deviation (from :func:`moments`)."""
    overall = mean.mean()
    scale = ((var + mean**2).mean() - overall**2).clamp_min(1e-24).sqrt()
    return {
        "channel": float(mean.mean(0).std(correction=0) / scale),
        "image": float(mean.mean(1).std(correction=0) / scale),
    }


def normalised(norm: nn.Module, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The moments of what ``norm`` makes of an input with these moments, before its learned scale and shift.

    A norm subtracts a centre and divides by a spread, both shared by a set of pixels:
    BatchNorm per channel (over the batch, or its running statistics), GroupNorm per image
    and group of channels (LayerNorm: one group). Both use the biased variance.
    """
    if isinstance(norm, nn.BatchNorm2d):
        if norm.training:
            centre = mean.mean(0)
            spread = (var + mean**2).mean(0) - centre**2
        else:
            centre, spread = norm.running_mean.double(), norm.running_var.double()
        scale = (spread + norm.eps).rsqrt()
        return (mean - centre) * scale, var * scale**2
    images, channels = mean.shape
    grouped_mean = mean.view(images, norm.num_groups, -1)
    grouped_var = var.view(images, norm.num_groups, -1)
    centre = grouped_mean.mean(2, keepdim=True)
    scale = ((grouped_var + grouped_mean**2).mean(2, keepdim=True) - centre**2 + norm.eps).rsqrt()
    return ((grouped_mean - centre) * scale).view(images, channels), (grouped_var * scale**2).view(images, channels)


@dataclass(frozen=True)
class ActivationStats:
    """One row per ReLU (``#, layer, block, mean, std, zeros``) and one per norm
    (``#, layer, block, channel_before, image_before, channel_after, image_after``), in the order they run."""

    relu: pd.DataFrame
    norm: pd.DataFrame


@torch.inference_mode()
def activation_stats(model: nn.Module, images: torch.Tensor, batch_statistics: bool = False) -> ActivationStats:
    """Measure every ReLU and norm of ``model`` over a batch of pictures (uint8 or floats in [0, 1]).

    It runs a copy of the model, so ``batch_statistics`` (BatchNorm on the batch's own
    statistics, as in training) leaves the running statistics as they are; otherwise the
    model runs as it predicts.
    """
    model = copy.deepcopy(model).to(memory_format=torch.channels_last)  # about 1.5x faster convs on a CPU
    if batch_statistics:
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.train()
    relus, norms = [], []

    def record(name: str, module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> None:
        if isinstance(module, nn.ReLU):
            relus.append({"layer": name, **relu_stats(output)})
            return
        before = moments(inputs)
        first, then = spreads(*before), spreads(*normalised(module, *before))
        norms.append(
            {
                "layer": name,
                "channel_before": first["channel"],
                "image_before": first["image"],
                "channel_after": then["channel"],
                "image_after": then["image"],
            }
        )

    watched = {name: m for name, m in model.named_modules() if isinstance(m, (nn.ReLU, *NORMS))}
    pictures = as_batch(images).to(next(model.parameters()).device, memory_format=torch.channels_last)
    with hooks(watched, record):
        model(pictures)
    return ActivationStats(_numbered(relus), _numbered(norms))


def _numbered(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame.insert(0, "#", range(1, len(frame) + 1))
    frame.insert(2, "block", [block_of(name) for name in frame["layer"]])
    return frame


def compare(models: Mapping[str, nn.Module], images: torch.Tensor, batch_statistics: bool = False) -> ActivationStats:
    """The statistics of several models on the same pictures, stacked with a ``model`` column."""
    measured = {label: activation_stats(model, images, batch_statistics) for label, model in models.items()}
    return ActivationStats(
        *(
            pd.concat([getattr(s, kind).assign(model=label) for label, s in measured.items()], ignore_index=True)
            for kind in ("relu", "norm")
        )
    )
