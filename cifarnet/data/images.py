"""Pixel helpers shared by the pages that show 32x32 images.

CIFAR-10 images are 32x32; a browser scaling them up blurs them into mush, so pages
enlarge them here by whole-pixel repetition (nearest neighbour) and keep them crisp.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    """An HxWx3 image with every pixel repeated ``scale`` times in both directions."""
    scale = max(1, int(scale))
    return np.ascontiguousarray(image).repeat(scale, axis=0).repeat(scale, axis=1)


def enlarge_to(image: np.ndarray, size: int) -> np.ndarray:
    """Crisply enlarge a small image towards ``size`` pixels on its longer side; shrink a big one.

    Whole-pixel factors only, so a 32x32 picture becomes 256x256 blocks instead of a blur.
    """
    longest = max(image.shape[:2])
    if longest >= size:
        pil = Image.fromarray(np.ascontiguousarray(image))
        pil.thumbnail((size, size), Image.Resampling.LANCZOS)
        return np.asarray(pil)
    return enlarge(image, size // longest)


def to_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A 3x32x32 uint8 tensor (the data set's layout) as a 32x32x3 array (what images use)."""
    array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    return np.ascontiguousarray(array.transpose(1, 2, 0))


def one_per_class(images: torch.Tensor, labels: torch.Tensor, count: int) -> torch.Tensor:
    """The first image of each of the first ``count`` classes: a varied, stable preview batch."""
    picks = [int(torch.nonzero(labels == c)[0]) for c in range(count) if bool((labels == c).any())]
    return images[picks]


def png_bytes(image: np.ndarray) -> bytes:
    """An HxWx3 uint8 image as PNG file bytes, so a test image takes the same path as an upload."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, "PNG")
    return buffer.getvalue()
