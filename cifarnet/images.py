"""Pixel helpers shared by the pages that show 32x32 images.

CIFAR-10 images are 32x32; a browser scaling them up blurs them into mush, so pages
enlarge them here by whole-pixel repetition (nearest neighbour) and keep them crisp.
"""

from __future__ import annotations

import numpy as np
import torch


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    """An HxWx3 image with every pixel repeated ``scale`` times in both directions."""
    scale = max(1, int(scale))
    return np.ascontiguousarray(image).repeat(scale, axis=0).repeat(scale, axis=1)


def to_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A 3x32x32 uint8 tensor (the data set's layout) as a 32x32x3 array (what images use)."""
    array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    return np.ascontiguousarray(array.transpose(1, 2, 0))


def one_per_class(images: torch.Tensor, labels: torch.Tensor, count: int) -> torch.Tensor:
    """The first image of each of the first ``count`` classes: a varied, stable preview batch."""
    picks = [int(torch.nonzero(labels == c)[0]) for c in range(count) if bool((labels == c).any())]
    return images[picks]
