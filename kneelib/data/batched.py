"""The paper's augmentation for a whole batch at once, and a split's images resident on the device.

The per-image path (:class:`~kneelib.data.dataset.KneeDataset` in a DataLoader) draws each image's
augmentation with PIL; it stays the default on a CPU, where the data is a small part of a training step
(measured: the same epoch time either way) and the committed smoke numbers come from it. On a GPU the decoded uint8
crops of a split live on the device as one ``N×1×S×S`` tensor (:class:`DeviceBatches`): a batch is an
index into it, augmented there by :class:`BatchedAugmentation` (kornia, an independent draw per image),
with no worker processes and no host-to-device copy per step. The same code runs on CPU tensors.

Draws are seeded from ``(seed, epoch, step)``, so a resumed run repeats them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from kneelib.data.transforms import NORMALIZE

__all__ = ["BatchedAugmentation", "DeviceBatches", "normalize_batch", "augmentation_step_seed"]

#: The paper's augmentation (as :func:`kneelib.data.transforms.paper_augmentation`).
DEGREES, SCALE, JITTER = 10.0, (0.9, 1.1), 0.33


def normalize_batch(x: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Float ``N×1×S×S`` in [0, 1] → normalised with :data:`NORMALIZE`, gray replicated to 3 channels."""
    mean, std = NORMALIZE
    x = (x - mean) / std
    return x.expand(-1, 3, -1, -1).contiguous(memory_format=memory_format)


def augmentation_step_seed(seed: int, epoch: int, step: int) -> int:
    """Seed of the batched augmentation of training step ``step`` of ``epoch`` (stable across processes)."""
    digest = hashlib.blake2b(f"batch,{int(seed)},{int(epoch)},{int(step)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class BatchedAugmentation(nn.Module):
    """Horizontal flip (p 0.5), affine (±10°, scale 0.9–1.1, nearest, zero fill) and brightness/contrast
    jitter (0.33), an independent draw per image, for a uint8 ``N×1×S×S`` batch on any device.

    As the PIL path's ``RandomOrder``, each image is jittered before or after its affine warp (p 0.5
    each; the order matters only at the zero-filled corners, which contrast jitter lifts to the
    image's mean). Flip and affine commute in distribution. Saturation jitter, which the paper lists,
    does nothing to a grayscale image and is left out. Returns floats in [0, 1], ``N×1×S×S``.
    """

    def __init__(self, *, degrees: float = DEGREES, scale: tuple[float, float] = SCALE,
                 brightness: float = JITTER, contrast: float = JITTER) -> None:
        super().__init__()
        import kornia.augmentation as K

        self.flip = K.RandomHorizontalFlip(p=0.5)
        self.affine = K.RandomAffine(degrees=degrees, scale=scale, resample="nearest", padding_mode="zeros",
                                     p=1.0)
        self.jitter = K.ColorJitter(brightness=brightness, contrast=contrast, p=1.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"BatchedAugmentation needs uint8 N×1×S×S, got {images.dtype} {tuple(images.shape)}")
        x = images.float().div_(255.0)
        jitter_first = (torch.rand(x.shape[0], device=x.device) < 0.5).view(-1, 1, 1, 1)
        x = self.flip(x)
        x = torch.where(jitter_first, self.jitter(x), x)
        x = self.affine(x)
        return torch.where(jitter_first, x, self.jitter(x))


class DeviceBatches:
    """One split's preprocessed uint8 images and targets as device tensors, batched by index.

    ``images``: the uint8 ``1×S×S`` tensors of a :class:`~kneelib.data.dataset.KneeDataset` (its
    ``images``); ``augment``: apply :class:`BatchedAugmentation` (training). At 224 px the whole
    kneeKL224 set is ~414 MB of uint8.
    """

    def __init__(self, images: Sequence[torch.Tensor], targets: torch.Tensor, device: torch.device | str, *,
                 augment: bool, seed: int = 0) -> None:
        self.device = torch.device(device)
        self.images = torch.stack(list(images)).to(self.device)
        self.targets = targets.to(self.device)
        self.augment = BatchedAugmentation().to(self.device) if augment else None
        self.seed = int(seed)
        # kornia draws on the module's device: fork (and seed) that generator too.
        self._rng_devices = [self.device.index or 0] if self.device.type == "cuda" else []

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def batches(self, order: Sequence[int], batch_size: int, *, epoch: int = 0, drop_last: bool = False,
                memory_format: torch.memory_format = torch.contiguous_format,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(normalised float N×3×S×S, targets)`` for consecutive ``batch_size`` slices of ``order``."""
        index = torch.as_tensor(list(order), dtype=torch.long).to(self.device)
        n = int(index.shape[0])
        stop = n - n % batch_size if drop_last else n
        for step, start in enumerate(range(0, stop, batch_size)):
            i = index[start:start + batch_size]
            u8 = self.images.index_select(0, i)
            if self.augment is not None:
                with torch.random.fork_rng(devices=self._rng_devices):
                    torch.manual_seed(augmentation_step_seed(self.seed, epoch, step))
                    x = self.augment(u8)
            else:
                x = u8.float().div_(255.0)
            yield normalize_batch(x, memory_format), self.targets.index_select(0, i)
