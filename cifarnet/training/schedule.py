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
from cifarnet.nets.norms import norm_layers


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for batch ``step`` (0-based) of ``cfg.total_steps``, peaking at ``cfg.peak_lr`` (``lr``, or
    ``lr`` scaled to the batch size: ``lr_scaling``), called lr here:

    - onecycle: linear warm-up from lr/10 to lr over ``warmup`` of the steps, then linear
      decay to 0 (the triangular one-cycle that fast CIFAR trainers use);
    - cosine: half a cosine from lr to 0;
    - step: lr divided by 10 after each third of training;
    - constant: lr throughout.
    """
    total, lr = cfg.total_steps, cfg.peak_lr
    t = min(step, total) / total
    if cfg.schedule == "onecycle":
        if cfg.warmup > 0 and t < cfg.warmup:
            return lr * (0.1 + 0.9 * t / cfg.warmup)
        return lr * max(0.0, (1 - t) / (1 - cfg.warmup))
    if cfg.schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "step":
        return lr * 0.1 ** min(2, int(t * 3))
    return lr


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer over the trainable parameters; weight decay skips norm weights and biases (1-D
    tensors). With ``norm_bias_lr`` other than 1 the norms' biases form a group of their own whose ``lr_scale``
    :func:`set_lr` applies (kept as one group otherwise, so a run saved before that option resumes)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    biases = {id(m.bias) for m in norm_layers(model)} if cfg.norm_bias_lr != 1 else set()
    decay = [p for p in trainable if p.ndim > 1]
    no_decay = [p for p in trainable if p.ndim <= 1 and id(p) not in biases]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if biases:
        groups.append(
            {"params": [p for p in trainable if id(p) in biases], "weight_decay": 0.0, "lr_scale": cfg.norm_bias_lr}
        )
    if cfg.optimizer in ("sgd", "nesterov"):
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.optimizer == "nesterov" and cfg.momentum > 0
        )
    betas = (cfg.momentum, 0.999)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas)


def freeze_norm_scales(model: nn.Module) -> None:
    """Keep every norm's scale where it is (1 at initialisation): not trained, not in the optimizer."""
    for layer in norm_layers(model):
        layer.weight.requires_grad_(False)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group at ``lr`` times its own ``lr_scale`` (1 where it has none)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
