"""What a :class:`~kneelib.train.config.TrainConfig` builds for training: the optimiser, the learning-rate schedule,
the weight average (EMA) and class-balanced sample weights.

The named recipes that set these fields are :mod:`kneelib.train.recipes` (data only: this module reads a config,
never a recipe, so ``config`` → ``recipes`` and ``optim`` → ``config`` form no circle).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from kneelib.train.config import TrainConfig


def make_optimizer(model: nn.Module, config: TrainConfig, *, fused: bool,
                   capturable: bool = False) -> torch.optim.Optimizer:
    """Adam (the paper: L2 weight decay) or AdamW (decoupled weight decay).

    ``capturable``: state and learning rate live on the model's device (the lr as a tensor, which
    schedules update in place), so the update can be captured in a CUDA graph."""
    import torch

    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    if capturable:
        device = next(model.parameters()).device
        return kind(model.parameters(), lr=torch.tensor(config.lr, device=device),
                    weight_decay=config.weight_decay, fused=fused, capturable=True)
    return kind(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   steps_per_epoch: int) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
    """``(scheduler, per_step)``: the paper's StepLR stepped per epoch, or warm-up + cosine per batch."""
    import torch

    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma), False
    total = max(1, config.epochs * steps_per_epoch)
    warmup = warmup_steps(config, steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True


def warmup_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """The linear warm-up's length in steps: ``warmup_epochs``, at most half of a short run."""
    return min(max(1, config.epochs * steps_per_epoch) // 2, config.warmup_epochs * steps_per_epoch)


def make_ema(model: nn.Module, decay: float) -> nn.Module | None:
    """An exponential moving average of the weights and BN statistics (None when ``decay`` is 0).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as timm's ModelEma),
    so a short run's average is not dominated by the random initial weights; the first update copies the
    weights. The update count lives on the model's device and the update reads nothing back, so on a GPU a
    step neither copies the count to the device nor waits for it (``AveragedModel`` keeps it on the host
    and tests ``n == 0`` at every update)."""
    if not decay:
        return None
    import itertools

    import torch
    from torch.optim.swa_utils import AveragedModel

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            weight = torch.where(n == 0, 1.0, 1.0 - torch.clamp((1.0 + n) / (10.0 + n), max=decay))
            delta = torch._foreach_sub([c for _, c in floats], [a for a, _ in floats])
            torch._foreach_mul_(delta, weight)
            torch._foreach_add_([a for a, _ in floats], delta)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():
                a.copy_(c)

    class DeviceAveragedModel(AveragedModel):
        """``AveragedModel`` (same state_dict) whose update stays on the device."""

        @torch.no_grad()
        def update_parameters(self, model: nn.Module) -> None:
            averaged = [t.detach() for t in itertools.chain(self.module.parameters(), self.module.buffers())]
            current = [t.detach() for t in itertools.chain(model.parameters(), model.buffers())]
            update(averaged, current, self.n_averaged)
            self.n_averaged += 1

    device = next(itertools.chain(model.parameters(), model.buffers())).device
    return DeviceAveragedModel(model, device=device, multi_avg_fn=update, use_buffers=True)


def lr_to_device(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move tensor learning rates (a capturable optimizer's, e.g. as loaded from a checkpoint) to ``device``."""
    import torch

    for group in optimizer.param_groups:
        for key in ("lr", "initial_lr"):
            if isinstance(group.get(key), torch.Tensor):
                group[key] = group[key].to(device)


def class_balanced_weights(targets: torch.Tensor) -> torch.Tensor:
    """Per-sample weights inversely proportional to the class frequency (each class drawn equally often)."""
    import torch

    counts = torch.bincount(targets).clamp(min=1).double()
    return (1.0 / counts)[targets]
