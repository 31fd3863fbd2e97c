"""Grad-CAM: where in the picture the evidence for a class lies, as seen from one layer.

For a layer's output A (channels k, pixels ij) and the logit y of a class,

    weight_k = mean_ij dy/dA_kij        heatmap_ij = ReLU(sum_k weight_k · A_kij)

(Selvaraju et al., 2017): channels whose activation raises the class score count, and
the map says where they fire. The map has the layer's resolution (8x8 for ``s9``'s last
block, 26x26 for ``seed``'s); it is upsampled bilinearly to the 32x32 image and scaled to
[0, 1] per image. A map that is zero everywhere means no part of the picture speaks *for*
that class at this layer.

Written on PyTorch's hooks rather than Captum: Captum's ``LayerGradCam`` gives the same
maps on these models, but brings matplotlib along (a slower start for every ``explain``, see
docs/INSIDE.md) for what is one forward pass, one ``autograd.grad`` and three tensor lines.
A batch is explained in one pass: in eval mode every norm treats each image on its own,
so the images do not interact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cifarnet.data.images import enlarge
from cifarnet.errors import CifarnetError
from cifarnet.nets.layers import IMAGE_SIZE, capture, find_layer

# A perceptual dark-to-bright map (after matplotlib's "inferno"), sampled at nine even steps:
# bright means much evidence, and it reads the same in greyscale print.
INFERNO = np.array(
    [
        (0, 0, 4),
        (31, 12, 72),
        (85, 15, 109),
        (136, 34, 106),
        (186, 54, 85),
        (227, 89, 51),
        (249, 140, 10),
        (249, 201, 50),
        (252, 255, 164),
    ],
    dtype=np.float32,
)
OVERLAY_ALPHA = 0.6  # at full heat, 60 % colour and 40 % picture; where there is none, the picture alone


@dataclass(frozen=True)
class Cam:
    """Grad-CAM of a batch: class probabilities, the explained class and the 32x32 heatmaps in [0, 1]."""

    probs: torch.Tensor  # [N, classes]
    targets: torch.Tensor  # [N] class index each heatmap explains
    heatmaps: torch.Tensor  # [N, 32, 32]
    layer: str


def as_batch(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 pictures (Nx3x32x32 tensors as the data set holds them, or one 32x32x3 array) as floats in [0, 1]."""
    if isinstance(images, np.ndarray):  # one HxWx3 picture, as uploads and PIL give them
        images = torch.from_numpy(np.array(images)).permute(2, 0, 1).unsqueeze(0)
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float()


def grad_cam(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    layer: str,
    targets: Sequence[int] | torch.Tensor | int | None = None,
) -> Cam:
    """Grad-CAM at ``layer`` for each image's ``targets`` (one class for all, one per image, or the prediction).

    ``model`` must be in eval mode (as :func:`cifarnet.training.checkpoint.load_model` returns it).
    """
    find_layer(model, layer)
    x = as_batch(images).to(next(model.parameters()).device).requires_grad_(True)
    with torch.enable_grad(), capture(model, [layer]) as outputs:
        logits = model(x)
    activation = outputs[layer]
    chosen = _targets(targets, logits)
    (gradient,) = torch.autograd.grad(logits.gather(1, chosen[:, None]).sum(), activation)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return Cam(logits.detach().softmax(1).cpu(), chosen.cpu(), (cam / peak).cpu(), layer)


def _targets(targets: Sequence[int] | torch.Tensor | int | None, logits: torch.Tensor) -> torch.Tensor:
    """The class per image: the argmax when ``None``; a refusal for classes the model does not have."""
    count, classes = logits.shape
    if targets is None:
        return logits.argmax(1)
    chosen = torch.as_tensor(targets, dtype=torch.long, device=logits.device).reshape(-1)
    if len(chosen) not in (1, count):
        raise CifarnetError(f"{len(chosen)} target classes for {count} images; give one for all or one per image")
    chosen = chosen.expand(count)
    if bool(((chosen < 0) | (chosen >= classes)).any()):
        raise CifarnetError(f"target class {chosen.tolist()} is out of range; allowed: 0 to {classes - 1}")
    return chosen.contiguous()


def colorize(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """Values in [0, 1] (any shape) as RGB uint8 through :data:`INFERNO`."""
    scaled = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0) * (len(INFERNO) - 1)
    low = np.floor(scaled).astype(int).clip(max=len(INFERNO) - 2)
    frac = (scaled - low)[..., None]
    return (INFERNO[low] * (1 - frac) + INFERNO[low + 1] * frac).round().astype(np.uint8)


def overlay(image: np.ndarray, heatmap: np.ndarray | torch.Tensor, scale: int = 1) -> np.ndarray:
    """A 32x32x3 uint8 picture with its heatmap laid over it, then enlarged crisply ``scale`` times.

    The colour's opacity follows the heat, so cold regions show the picture untouched.
    """
    heat = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)[..., None]
    blended = image.astype(np.float32) * (1 - OVERLAY_ALPHA * heat) + colorize(heat[..., 0]) * OVERLAY_ALPHA * heat
    return enlarge(blended.round().astype(np.uint8), scale)


def overlays(
    model: nn.Module, images: torch.Tensor, layer: str, targets: Sequence[int] | None = None, scale: int = 4
) -> list[np.ndarray]:
    """Grad-CAM pictures of a batch of uint8 test images (Nx3x32x32), one pass for all of them."""
    cam = grad_cam(model, images, layer, targets)
    pictures = images.permute(0, 2, 3, 1).numpy()
    return [overlay(picture, heat, scale) for picture, heat in zip(pictures, cam.heatmaps.numpy())]
