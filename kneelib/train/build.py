"""What a run trains with, built from its recipe and runtime: where it executes (:class:`Execution`) and the
model with its optimizer, schedule, weight average and steps (:class:`Learner`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kneelib.models.registry import build_model
from kneelib.train import optim
from kneelib.train import runtime as backend
from kneelib.train.config import Runtime, TrainConfig
from kneelib.train.epoch import Placement, RunData, TrainHooks
from kneelib.train.losses import Criterion, head_of, make_criterion
from kneelib.train.steps import EagerStep, GraphedStep, make_step
from kneelib.train.threads import ThreadGovernor

__all__ = ["Execution", "resolve", "Learner", "build_learner", "place_model", "make_lazy_step"]


@dataclass(frozen=True)
class Execution:
    """A :class:`~kneelib.train.config.Runtime` resolved on this machine: where batches live and go, whether
    steps may replay CUDA graphs, the precision."""

    placement: Placement
    graphs: bool
    precision: str

    @property
    def device(self) -> torch.device:
        return self.placement.device

    def record(self, step: EagerStep | GraphedStep | None = None) -> dict[str, str | None]:
        """``config.json``'s ``execution``: where the data lived, how steps ran (``step``: as the built one
        ran them; None: as planned), in which arithmetic (``fp32`` or ``bf16 autocast``)."""
        cuda = self.device.type == "cuda"
        if step is not None:
            path, why = step.path, step.why
        else:
            path = "cuda graph" if self.graphs else "eager"
            why = None if self.graphs else "CUDA graphs switched off" if cuda else "a CPU runs eagerly"
        bf16 = backend.autocast_dtype(self.precision, self.device) is torch.bfloat16
        return {"data": "on the device, batched augmentation" if self.placement.on_device
                else "host, per-image augmentation (PIL) in a DataLoader", "step": path, "why_eager": why,
                "arithmetic": "bf16 autocast" if bf16 else "fp32"}


def resolve(config: TrainConfig, runtime: Runtime) -> Execution:
    """The device (``auto``: cuda when available), its loader workers, memory format and data placement."""
    device = backend.resolve_device(runtime.device)
    cuda = device.type == "cuda"
    bf16 = backend.autocast_dtype(runtime.precision, device) is torch.bfloat16
    placement = Placement(device, backend.memory_format(device, config.arch, bf16=bf16),
                          on_device=runtime.data_on_device if runtime.data_on_device is not None else cuda,
                          workers=runtime.workers if runtime.workers is not None else backend.default_workers(device))
    return Execution(placement, graphs=cuda and runtime.cuda_graphs, precision=runtime.precision)


class _LazyStep:
    """A step built from the first batch it sees (a CUDA graph is captured on a real batch's shape)."""

    def __init__(self, build: Callable[[torch.Tensor], EagerStep | GraphedStep]) -> None:
        self.build, self.step = build, None

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.step is None:
            self.step = self.build(images)
        return self.step(images, targets)


def place_model(model: nn.Module, config: TrainConfig, device: torch.device, *, graphs: bool,
                precision: str = "auto") -> tuple[nn.Module, torch.optim.Optimizer, torch.memory_format]:
    """``(model, optimizer, memory format)``: the model on ``device`` in the layout a run trains in, and its
    optimizer (capturable when ``graphs``). ``benchmarks/gpu_bench.py`` measures what this builds."""
    bf16 = backend.autocast_dtype(precision, device) is torch.bfloat16
    fmt = backend.memory_format(device, config.arch, bf16=bf16)
    model = model.to(device, memory_format=fmt)
    # The fused kernel does the same update in far less of the step's time on a CPU (measured:
    # benchmarks/README.md, "The fused optimizer").
    optimizer = optim.make_optimizer(model, config, fused=device.type in ("cpu", "cuda"), capturable=graphs)
    return model, optimizer, fmt


def make_lazy_step(model: nn.Module, optimizer: torch.optim.Optimizer | None, device: torch.device,
                   config: TrainConfig, *, num_classes: int, criterion: Criterion | None = None, graphs: bool,
                   log: Callable[[str], None] | None = None, precision: str = "auto") -> _LazyStep:
    """A run's training (``optimizer`` given) or evaluation step, built (a CUDA graph captured) at the first
    batch it sees; ``criterion``: what it minimises (default cross-entropy)."""
    return _LazyStep(lambda example: make_step(
        model, optimizer, device, batch_size=config.batch_size, example=example, num_classes=num_classes,
        criterion=criterion, graphs=graphs, log=log, precision=precision))


@dataclass
class Learner:
    """The model a run trains, its optimizer, schedule (``per_step``: stepped every batch, else every epoch),
    weight average (None: off) and its training and validation steps."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    per_step: bool
    ema: nn.Module | None
    train_step: _LazyStep
    val_step: _LazyStep

    @property
    def kept(self) -> nn.Module:
        """The weights validated and kept in ``best.pt``: the average when there is one."""
        return self.model if self.ema is None else self.ema.module

    def lr(self) -> float:
        """The learning rate of the next step."""
        return float(self.optimizer.param_groups[0]["lr"])

    def hooks(self, governor: ThreadGovernor | None) -> TrainHooks:
        """What runs after each training step."""
        return TrainHooks(self.scheduler if self.per_step else None, self.ema, governor)

    def end_epoch(self) -> None:
        """Step a per-epoch schedule."""
        if not self.per_step:
            self.scheduler.step()

    def state(self) -> dict[str, Any]:
        """Weights, optimizer, average and schedule, as ``last.pt`` keeps them."""
        return {"model": cpu_state(self.model), "optimizer": self.optimizer.state_dict(),
                **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
                "scheduler": self.scheduler.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`; KeyError, RuntimeError or ValueError when it does not fit."""
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        optim.lr_to_device(self.optimizer, next(self.model.parameters()).device)  # capturable: lr on the GPU
        self.scheduler.load_state_dict(state["scheduler"])


def build_learner(config: TrainConfig, execution: Execution, data: RunData, *, pretrained: bool,
                  log: Callable[[str], None], bar: bool) -> Learner:
    """The model (``config.weights`` when ``pretrained``, else random: a resumed run loads ``last.pt``), placed
    on the device, with what ``config`` asks for to train it; steps build at their first batch."""
    model = build_model(config.arch, num_classes=data.num_classes, head=head_of(config.loss),
                        weights=config.weights if pretrained else None, progress=bar)
    device, graphs = execution.device, execution.graphs
    model, optimizer, _ = place_model(model, config, device, graphs=graphs, precision=execution.precision)
    scheduler, per_step = optim.make_scheduler(optimizer, config, data.steps_per_epoch())
    ema = optim.make_ema(model, config.ema_decay)
    criterion = make_criterion(config.loss, label_smoothing=config.label_smoothing, num_classes=data.num_classes,
                               train_targets=data.datasets["train"].targets, device=device)
    steps = [make_lazy_step(module, opt, device, config, num_classes=data.num_classes, criterion=minimised,
                            graphs=graphs, log=log, precision=execution.precision)
             for module, opt, minimised in ((model, optimizer, criterion),
                                            (model if ema is None else ema.module, None, None))]
    return Learner(model, optimizer, scheduler, per_step, ema, *steps)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict as contiguous CPU tensors (loadable anywhere, channels-first)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
