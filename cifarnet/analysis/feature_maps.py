"""Feature maps: what each channel of one layer computes for one picture, as a grid of small images.

Each channel is a map the size of the layer's output (32x32 down to 8x8), enlarged by
whole pixels like the pictures elsewhere, so a cell shows exactly which output pixels
fired. By default each channel is scaled to its own range, which shows the *pattern*
every channel detects; one shared scale instead shows which channels are strong and
which are silent for this picture.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cifarnet.analysis.gradcam import as_batch, colorize
from cifarnet.data.images import enlarge
from cifarnet.nets.layers import capture, find_layer

CELL_PX = 48  # target side of one channel's cell
GAP_PX = 2
COLUMNS = 16


@torch.inference_mode()
def feature_maps(model: nn.Module, image: torch.Tensor | np.ndarray, layer: str) -> torch.Tensor:
    """The ``[channels, side, side]`` output of ``layer`` for one picture (uint8 32x32x3 or 3x32x32)."""
    find_layer(model, layer)
    with capture(model, [layer]) as outputs:
        model(as_batch(image)[:1].to(next(model.parameters()).device))
    return outputs[layer][0].float().cpu()


def scaled(maps: torch.Tensor, shared: bool = False) -> np.ndarray:
    """Maps in [0, 1]: each channel from its own min to max, or all channels on one scale."""
    dims = (0, 1, 2) if shared else (1, 2)
    low, high = maps.amin(dim=dims, keepdim=True), maps.amax(dim=dims, keepdim=True)
    return ((maps - low) / (high - low).clamp_min(1e-12)).numpy()


def feature_grid(maps: torch.Tensor, shared: bool = False, columns: int = COLUMNS) -> np.ndarray:
    """All channels as one RGB uint8 picture: ``columns`` cells a row, white gaps between them."""
    channels, side = maps.shape[0], maps.shape[-1]
    scale = max(1, round(CELL_PX / side))
    cell = side * scale
    columns = min(columns, channels)
    rows = -(-channels // columns)
    grid = np.full((rows * (cell + GAP_PX) - GAP_PX, columns * (cell + GAP_PX) - GAP_PX, 3), 255, np.uint8)
    for i, values in enumerate(scaled(maps, shared)):
        top, left = (i // columns) * (cell + GAP_PX), (i % columns) * (cell + GAP_PX)
        grid[top : top + cell, left : left + cell] = enlarge(colorize(values), scale)
    return grid
