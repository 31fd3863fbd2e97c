"""Optimizers and learning-rate schedules, stepped every batch.

The schedule is a pure function of the step (``lr_at``), not a stateful scheduler
object: resuming needs only the step number, and the dashboard can draw the curve a
config will follow before any training starts.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cifarnet.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for batch ``step`` (0-based) of ``cfg.total_steps``.

    - onecycle: linear warm-up from lr/10 to lr over ``warmup`` of the steps, then linear
      decay to 0 (the triangular one-cycle that fast CIFAR trainers use);
    - cosine: half a cosine from lr to 0;
    - step: lr divided by 10 after each third of training;
    - constant: lr throughout.
    """
    total = cfg.total_steps
    t = min(step, total) / total
    if cfg.schedule == "onecycle":
        if cfg.warmup > 0 and t < cfg.warmup:
            return cfg.lr * (0.1 + 0.9 * t / cfg.warmup)
        return cfg.lr * max(0.0, (1 - t) / (1 - cfg.warmup))
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "step":
        return cfg.lr * 0.1 ** min(2, int(t * 3))
    return cfg.lr


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer; weight decay skips norm weights and biases (1-D tensors)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer in ("sgd", "nesterov"):
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.optimizer == "nesterov"
                               and cfg.momentum > 0)
    betas = (cfg.momentum, 0.999)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
