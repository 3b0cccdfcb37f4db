"""Image preprocessing (resize + CLAHE), tensor conversion and the paper's augmentation.

:func:`preprocess` is THE single preprocessing function: training, evaluation and prediction all call
it, with the ``image_size`` and ``clahe`` flag recorded in the run's ``config.json``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torchvision.transforms import v2

from kneelib.errors import KneelibError

#: Normalisation (mean, std) applied to every channel after scaling to [0, 1] (as the paper's code).
NORMALIZE: tuple[float, float] = (0.5, 0.5)
#: OpenCV CLAHE parameters of the kneeKL224 data set.
CLAHE_CLIP_LIMIT = 5.0
CLAHE_TILE_GRID = (8, 8)
#: Bumped whenever :func:`preprocess` changes its output (keys the on-disk decode cache).
PREPROCESS_VERSION = 1


def clahe(gray: np.ndarray) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV, clip 5.0, 8x8 tiles) of a uint8 image."""
    return cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=CLAHE_TILE_GRID).apply(gray)


def preprocess(gray: np.ndarray, *, image_size: int, clahe: bool) -> np.ndarray:
    """Resize a uint8 grayscale image to ``image_size`` squared, then optionally apply CLAHE.

    Downscaling uses ``INTER_AREA``, upscaling ``INTER_LINEAR``. CLAHE runs on the resized image,
    which reproduces the kneeKL224 files from the raw 299 px crops (mean |diff| about 2 grey levels).
    """
    gray = np.asarray(gray)
    if gray.ndim == 3 and gray.shape[2] == 1:
        gray = gray[:, :, 0]
    if gray.ndim != 2 or gray.dtype != np.uint8 or gray.size == 0:
        raise KneelibError(
            f"preprocess needs a non-empty uint8 grayscale image, got {gray.dtype} {gray.shape}"
        )
    if image_size < 1:
        raise KneelibError(f"image size must be positive, got {image_size}")
    h, w = gray.shape
    if (h, w) != (image_size, image_size):
        shrink = h >= image_size and w >= image_size
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (image_size, image_size), interpolation=interp)
    if clahe:
        gray = _clahe(gray)
    return np.ascontiguousarray(gray)


_clahe = clahe  # preprocess's ``clahe`` flag shadows the function name inside it


def to_tensor(u8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 image(s) -> float tensor normalised with :data:`NORMALIZE`, gray replicated to 3 channels.

    Accepts ``S×S`` or ``1×S×S`` (returns ``3×S×S``) and ``N×S×S`` or ``N×1×S×S`` batches (returns
    ``N×3×S×S``).
    """
    t = torch.as_tensor(u8)
    if t.dtype != torch.uint8:
        raise KneelibError(f"to_tensor needs uint8 input, got {t.dtype}")
    if t.ndim == 2:
        t = t.unsqueeze(0)
    elif t.ndim == 3 and t.shape[0] != 1:  # a batch N×S×S
        t = t.unsqueeze(1)
    if t.ndim not in (3, 4) or t.shape[-3] != 1:
        raise KneelibError(f"to_tensor needs S×S, 1×S×S, N×S×S or N×1×S×S, got {tuple(t.shape)}")
    mean, std = NORMALIZE
    x = t.float().div_(255.0).sub_(mean).div_(std)
    return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous()


def paper_augmentation(strength: float = 1.0) -> v2.Transform:
    """The paper's train-time augmentation, in random order (uint8 ``1×S×S`` tensors or PIL images).

    Horizontal flip (p=0.5), affine (rotation ±10°, scale 0.9–1.1) and colour jitter (brightness,
    contrast, saturation 0.33). Saturation is kept for fidelity to the paper's recipe; it has no effect
    on a grayscale image (torchvision returns 1-channel input unchanged, as the paper's 3 identical
    channels would be), but it keeps the random draws of the recipe.

    ``strength`` scales the rotation, the scale range and the jitter (1: the paper's; 0: the flip alone,
    the augmentation a short from-scratch run trains best with, docs/recipes.md).
    """
    if strength < 0:
        raise KneelibError(f"augmentation strength must not be negative, got {strength}")
    if strength == 0:
        return v2.RandomHorizontalFlip()
    jitter = 0.33 * strength
    return v2.RandomOrder(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=10 * strength, scale=(1 - 0.1 * strength, 1 + 0.1 * strength)),
            v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
        ]
    )
