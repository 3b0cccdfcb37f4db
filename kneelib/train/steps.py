"""One training or evaluation step, eagerly or replayed from a CUDA graph.

At the paper's batch of 32 a GPU step is bound by kernel launches, not arithmetic (SE blocks add ~1% of
the FLOPs and cost 2.5× the time eagerly). :class:`GraphedStep` captures the whole step — forward, loss,
backward and the optimizer update, or the forward alone for evaluation — once, into a CUDA graph, and
replays it for every full batch; a smaller last batch runs eagerly on the same weights. Capture needs a
``capturable`` optimizer whose learning rate is a device tensor (so schedules change it in place):
:func:`kneelib.train.optim.make_optimizer` builds one when asked. Where capture is impossible (a CPU,
or capture fails) :func:`make_step` returns the eager step and says why.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from kneelib.train.losses import Criterion, make_criterion
from kneelib.train.runtime import autocast_dtype

__all__ = ["EagerStep", "GraphedStep", "make_step"]

#: Eager iterations run (on a side stream, then undone) before capture, as torch.cuda.graphs advises.
WARMUP_ITERS = 3


def _autocast(device: torch.device, dtype: torch.dtype | None, *,
              cache_enabled: bool = True) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (None: plain fp32, nothing to do)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache_enabled)


class EagerStep:
    """``step(images, targets) -> (loss, logits)``: forward, ``criterion`` (default cross-entropy) and, when
    training, backward and the optimizer update, launched kernel by kernel."""

    path = "eager"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, device: torch.device, *,
                 criterion: Criterion | None = None, why: str | None = None, precision: str = "auto") -> None:
        self.model, self.optimizer, self.device = model, optimizer, device
        self.criterion = criterion or make_criterion()
        self.why = why
        self.dtype = autocast_dtype(precision, device)  # None: fp32

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, *,
                 capture: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``capture``: the call being recorded into a CUDA graph (no autocast cache, and no ``zero_grad``:
        the graph's backward owns the ``.grad`` tensors it writes)."""
        with _autocast(self.device, self.dtype, cache_enabled=not capture):
            logits = self.model(images)
        loss = self.criterion(logits.float(), targets)
        if self.optimizer is not None:
            if not capture:
                self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return loss.detach(), logits.detach()


class _Snapshot:
    """The weights, buffers (BN statistics) and optimizer state, to restore in place after warm-up.

    Optimizer state that did not exist yet (Adam's moments before its first step) is zeroed, which is
    what the optimizer's lazy initialisation would give."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        self.model, self.optimizer = model, optimizer
        self.tensors = [t.detach().clone() for t in self._module_tensors()]
        self.state = {(i, k): v.detach().clone() for i, p in enumerate(self._params())
                      for k, v in self._param_state(p).items() if isinstance(v, torch.Tensor)}

    def _module_tensors(self) -> list[torch.Tensor]:
        return [p.data for p in self.model.parameters()] + list(self.model.buffers())

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]] if self.optimizer else []

    def _param_state(self, p: torch.Tensor) -> dict:
        return self.optimizer.state.get(p, {}) if self.optimizer else {}

    @torch.no_grad()
    def restore(self) -> None:
        for tensor, value in zip(self._module_tensors(), self.tensors):
            tensor.copy_(value)
        for i, p in enumerate(self._params()):
            for k, v in self._param_state(p).items():
                if isinstance(v, torch.Tensor):
                    saved = self.state.get((i, k))
                    v.copy_(saved) if saved is not None else v.zero_()


class GraphedStep:
    """The step of :class:`EagerStep` captured into a CUDA graph for batches of exactly ``batch_size``.

    Warm-up iterations run on a side stream before capture (they initialise cuDNN, autograd and the
    optimizer state); the weights, BN statistics and optimizer state are then restored in place, so
    capture does not change training. Other batch sizes run eagerly. Outputs are static tensors,
    overwritten by the next replay (read them before the next call, as the training loop does).
    """

    path = "cuda graph"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, device: torch.device, *,
                 batch_size: int, example: torch.Tensor, num_classes: int,
                 criterion: Criterion | None = None, precision: str = "auto") -> None:
        self.eager = EagerStep(model, optimizer, device, criterion=criterion, precision=precision)
        self.batch_size = batch_size
        self.why = None
        self.static_images = torch.empty((batch_size, *example.shape[1:]), dtype=example.dtype, device=device)
        self.static_images = self.static_images.contiguous(memory_format=_memory_format_of(example))
        self.static_images.copy_(example[:1].expand_as(self.static_images))
        self.static_targets = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.static_targets[: min(num_classes, batch_size)] = torch.arange(min(num_classes, batch_size))
        training = optimizer is not None
        model.train(training)  # the graph keeps the mode it was captured in
        grad = contextlib.nullcontext() if training else torch.no_grad()
        snapshot = _Snapshot(model, optimizer) if training else None
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side), grad:
                for _ in range(WARMUP_ITERS):
                    self.eager(self.static_images, self.static_targets)
            torch.cuda.current_stream(device).wait_stream(side)
            if training:
                optimizer.zero_grad(set_to_none=True)  # the graph's backward then owns the .grad tensors
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: other threads (a DataLoader's pin-memory thread, which queries CUDA events) may
            # call CUDA while this thread captures; "global" would forbid that and break the capture.
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"), grad:
                self.static_loss, self.static_logits = self.eager(self.static_images, self.static_targets,
                                                                  capture=True)
        finally:  # undo the warm-up's updates (capture records kernels without running them)
            torch.cuda.synchronize(device)
            if snapshot is not None:
                snapshot.restore()

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[0] != self.batch_size:
            return self.eager(images, targets)
        self.static_images.copy_(images)
        self.static_targets.copy_(targets)
        self.graph.replay()
        return self.static_loss, self.static_logits


def _memory_format_of(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer | None, device: torch.device, *,
              batch_size: int, example: torch.Tensor, num_classes: int, criterion: Criterion | None = None,
              graphs: bool = True, log: Callable[[str], None] | None = None,
              precision: str = "auto") -> EagerStep | GraphedStep:
    """A :class:`GraphedStep` on CUDA when ``graphs`` (and capture succeeds), else an :class:`EagerStep`
    whose ``why`` says why the graph was not taken (also passed to ``log``). ``precision``: see
    :func:`kneelib.train.runtime.autocast_dtype`."""
    why = None
    if device.type != "cuda":
        why = f"CUDA graphs need a CUDA device (running on {device.type})"
    elif not graphs:
        why = "CUDA graphs switched off"
    elif optimizer is not None and not all(g.get("capturable") for g in optimizer.param_groups):
        why = "the optimizer is not capturable"
    else:
        try:
            return GraphedStep(model, optimizer, device, batch_size=batch_size, example=example,
                               num_classes=num_classes, criterion=criterion, precision=precision)
        except torch.cuda.OutOfMemoryError:
            raise  # the training loop reports it (batch size, free memory)
        except RuntimeError as exc:
            why = f"CUDA graph capture failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            torch.cuda.synchronize(device)
    if why and log and device.type == "cuda":
        log(f"eager steps: {why}")
    return EagerStep(model, optimizer, device, criterion=criterion, why=why, precision=precision)
