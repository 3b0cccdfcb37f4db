"""Grade new knee radiograph crops with one run or an ensemble of runs.

A :class:`Predictor` holds the loaded runs; each image is preprocessed the way each run recorded
(``kneelib.data.io.read_image`` → ``kneelib.data.transforms.preprocess`` → ``to_tensor``, via
:func:`kneelib.evaluate.forward`) and several runs are combined with the evaluation's own
:func:`kneelib.evaluate.ensemble_probabilities`. Later extensions (bilateral localisation, heat maps,
ONNX models) plug in as further predictor methods / sources.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kneelib.errors import KneelibError
from kneelib.evaluate import (
    ImageSource,
    LoadedRun,
    as_device,
    ensemble_probabilities,
    forward,
    load_runs,
    softmax,
)


class Predictor:
    """Loaded runs (sharing one grade scheme) that turn images into class probabilities."""

    def __init__(
        self, run_dirs: Sequence[str | os.PathLike], *, device: str | torch.device = "auto"
    ) -> None:
        self.device = as_device(device)
        self.runs: list[LoadedRun] = load_runs(run_dirs, device=self.device)
        self.scheme = self.runs[0].scheme

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.scheme.class_names)

    def logits(self, images: Sequence[ImageSource], *, batch_size: int = 32,
               progress: bool | None = False) -> list[np.ndarray]:
        """Each run's logits (N, C) for image paths or uint8 grayscale arrays."""
        return forward(self.runs, list(images), batch_size=batch_size, progress=progress)

    def probabilities(self, images: Sequence[ImageSource], **kwargs: Any) -> np.ndarray:
        """Class probabilities (N, C): the single run's softmax, or the ensemble's."""
        logits = self.logits(images, **kwargs)
        return softmax(logits[0]) if len(logits) == 1 else ensemble_probabilities(logits)

    def predict(self, images: Sequence[ImageSource], **kwargs: Any) -> list[dict[str, Any]]:
        """``[{"image", "grade", "probabilities": {class: p}}]`` — ``grade`` is the likeliest class."""
        probs = self.probabilities(images, **kwargs)
        names = self.class_names
        return [
            {
                "image": "<array>" if isinstance(img, np.ndarray) else str(img),
                "grade": names[int(p.argmax())],
                "probabilities": {name: float(p[k]) for k, name in enumerate(names)},
            }
            for img, p in zip(images, probs)
        ]


def check_images(images: Sequence[str | os.PathLike]) -> list[Path]:
    """The image paths, after checking each exists as a file (KneelibError naming the first that does not)."""
    if not images:
        raise KneelibError("no images given")
    paths = [Path(i) for i in images]
    for path in paths:
        if not path.is_file():
            raise KneelibError(f"{path}: image not found")
    return paths


def predict_images(
    run_dirs: Sequence[str | os.PathLike],
    images: Sequence[str | os.PathLike],
    *,
    device: str | torch.device = "auto",
) -> list[dict[str, Any]]:
    """Grade image files with the given run(s): one dict per image (see :meth:`Predictor.predict`)."""
    paths = check_images(images)
    return Predictor(run_dirs, device=device).predict(paths)


def format_predictions(results: Sequence[dict[str, Any]], class_names: Sequence[str]) -> str:
    """A text table: image, predicted grade and the probability of every class."""
    width = max(len("image"), *(len(r["image"]) for r in results)) if results else len("image")
    cols = [max(len(c) + 2, 6) for c in class_names]
    head = f"{'image':<{width}}  {'grade':>5}  " + "  ".join(
        f"{'p(' + c + ')':>{w}}" for c, w in zip(class_names, cols)
    )
    lines = [head]
    for r in results:
        probs = "  ".join(f"{r['probabilities'][c]:>{w}.3f}" for c, w in zip(class_names, cols))
        lines.append(f"{r['image']:<{width}}  {r['grade']:>5}  {probs}")
    return "\n".join(lines)
