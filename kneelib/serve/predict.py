"""Grade new knee radiograph crops with one run, an ensemble of runs, or an exported model.

A :class:`Predictor` holds the loaded runs; each image is preprocessed the way each run recorded
(``kneelib.data.io.read_image`` → ``kneelib.data.transforms.preprocess`` → ``to_tensor``, via
:func:`kneelib.evaluate.forward`) and several runs are combined with the evaluation's own
:func:`kneelib.evaluate.ensemble_probabilities`. :func:`load_grader` returns a Predictor or an
:class:`kneelib.serve.export.ExportedModel` (ONNX / TorchScript): both are a :class:`Grader`. Full
bilateral radiographs go through :mod:`kneelib.radiograph.bilateral`; heat maps through :mod:`kneelib.serve.explain`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

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


class Grader(Protocol):
    """What grades crops: class names, the input it expects, and probabilities for images."""

    @property
    def class_names(self) -> tuple[str, ...]: ...

    @property
    def image_size(self) -> int: ...

    @property
    def clahe(self) -> bool: ...

    def probabilities(self, images: Sequence[ImageSource], **kwargs: Any) -> np.ndarray: ...


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

    @property
    def image_size(self) -> int:
        """The largest input size among the runs (each run still resizes to its own)."""
        return max(r.image_size for r in self.runs)

    @property
    def clahe(self) -> bool:
        """True when every run applies CLAHE itself (raw crops expected)."""
        return all(r.clahe for r in self.runs)

    def heatmap(self, image: ImageSource) -> tuple[np.ndarray, np.ndarray]:
        """Grad-CAM map of the predicted class (averaged over the runs) and the probabilities (C,)."""
        from kneelib.serve.explain import ensemble_gradcam

        return ensemble_gradcam(self.runs, image)

    def logits(self, images: Sequence[ImageSource], *, batch_size: int = 32,
               progress: bool | None = False) -> list[np.ndarray]:
        """Each run's logits (N, C) for image paths or uint8 grayscale arrays."""
        return forward(self.runs, list(images), batch_size=batch_size, progress=progress, calibrated=True)

    def probabilities(self, images: Sequence[ImageSource], **kwargs: Any) -> np.ndarray:
        """Class probabilities (N, C): the single run's softmax, or the ensemble's."""
        logits = self.logits(images, **kwargs)
        return softmax(logits[0]) if len(logits) == 1 else ensemble_probabilities(logits)

    def predict(self, images: Sequence[ImageSource], **kwargs: Any) -> list[dict[str, Any]]:
        """``[{"image", "grade", "probabilities": {class: p}}]`` — ``grade`` is the likeliest class."""
        return grade_images(self, images, **kwargs)


def grade_record(probabilities: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """``{"grade": likeliest class, "probabilities": {class: p}}`` for one image's probabilities."""
    return {"grade": class_names[int(np.argmax(probabilities))],
            "probabilities": {name: float(probabilities[k]) for k, name in enumerate(class_names)}}


def grade_images(grader: Grader, images: Sequence[ImageSource], **kwargs: Any) -> list[dict[str, Any]]:
    """``[{"image", "grade", "probabilities"}]`` for image paths or uint8 arrays."""
    probs = grader.probabilities(images, **kwargs)
    return [{"image": "<array>" if isinstance(img, np.ndarray) else str(img),
             **grade_record(p, grader.class_names)} for img, p in zip(images, probs)]


def load_grader(*, runs: Sequence[str | os.PathLike] | None = None, model: str | os.PathLike | None = None,
                device: str | torch.device = "auto") -> Grader:
    """A :class:`Predictor` for ``runs``, or the exported ``model`` (ONNX/TorchScript + sidecar)."""
    if bool(runs) == (model is not None):
        raise KneelibError("give either run directories (--runs) or an exported model (--model), not both")
    if model is not None:
        from kneelib.serve.export import ExportedModel

        return ExportedModel.load(model)
    return Predictor(list(runs or ()), device=device)


def check_images(images: Sequence[str | os.PathLike]) -> list[Path]:
    """The image paths, after checking each exists as a file (KneelibError naming the first that does not)."""
    if not images:
        raise KneelibError("no images given")
    paths = [Path(i) for i in images]
    for path in paths:
        if not path.is_file():
            raise KneelibError(f"{path}: image not found")
    return paths


def output_stems(paths: Sequence[str | os.PathLike]) -> list[str]:
    """One file stem per input for the files written about it, unique even where two inputs share a name
    (``knee``, ``knee__2``, ...; characters other than letters, digits and ``_ . + -`` become ``_``)."""
    stems, used = [], set()
    for path in paths:
        base = re.sub(r"[^\w.+-]", "_", Path(path).stem).lstrip(".") or "image"
        stem, n = base, 1
        while stem in used:
            n += 1
            stem = f"{base}__{n}"
        used.add(stem)
        stems.append(stem)
    return stems


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
