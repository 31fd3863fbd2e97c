"""The patch-whitening stem: a first conv that starts as the whitening transform of the training set's patches.

After airbench (Jordan, "94% on CIFAR-10 in 3.29 seconds"): the covariance of the first conv's input patches
(3x3x3 = 27 numbers) is estimated on a sample of training images, and the conv's filters are set to its
top eigenvectors, each divided by the square root of its eigenvalue, with both signs (so the ReLU after the
norm keeps both halves of every direction). Its outputs start decorrelated and of unit variance: the first
layer no longer has to learn the images' colour and pixel correlations before anything else. The stem sees
what the conv sees, the images after the model's own input normalisation, so the model stays self-contained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cifarnet.data.augment import to_float
from cifarnet.nets.models import CifarNet, stem_conv

SAMPLE_IMAGES = 5_000  # airbench's sample: enough for a stable 27x27 covariance, a fraction of a second to fit
EPS = 5e-4  # added to each eigenvalue: airbench's, keeps near-zero directions from blowing up
CHUNK = 500  # images unfolded at a time (5,000 at once would hold 5M patches)


def patches(x: torch.Tensor, kernel: int, dilation: int = 1) -> torch.Tensor:
    """Every ``kernel``x``kernel`` patch of float images [N,C,H,W] (valid positions only), as rows [P, C*k*k]."""
    return F.unfold(x, kernel, dilation=dilation).transpose(1, 2).reshape(-1, x.shape[1] * kernel * kernel)


def patch_covariance(images: torch.Tensor, kernel: int, dilation: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, covariance) of the patches of float images, accumulated in float64 a chunk at a time."""
    total, outer, count = 0.0, 0.0, 0
    for start in range(0, len(images), CHUNK):
        rows = patches(images[start : start + CHUNK], kernel, dilation).double()
        total, outer, count = total + rows.sum(0), outer + rows.T @ rows, count + len(rows)
    mean = total / count
    return mean, outer / count - torch.outer(mean, mean)


def whitening_filters(
    images: torch.Tensor, out_channels: int, kernel: int, dilation: int = 1, eps: float = EPS
) -> torch.Tensor:
    """Conv weights [out_channels, C, k, k]: the top ``out_channels // 2`` eigenvectors of the patch covariance,
    scaled by 1/sqrt(eigenvalue + eps), then the same negated (an odd count leaves the last filter zero)."""
    _, cov = patch_covariance(images, kernel, dilation)
    values, vectors = torch.linalg.eigh(cov)  # ascending
    half = out_channels // 2
    if half > len(values):
        raise ValueError(f"{out_channels} filters need {half} eigenvectors; the patches have {len(values)}")
    top = (vectors[:, -half:] / torch.sqrt(values[-half:] + eps)).flip(1).T  # [half, C*k*k], largest first
    weight = torch.zeros(out_channels, top.shape[1], dtype=torch.float64)
    weight[:half], weight[half : 2 * half] = top, -top
    return weight.view(out_channels, images.shape[1], kernel, kernel).float()


def sample_index(count: int, seed: int, size: int = SAMPLE_IMAGES) -> torch.Tensor:
    """Which training images the stem is fitted on: ``size`` of them, the same for the same seed."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:size]


@torch.no_grad()
def fit_whitening(model: CifarNet, images: torch.Tensor, seed: int) -> None:
    """Set ``model``'s stem conv to the whitening filters of a seeded sample of uint8 training ``images``."""
    conv = stem_conv(model)
    sample = images[sample_index(len(images), seed).to(images.device)]
    normalised = (to_float(sample) - model.mean) / model.std  # what the conv sees: the model's normalised input
    weight = whitening_filters(normalised, conv.out_channels, conv.kernel_size[0], conv.dilation[0])
    conv.weight.copy_(weight.to(conv.weight.device))
