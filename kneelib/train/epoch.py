"""One pass over a split: the batches in their seeded order, and :func:`run_epoch`, which steps through them.

Each training epoch's order and augmentation are seeded from ``(seed, epoch)``, so a resumed run sees the
same batches as an uninterrupted one. Batches come from a DataLoader (per-image augmentation on the host) or,
with the images on the device, from :class:`~kneelib.data.batched.DeviceBatches` (batched augmentation there).
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from kneelib.data.batched import BatchedAugmentation, DeviceBatches
from kneelib.data.dataset import DecodeCache, KneeDataset
from kneelib.data.layout import Sample
from kneelib.data.schemes import Scheme
from kneelib.train import optim, runtime
from kneelib.train.config import TrainConfig
from kneelib.train.threads import ThreadGovernor

__all__ = ["Placement", "TrainHooks", "Progress", "run_epoch", "RunData", "train_steps"]

Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Placement:
    """Where a run's batches live and go: the device and memory format the model runs in; the images kept on the
    device (batched augmentation there) or decoded on the host by ``workers`` DataLoader processes."""

    device: torch.device
    memory_format: torch.memory_format = torch.contiguous_format
    on_device: bool = False
    workers: int = 0


@dataclass(frozen=True)
class TrainHooks:
    """What runs after every training step: a per-batch schedule, the weight average (updated from the trained
    model), the governor that re-sizes CPU threads to what other processes leave free."""

    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    ema: nn.Module | None = None
    governor: ThreadGovernor | None = None

    def after_step(self, model: nn.Module) -> None:
        """Step the schedule, update the average, let the governor look."""
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(model)
        if self.governor is not None:
            self.governor.step()


@dataclass(frozen=True)
class Progress:
    """A tqdm bar over a pass (``show`` False: none)."""

    desc: str = ""
    total: int | None = None
    show: bool = False


def run_epoch(model: nn.Module, batches: Iterable, step: Step, placement: Placement, *,
              hooks: TrainHooks | None = None, progress: Progress = Progress()) -> tuple[float, float, int]:
    """One pass of ``step`` over ``batches``: trains (``hooks`` after every step) when ``hooks`` is given, else
    evaluates. Returns (mean loss, accuracy, images seen).

    Sums stay on the device (no host sync per batch on a GPU); ``step`` runs in its precision."""
    training = hooks is not None
    model.train(training)
    device = placement.device
    cuda = device.type == "cuda"
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    grad = contextlib.nullcontext() if training else torch.inference_mode()
    with grad, tqdm(batches, desc=progress.desc, leave=False, disable=not progress.show, unit="batch",
                    total=progress.total, file=sys.stderr) as bar:
        for i, (images, targets) in enumerate(bar):
            images = images.to(device, non_blocking=cuda, memory_format=placement.memory_format)
            targets = targets.to(device, non_blocking=cuda)
            loss, logits = step(images, targets)
            if training:
                hooks.after_step(model)
            n = targets.numel()
            total_loss += loss.double() * n
            correct += (logits.argmax(1) == targets).sum()
            seen += n
            if progress.show and i % 10 == 0:
                bar.set_postfix(loss=f"{float(total_loss) / seen:.3f}", acc=f"{int(correct) / seen:.1%}",
                                refresh=False)
    total_loss, correct = float(total_loss), int(correct)
    return total_loss / max(seen, 1), correct / max(seen, 1), seen


def _drops_last(n: int, batch_size: int) -> bool:
    """Training drops a last batch of one image (batch norm cannot train on it)."""
    return n % batch_size == 1


def train_steps(n: int, batch_size: int) -> int:
    """Optimizer steps per training epoch over ``n`` images (as :class:`RunData` batches them)."""
    return math.ceil(n / batch_size) - _drops_last(n, batch_size)


def _order(dataset: KneeDataset, config: TrainConfig, epoch: int | None,
           generator: torch.Generator | None = None) -> list[int]:
    """Training order of ``epoch`` (seeded shuffle, or class-balanced draws), file order for validation."""
    n = len(dataset)
    if epoch is None:
        return list(range(n))
    if generator is None:
        generator = torch.Generator().manual_seed(runtime.derive_seed(config.seed, epoch, 1))
    if config.balanced:  # each class drawn equally often, with replacement
        weights = optim.class_balanced_weights(dataset.targets)
        return torch.multinomial(weights, n, replacement=True, generator=generator).tolist()
    return torch.randperm(n, generator=generator).tolist()


def _loader(dataset: KneeDataset, config: TrainConfig, *, epoch: int | None, workers: int,
            cuda: bool) -> DataLoader:
    """Batches in a seeded order for training (``epoch`` given) or in file order for validation."""
    n = len(dataset)
    generator = torch.Generator().manual_seed(runtime.derive_seed(config.seed, epoch or 0, 1))
    order = _order(dataset, config, epoch, generator)
    if epoch is not None:
        dataset.set_epoch(epoch)
    return DataLoader(dataset, batch_size=config.batch_size, sampler=order, num_workers=workers,
                      pin_memory=cuda, drop_last=epoch is not None and _drops_last(n, config.batch_size),
                      generator=generator, worker_init_fn=_worker_init, persistent_workers=False)


def _worker_init(worker_id: int) -> None:
    """Workers: one thread each, python/numpy seeded from the worker's torch seed."""
    torch.set_num_threads(1)
    runtime.seed_everything(torch.initial_seed() % 2**63)


class RunData:
    """A run's train and val splits, preprocessed (``cache``: decoded images; ``bar``: a progress bar), and their
    batches for an epoch, where ``placement`` keeps them."""

    def __init__(self, config: TrainConfig, splits: Mapping[str, Sequence[Sample]], scheme: Scheme,
                 placement: Placement, *, cache: DecodeCache | None, bar: bool) -> None:
        self.config, self.placement, self.num_classes = config, placement, scheme.num_classes
        self.datasets = {name: KneeDataset(s, scheme, image_size=config.image_size, train=name == "train",
                                           clahe=config.clahe, cache=cache, progress=bar, seed=config.seed,
                                           augment=config.augment)
                         for name, s in splits.items()}
        self.device_data = ({name: DeviceBatches(ds.images, ds.targets, placement.device, seed=config.seed,
                                                 augment=ds.train and BatchedAugmentation.of_strength(config.augment))
                             for name, ds in self.datasets.items()} if placement.on_device else None)

    def steps_per_epoch(self) -> int:
        """Optimizer steps per training epoch."""
        return train_steps(len(self.datasets["train"]), self.config.batch_size)

    def batches(self, name: str, epoch: int | None) -> Iterable:
        """Split ``name``'s batches: training epoch ``epoch``'s, or (None) validation's in file order."""
        dataset, config = self.datasets[name], self.config
        if self.device_data is None:
            return _loader(dataset, config, epoch=epoch, workers=self.placement.workers,
                           cuda=self.placement.device.type == "cuda")
        drop = epoch is not None and _drops_last(len(dataset), config.batch_size)
        return self.device_data[name].batches(_order(dataset, config, epoch), config.batch_size, epoch=epoch or 0,
                                              drop_last=drop, memory_format=self.placement.memory_format)
