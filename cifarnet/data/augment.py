"""Data augmentation on whole batches of tensors, on whatever device the batch is on.

One call transforms a whole batch with a handful of tensor operations (gather, where,
``grid_sample``), never a Python loop over images: on a 2-core CPU that is the
difference between augmentation costing nothing and costing as much as the model.
Every random draw comes from the ``torch.Generator`` passed in, so a seed reproduces
the exact batch. Which augmentations run, and how strongly, are the config's own fields
(``crop``, ``crop_pad``, ``flip``, ``flip_mode``, ``affine``, ``rotate_deg``, ``cutout``, ``cutout_size``, and
``mixup`` / ``cutmix``, which blend images and so turn the labels into class-probability targets: :func:`mix_batch`).

A data-parallel process augments only its share of a global batch (:class:`Rows`), yet makes every
draw for the whole batch and keeps its rows: its images come out exactly as in a single-process run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cifarnet.config import TrainConfig
from cifarnet.data.images import enlarge

# Shift-scale-rotate's largest shift (a fraction of the image side) and zoom (a fraction of the size), each way:
# the defaults of albumentations' ShiftScaleRotate, the usual meaning of "shift-scale-rotate" augmentation.
SSR_SHIFT = 0.0625
SSR_SCALE = 0.1


@dataclass(frozen=True)
class Rows:
    """Rows ``start:stop`` of a batch of ``whole`` images: the part of it a tensor holds.

    Each random draw is made for all ``whole`` images, in the order a single process makes it, and cut to
    these rows, so the generator's stream, and every image's augmentation, does not depend on the split.
    """

    start: int
    stop: int
    whole: int

    @classmethod
    def all_of(cls, x: torch.Tensor) -> Rows:
        return cls(0, len(x), len(x))

    def rand(self, gen: torch.Generator) -> torch.Tensor:
        """Uniform [0, 1) numbers for the whole batch, this part's rows (on the CPU, where the generator is)."""
        return torch.rand(self.whole, generator=gen)[self.start : self.stop]

    def randint(self, high: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
        """Whole numbers in [0, high) for the whole batch, this part's rows, shaped [n, 1, 1] to index images."""
        return torch.randint(0, high, (self.whole, 1, 1), generator=gen)[self.start : self.stop].to(device)


def _uniform(rows: Rows, low: float, high: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return (rows.rand(gen) * (high - low) + low).to(device)


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator, rows: Rows | None = None) -> torch.Tensor:
    """Translate each image by up to ``pad`` pixels (reflect-padded), via one gather."""
    n, _, h, w = x.shape
    rows = rows or Rows.all_of(x)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = rows.randint(2 * pad + 1, gen, x.device)
    dx = rows.randint(2 * pad + 1, gen, x.device)
    ys = dy + torch.arange(h, device=x.device).view(1, h, 1)
    xs = dx + torch.arange(w, device=x.device).view(1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, ys, xs].permute(0, 3, 1, 2).contiguous()


def mirror(x: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images where the boolean ``flipped`` [N] is true."""
    return torch.where(flipped.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)


def random_flip(x: torch.Tensor, gen: torch.Generator, rows: Rows | None = None) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    return mirror(x, (rows or Rows.all_of(x)).rand(gen) < 0.5)


def first_flips(count: int, seed: int) -> torch.Tensor:
    """Alternating flip: which of ``count`` training images are mirrored in the first epoch (a random half)."""
    return torch.rand(count, generator=torch.Generator().manual_seed(seed)) < 0.5


def alternating_flips(first: torch.Tensor, epoch: int) -> torch.Tensor:
    """Alternating (derandomised) flip, after airbench: each image mirrored as :func:`first_flips` drew in epoch 0,
    then the opposite of its previous epoch, so every two epochs show each image once each way instead of at
    random (``first`` indexed by the images' places in the training set)."""
    return first ^ bool(epoch % 2)


def random_affine(
    x: torch.Tensor, degrees: float, shift: float, scale: float, gen: torch.Generator, rows: Rows | None = None
) -> torch.Tensor:
    """Rotate (and for shift-scale-rotate, also shift and scale) each image; edges reflect."""
    rows = rows or Rows.all_of(x)
    angle = _uniform(rows, -degrees, degrees, gen, x.device) * (math.pi / 180)
    zoom = 1.0 / _uniform(rows, 1 - scale, 1 + scale, gen, x.device)
    tx, ty = _uniform(rows, -shift, shift, gen, x.device) * 2, _uniform(rows, -shift, shift, gen, x.device) * 2
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_cutout(x: torch.Tensor, size: int, gen: torch.Generator, rows: Rows | None = None) -> torch.Tensor:
    """Zero one ``size``-pixel square per image (CoarseDropout with one hole), centre anywhere."""
    _, _, h, w = x.shape
    rows = rows or Rows.all_of(x)
    cy = rows.randint(h, gen, x.device)
    cx = rows.randint(w, gen, x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    half = size // 2
    hole = (ys >= cy - half) & (ys < cy - half + size) & (xs >= cx - half) & (xs < cx - half + size)
    return x.masked_fill(hole.unsqueeze(1), 0.0)


def augment_batch(
    x: torch.Tensor,
    cfg: TrainConfig,
    gen: torch.Generator,
    rows: Rows | None = None,
    flipped: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply the augmentations ``cfg`` switches on to a float [N,3,H,W] batch in [0, 1] (``rows`` of a larger one).

    ``flipped`` says which images to mirror with ``flip_mode`` alternate (:func:`alternating_flips` of the images'
    places); without it (a preview) they are mirrored at random.
    """
    if cfg.crop:
        x = random_crop(x, cfg.crop_pad, gen, rows)
    if cfg.flip:
        x = mirror(x, flipped) if cfg.flip_mode == "alternate" and flipped is not None else random_flip(x, gen, rows)
    if cfg.affine == "rotate":
        x = random_affine(x, cfg.rotate_deg, 0.0, 0.0, gen, rows)
    elif cfg.affine == "ssr":
        x = random_affine(x, cfg.rotate_deg, SSR_SHIFT, SSR_SCALE, gen, rows)
    if cfg.cutout:
        x = random_cutout(x, cfg.cutout_size, gen, rows)
    return x


def soft_targets(labels: torch.Tensor, smoothing: float, classes: int = 10) -> torch.Tensor:
    """Class-probability targets [N, classes] of integer labels, label smoothing folded in (each row sums to 1)."""
    return F.one_hot(labels, classes).float() * (1 - smoothing) + smoothing / classes


def beta(alpha: float, gen: torch.Generator) -> float:
    """One draw of Beta(alpha, alpha), seeded from ``gen`` (torch's own Beta takes no generator)."""
    return float(np.random.default_rng(int(torch.randint(2**62, (1,), generator=gen))).beta(alpha, alpha))


def cutmix_box(h: int, w: int, lam: float, gen: torch.Generator) -> tuple[slice, slice]:
    """A box of about (1 - lam) of an h x w image, centred anywhere, clipped at the edges (CutMix's)."""
    cut = math.sqrt(1 - lam)
    bh, bw = round(h * cut), round(w * cut)
    cy, cx = (int(torch.randint(0, side, (1,), generator=gen)) for side in (h, w))
    top, left = cy - bh // 2, cx - bw // 2
    return slice(max(top, 0), min(top + bh, h)), slice(max(left, 0), min(left + bw, w))


def mix_batch(
    x: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix, as ``cfg`` switches them on: (images, class-probability targets), or the batch unchanged.

    Each image is paired with its mirror in the batch's order (the batch reversed: the order is random, so the
    pairs are; a data-parallel process pairs within its own share) and one weight ``lam`` ~ Beta(alpha, alpha)
    is drawn for the batch. Mixup blends the images by ``lam``; cutmix pastes a box of the partner and sets
    ``lam`` to the area kept. The targets blend the label-smoothed labels by the same ``lam``, so each row sums
    to 1. With both on, each batch takes one of the two, evenly. The draws are the same every batch whatever
    its size, so a resumed epoch can skip them.
    """
    if not (cfg.mixup or cfg.cutmix):
        return x, labels
    coin = float(torch.rand(1, generator=gen))
    use_cutmix = cfg.cutmix > 0 and (cfg.mixup == 0 or coin < 0.5)
    lam = beta(cfg.cutmix if use_cutmix else cfg.mixup, gen)
    ys, xs = cutmix_box(x.shape[2], x.shape[3], lam, gen)
    partner = x.flip(0)
    if use_cutmix:
        x = x.clone()
        x[:, :, ys, xs] = partner[:, :, ys, xs]
        lam = 1 - (ys.stop - ys.start) * (xs.stop - xs.start) / (x.shape[2] * x.shape[3])
    else:
        x = x * lam + partner * (1 - lam)
    smooth = soft_targets(labels, cfg.label_smoothing)
    return x, smooth * lam + smooth.flip(0) * (1 - lam)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N,3,H,W] → float32 in [0, 1] (what every model takes)."""
    return images.float().div_(255.0)


def preview_grid(
    images: torch.Tensor, cfg: TrainConfig, seed: int = 0, rows: int = 4, cols: int = 8, scale: int = 3
) -> np.ndarray:
    """An HxWx3 uint8 picture: each row is one image, its columns independent augmentations.

    The first column is the original, so the effect of each switch is visible at a glance.
    Nearest-neighbour enlargement by ``scale`` keeps the 32x32 pixels crisp.
    """
    gen = torch.Generator().manual_seed(seed)
    originals = to_float(images[:rows])
    tiles = [originals] + [augment_batch(originals, cfg, gen) for _ in range(cols - 1)]
    stack = torch.stack(tiles, 1)  # rows, cols, 3, 32, 32
    stack = F.pad(stack, (1, 1, 1, 1), value=1.0)
    r, c, ch, h, w = stack.shape
    grid = stack.permute(0, 3, 1, 4, 2).reshape(r * h, c * w, ch)
    return enlarge((grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), scale)
