"""Grad-CAM heat maps for trained runs and their ensemble, through the ``grad-cam`` package.

:func:`gradcam` explains one run's decision for one image with ``pytorch_grad_cam.GradCAM`` on the
last convolutional stage (:func:`target_layer`); :func:`ensemble_gradcam` averages the maps of
several runs for the ensemble's predicted class (:func:`kneelib.evaluate.ensemble_probabilities`).
Images go through :func:`kneelib.evaluate.input_batch`, the preprocessing the runs recorded.

torchvision's DenseNet applies ``F.relu(features, inplace=True)`` to the hooked activations, so the
captured tensor would be overwritten (post-ReLU on CPU, where ``.cpu()`` returns the same storage,
pre-ReLU on CUDA). :func:`relu_not_inplace` swaps in an out-of-place forward for the duration of the
explanation and restores the model's own forward afterwards.
"""

from __future__ import annotations

import contextlib
import os
import re
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.densenet import DenseNet

from kneelib import atomic
from kneelib.data.io import read_image
from kneelib.errors import KneelibError
from kneelib.evaluate import (
    ImageSource,
    LoadedRun,
    check_compatible,
    ensemble_probabilities,
    forward,
    input_batch,
)

__all__ = ["target_layer", "relu_not_inplace", "gradcam", "ensemble_gradcam", "overlay", "write_overlays"]

_SAFE_NAME = re.compile(r"^[\w.+-]+$")


def target_layer(model: nn.Module, arch: str) -> nn.Module:
    """The layer Grad-CAM hooks: the last convolutional stage's output.

    (SE-)ResNet: the last block of ``layer4``. (SE-)DenseNet: ``features[-1]``, i.e. the final
    batch norm ``norm5`` (DenseNet) or the SE block ``se5`` after it (SE-DenseNet) — the feature
    maps the classifier pools, before the final ReLU (pytorch-grad-cam's documented DenseNet target).
    """
    try:
        if "resnet" in arch:
            return model.layer4[-1]
        if "densenet" in arch:
            return model.features[-1]
    except (AttributeError, IndexError, TypeError):
        raise KneelibError(f"model does not have the layout of architecture {arch!r}") from None
    raise KneelibError(f"no Grad-CAM target layer known for architecture {arch!r}")


def _densenet_forward(self: DenseNet, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``DenseNet.forward`` with an out-of-place final ReLU."""
    out = F.relu(self.features(x))
    out = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
    return self.classifier(out)


@contextlib.contextmanager
def relu_not_inplace(model: nn.Module) -> Iterator[nn.Module]:
    """Run a torchvision DenseNet with an out-of-place final ReLU inside the block; restore after.

    Other models (whose forward does not modify the hooked activations) are yielded unchanged.
    """
    if not isinstance(model, DenseNet) or type(model).forward is not DenseNet.forward:
        yield model
        return
    previous = model.__dict__.get("forward")
    model.forward = types.MethodType(_densenet_forward, model)
    try:
        yield model
    finally:
        if previous is None:
            del model.forward
        else:
            model.forward = previous


def _check_target(target: int | None, num_classes: int) -> None:
    integer = isinstance(target, (int, np.integer)) and not isinstance(target, bool)
    if target is not None and not (integer and 0 <= target < num_classes):
        raise KneelibError(f"target class must be an integer in 0..{num_classes - 1}, got {target!r}")


def _cam(run: LoadedRun, batch: torch.Tensor, target: int | None) -> np.ndarray:
    """Grad-CAM maps (N, S, S) in [0, 1] of ``run`` for a preprocessed batch."""
    model = run.model
    layer = target_layer(model, str(run.config["arch"]))
    from pytorch_grad_cam import GradCAM  # imported here: `kneelib train` must not need it
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    was_training = model.training
    with torch.inference_mode(False), torch.enable_grad(), relu_not_inplace(model):
        # a leaf that needs grad: the hooked activations get gradients even with frozen weights
        x = batch.clone().to(run.device).requires_grad_(True)
        cam = GradCAM(model=model, target_layers=[layer])
        try:
            targets = None if target is None else [ClassifierOutputTarget(int(target))] * len(x)
            maps = cam(input_tensor=x, targets=targets)
        finally:
            cam.activations_and_grads.release()
            model.zero_grad(set_to_none=True)
            model.train(was_training)
    maps = np.asarray(maps, dtype=np.float32)
    if not np.isfinite(maps).all():
        raise KneelibError(f"{run.path}: Grad-CAM map is not finite (does the model output NaN?)")
    return np.clip(maps, 0.0, 1.0)


def gradcam(run: LoadedRun, image_u8: ImageSource, *, target: int | None = None) -> np.ndarray:
    """Grad-CAM map (S×S float32 in [0, 1], S = the run's input size) of one image.

    ``image_u8``: a uint8 grayscale array (any size) or an image path; ``target``: the class index
    to explain, ``None`` for the run's predicted class.
    """
    _check_target(target, run.scheme.num_classes)
    batch = input_batch([image_u8], image_size=run.image_size, clahe=run.clahe)
    return _cam(run, batch, target)[0]


def ensemble_gradcam(
    runs: Sequence[LoadedRun], image_u8: ImageSource, *, target: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The mean of the runs' Grad-CAM maps for one class, and the ensemble's probabilities (C,).

    ``target=None`` explains the ensemble's predicted class (argmax of
    :func:`kneelib.evaluate.ensemble_probabilities`) in every member. Maps of runs with different
    input sizes are resized (bilinear) to the largest before averaging.
    """
    if not runs:
        raise KneelibError("no runs to explain")
    _check_target(target, check_compatible(runs).num_classes)
    gray = image_u8 if isinstance(image_u8, np.ndarray) else read_image(image_u8)  # decode once
    probs = ensemble_probabilities(forward(runs, [gray], progress=False))[0]
    cls = int(probs.argmax()) if target is None else int(target)
    size = max(r.image_size for r in runs)
    maps = []
    for run in runs:
        cam = gradcam(run, gray, target=cls)
        if cam.shape != (size, size):
            cam = cv2.resize(cam, (size, size), interpolation=cv2.INTER_LINEAR)
        maps.append(cam)
    return np.mean(maps, axis=0).astype(np.float32), probs


def overlay(image_u8: np.ndarray, cam: np.ndarray, *, image_weight: float = 0.5) -> np.ndarray:
    """The map drawn over the image as a JET heat map (``show_cam_on_image``): uint8 H×W×3 RGB.

    ``image_u8``: uint8 gray (H×W) or RGB (H×W×3); the map is resized (bilinear) to its size.
    """
    img = np.asarray(image_u8)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise KneelibError(f"overlay needs a uint8 H×W or H×W×3 image, got {img.dtype} {img.shape}")
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2 or not np.isfinite(cam).all():
        raise KneelibError(f"overlay needs a finite 2-D map, got shape {cam.shape}")
    h, w = img.shape[:2]
    if cam.shape != (h, w):
        cam = cv2.resize(cam, (w, h), interpolation=cv2.INTER_LINEAR)
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img
    return show_cam_on_image(rgb.astype(np.float32) / 255.0, np.clip(cam, 0.0, 1.0), use_rgb=True,
                             image_weight=image_weight)


def write_overlays(
    out_dir: str | os.PathLike, items: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]]
) -> list[Path]:
    """Write RGB uint8 images (e.g. from :func:`overlay`) as ``out_dir/<name>.png``, each atomically.

    ``items``: ``{name: image}`` or ``(name, image)`` pairs; a name is a plain file stem (letters,
    digits, ``_ . + -``; a trailing ``.png`` is allowed).
    """
    out = Path(out_dir)
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    written = []
    for name, image in pairs:
        stem = str(name)[:-4] if str(name).lower().endswith(".png") else str(name)
        if not _SAFE_NAME.match(stem) or stem.startswith("."):
            raise KneelibError(f"{out}: cannot name an overlay {name!r} (use a plain file name)")
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise KneelibError(f"{out / (stem + '.png')}: overlay must be uint8 H×W×3, got {img.dtype} "
                               f"{img.shape}")
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        if not ok:
            raise KneelibError(f"{out / (stem + '.png')}: PNG encoding failed")
        written.append(atomic.write_bytes(out / f"{stem}.png", encoded.tobytes()))
    return written
