"""Optimizer, learning-rate schedule, loss and EMA weights for training.

Contracts:

- :func:`lr_at` is a **pure function of the iteration** (number of optimizer iterations already
  done): the trainer sets each step's learning rate from it. There is no scheduler object whose
  internal counter could drift, so resuming can never re-apply a decay — the EDSR-PyTorch bug where
  ``--resume`` halved the rate again (sanghyun-son/EDSR-PyTorch#296).
- Losses return a float32 scalar, mean over all elements, whatever dtype the prediction has.
- :class:`EMA` keeps ``shadow = d·shadow + (1 − d)·weights`` after every optimizer step, with the
  warm-up ``d = min(decay, (1 + t) / (10 + t))`` at iteration ``t`` (a pure function of the iteration,
  so resuming stays exact). Without it, 0.999 ** 1000 = 37 % of the average is still the random
  initial weights after 1,000 iterations: the first validations would score the initialisation.
  Buffers are copied; its state dict loads into a plain :class:`~srpipe.model.edsr.EDSR`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from srpipe.config import TrainConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def build_optimizer(cfg: TrainConfig, params: Iterable[nn.Parameter],
                    device: torch.device) -> torch.optim.Optimizer:
    """Adam or AdamW with the recipe's betas/eps/weight decay; the fused CUDA kernel on GPUs."""
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    # fused=True runs the whole update in a few kernels on CUDA; on the CPU the default (foreach) is used.
    fused = True if device.type == "cuda" else None
    return cls(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused)


def lr_at(cfg: TrainConfig, iteration: int) -> float:
    """Learning rate of the step taken after ``iteration`` completed steps (see the module docstring).

    ``step``: ``lr · gamma^(number of milestones ≤ iteration)`` — the paper's "halved at 200k".
    ``cosine``: from ``lr`` down to ``min_lr`` over the iterations after warm-up.
    Warm-up (``warmup_iterations`` > 0) scales either linearly from ``lr / warmup`` up to ``lr``.
    """
    if cfg.warmup_iterations > 0 and iteration < cfg.warmup_iterations:
        return cfg.lr * (iteration + 1) / cfg.warmup_iterations
    if cfg.scheduler == "step":
        return cfg.lr * cfg.gamma ** sum(1 for m in cfg.milestones if iteration >= m)
    span = max(1, cfg.iterations - cfg.warmup_iterations)
    t = min(1.0, max(0.0, (iteration - cfg.warmup_iterations) / span))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_loss(cfg: TrainConfig) -> LossFn:
    """L1 (the paper's) or Charbonnier ``mean(sqrt((sr − hr)² + eps²))``, computed in float32."""
    if cfg.loss == "l1":
        def l1(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.l1_loss(sr.float(), hr.float())

        return l1
    eps2 = cfg.charbonnier_eps**2

    def charbonnier(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        diff = sr.float() - hr.float()
        return torch.sqrt(diff * diff + eps2).mean()

    return charbonnier


class EMA:
    """Exponential moving average of a model's weights (a separate, frozen copy of the model)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, iteration: int) -> float:
        """The decay used after optimizer step ``iteration`` (0-based), warm-up included."""
        return min(self.decay, (1.0 + iteration) / (10.0 + iteration))

    @torch.no_grad()
    def update(self, model: nn.Module, iteration: int) -> None:
        """Blend the current weights in after step ``iteration``; ``model`` must be the unwrapped module
        (same parameter order)."""
        ema_params: list[torch.Tensor] = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay_at(iteration))
        for dst, src in zip(self.module.buffers(), model.buffers(), strict=True):
            dst.copy_(src)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state, strict=True)
