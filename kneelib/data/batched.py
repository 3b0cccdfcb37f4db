"""The paper's augmentation for a whole batch at once, and a split's images resident on the device.

The per-image path (:class:`~kneelib.data.dataset.KneeDataset` in a DataLoader) draws each image's
augmentation with PIL; it stays the default on a CPU, where the data is a small part of a training step
(measured: the same epoch time either way) and the committed smoke numbers come from it. On a GPU the decoded uint8
crops of a split live on the device as one ``N×1×S×S`` tensor (:class:`DeviceBatches`): a batch is an
index into it, augmented there by :class:`BatchedAugmentation` (plain batched tensor ops, an independent draw
per image), with no worker processes, no host-to-device copy and no device-to-host synchronisation per step.
The same code runs on CPU tensors.

Draws are seeded from ``(seed, epoch, step)`` (:func:`augmentation_step_seed`), so a resumed run repeats them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kneelib.data.transforms import NORMALIZE

__all__ = ["BatchedAugmentation", "DeviceBatches", "normalize_batch", "augmentation_step_seed"]

#: The paper's augmentation (as :func:`kneelib.data.transforms.paper_augmentation`).
DEGREES, SCALE, JITTER, FLIP = 10.0, (0.9, 1.1), 0.33, 0.5
#: Columns of the one uniform draw per image and batch (:meth:`BatchedAugmentation.draw`).
_FLIP, _ANGLE, _SCALE, _JITTER_FIRST, _BRIGHTNESS, _CONTRAST, _BRIGHTNESS_FIRST = range(7)
DRAWS = 7


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
    image's mean), and, as torchvision's ``ColorJitter``, its brightness before or after its contrast
    (p 0.5 each). Flip and affine commute in distribution. Brightness multiplies by a factor drawn
    uniformly from ``[max(0, 1 - brightness), 1 + brightness]``; contrast blends with the image's mean
    by a factor drawn likewise; both clamp to [0, 1]. The warp rotates about the centre by an angle drawn
    uniformly from ``±degrees`` and scales by a factor drawn uniformly from ``scale``, sampling the nearest
    source pixel and filling with 0 outside it. Saturation jitter, which the paper lists, does nothing to a
    grayscale image and is left out. Returns floats in [0, 1], ``N×1×S×S``.

    A strength of 0 (``degrees=0`` and ``scale=(1, 1)``, ``brightness=0``, ``contrast=0``, ``flip=0``)
    turns that operation off; all of them off returns the input as floats, unchanged.

    Every parameter of a batch comes from one ``torch.rand`` on the batch's device (``generator``: a
    generator of that device), and every operation is a batched tensor operation: no value is read
    back to the host, so nothing waits for the device.
    """

    def __init__(self, *, degrees: float = DEGREES, scale: tuple[float, float] = SCALE,
                 brightness: float = JITTER, contrast: float = JITTER, flip: float = FLIP) -> None:
        super().__init__()
        lo, hi = (float(s) for s in scale)
        if degrees < 0 or not 0 < lo <= hi or brightness < 0 or contrast < 0 or not 0 <= flip <= 1:
            raise ValueError(f"BatchedAugmentation: degrees >= 0, 0 < scale[0] <= scale[1], brightness >= 0, "
                             f"contrast >= 0, 0 <= flip <= 1; got {degrees}, {scale}, {brightness}, "
                             f"{contrast}, {flip}")
        self.degrees, self.scale = float(degrees), (lo, hi)
        self.brightness, self.contrast, self.flip = float(brightness), float(contrast), float(flip)

    @classmethod
    def of_strength(cls, strength: float) -> BatchedAugmentation:
        """The paper's augmentation with rotation, scale range and jitter scaled by ``strength`` (0: the flip
        alone), as :func:`kneelib.data.transforms.paper_augmentation`."""
        return cls(degrees=DEGREES * strength, scale=(1 - 0.1 * strength, 1 + 0.1 * strength),
                   brightness=JITTER * strength, contrast=JITTER * strength)

    @property
    def warps(self) -> bool:
        return self.degrees > 0 or self.scale != (1.0, 1.0)

    @property
    def jitters(self) -> bool:
        return self.brightness > 0 or self.contrast > 0

    def draw(self, n: int, device: torch.device | str, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        """A batch's uniform draws: ``n×7`` on ``device``, one kernel (:meth:`params` turns them into the
        parameters)."""
        return torch.rand(n, DRAWS, device=device, generator=generator)

    def params(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each image's parameters from its draws ``u`` (``n×7``), as device tensors of ``n``: ``flip`` and
        ``jitter_first``, ``brightness_first`` (bool), ``angle`` (degrees), ``scale``, ``brightness`` and
        ``contrast`` (factors)."""
        lo, hi = self.scale
        return {"flip": u[:, _FLIP] < self.flip, "angle": (2.0 * u[:, _ANGLE] - 1.0) * self.degrees,
                "scale": lo + (hi - lo) * u[:, _SCALE], "jitter_first": u[:, _JITTER_FIRST] < 0.5,
                "brightness": _factor(u[:, _BRIGHTNESS], self.brightness),
                "contrast": _factor(u[:, _CONTRAST], self.contrast),
                "brightness_first": u[:, _BRIGHTNESS_FIRST] < 0.5}

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment ``images`` with a fresh draw (from ``generator``, a generator of their device, or the
        device's default one)."""
        return self.apply(images, self.draw(images.shape[0], images.device, generator))

    def apply(self, images: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Augment ``images`` with the draws ``u`` (:meth:`draw`)."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"BatchedAugmentation needs uint8 N×1×S×S, got {images.dtype} {tuple(images.shape)}")
        x = images.float().div_(255.0)
        p = self.params(u)
        if self.flip > 0:
            x = torch.where(_per_image(p["flip"]), x.flip(-1), x)
        if not self.jitters:
            return self._warp(x, p) if self.warps else x
        if not self.warps:
            return self._jitter(x, p)
        jitter_first = _per_image(p["jitter_first"])
        x = torch.where(jitter_first, self._jitter(x, p), x)
        x = self._warp(x, p)
        return torch.where(jitter_first, x, self._jitter(x, p))

    def _warp(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rotation about the centre and scaling, nearest source pixel, zero outside (torchvision's
        ``RandomAffine`` with its defaults: a positive angle turns the image counter-clockwise)."""
        n, _, h, w = x.shape
        angle = p["angle"] * (math.pi / 180.0)
        inv = 1.0 / p["scale"]
        cos, sin = torch.cos(angle) * inv, torch.sin(angle) * inv
        zero = torch.zeros_like(cos)
        # Output → source, in affine_grid's normalised coordinates (x right, y down, pixel centres at
        # (2i + 1) / size - 1): the inverse rotation and scale about the centre, corrected for the aspect ratio.
        theta = torch.stack([torch.stack([cos, sin * (h / w), zero], 1),
                             torch.stack([-sin * (w / h), cos, zero], 1)], 1)
        grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    def _jitter(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """Brightness and contrast, each image in its drawn order."""
        b, c = _per_image(p["brightness"]), _per_image(p["contrast"])

        def brightness(y: torch.Tensor) -> torch.Tensor:
            return (y * b).clamp_(0.0, 1.0)

        def contrast(y: torch.Tensor) -> torch.Tensor:
            return (c * y + (1.0 - c) * y.mean((1, 2, 3), keepdim=True)).clamp_(0.0, 1.0)

        if not self.contrast:
            return brightness(x)
        if not self.brightness:
            return contrast(x)
        return torch.where(_per_image(p["brightness_first"]), contrast(brightness(x)), brightness(contrast(x)))


def _per_image(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _factor(u: torch.Tensor, strength: float) -> torch.Tensor:
    """A factor drawn uniformly from ``[max(0, 1 - strength), 1 + strength]`` (torchvision's ColorJitter)."""
    lo = max(0.0, 1.0 - strength)
    return lo + (1.0 + strength - lo) * u


class DeviceBatches:
    """One split's preprocessed uint8 images and targets as device tensors, batched by index.

    ``images``: the uint8 ``1×S×S`` tensors of a :class:`~kneelib.data.dataset.KneeDataset` (its
    ``images``); ``augment``: apply :class:`BatchedAugmentation` (training; pass an instance for other
    strengths). At 224 px the whole kneeKL224 set is ~414 MB of uint8.
    """

    def __init__(self, images: Sequence[torch.Tensor], targets: torch.Tensor, device: torch.device | str, *,
                 augment: bool | BatchedAugmentation, seed: int = 0) -> None:
        self.device = torch.device(device)
        self.images = torch.stack(list(images)).to(self.device)
        self.targets = targets.to(self.device)
        if isinstance(augment, BatchedAugmentation):
            self.augment: BatchedAugmentation | None = augment
        else:
            self.augment = BatchedAugmentation() if augment else None
        self.seed = int(seed)
        # Seeding a generator of the device is host-side bookkeeping: no kernel, no synchronisation.
        self.generator = torch.Generator(device=self.device)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def _index(self, order: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """``order`` as a long tensor on the device (a host list is copied once per epoch, without waiting)."""
        if isinstance(order, torch.Tensor):
            return order.to(self.device, torch.long, non_blocking=True)
        index = torch.tensor(list(order), dtype=torch.long)
        if self.device.type == "cuda":
            return index.pin_memory().to(self.device, non_blocking=True)
        return index.to(self.device)

    def batches(self, order: Sequence[int] | torch.Tensor, batch_size: int, *, epoch: int = 0,
                drop_last: bool = False, memory_format: torch.memory_format = torch.contiguous_format,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(normalised float N×3×S×S, targets)`` for consecutive ``batch_size`` slices of ``order``."""
        index = self._index(order)
        n = int(index.shape[0])
        stop = n - n % batch_size if drop_last else n
        for step, start in enumerate(range(0, stop, batch_size)):
            i = index[start:start + batch_size]
            u8 = self.images.index_select(0, i)
            if self.augment is not None:
                self.generator.manual_seed(augmentation_step_seed(self.seed, epoch, step))
                x = self.augment(u8, self.generator)
            else:
                x = u8.float().div_(255.0)
            yield normalize_batch(x, memory_format), self.targets.index_select(0, i)
