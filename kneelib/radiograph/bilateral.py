"""From a full bilateral PA radiograph to two graded knees: locate, crop, grade, explain, draw.

:func:`grade_bilateral` reads the radiograph (PNG/JPEG/DICOM via :func:`kneelib.data.io.read_radiograph`,
with its pixel spacing when the file has one), finds both knee joints with a
:class:`kneelib.radiograph.localizer.Localizer`, turns each box into a crop like the training data and grades it
with any :class:`kneelib.serve.predict.Grader` (runs or an exported model).

Crops follow the data set's convention: the Chen 2018 / OAI crops are **not** mirrored (a left knee
keeps its fibula on the image's right; see :mod:`kneelib.synthetic.crops`), so neither are ours. Each
crop is resized to the grader's input size and CLAHE-processed (clip 5, 8x8 tiles) the way the
``kneeKL224`` crops were, unless the grader applies CLAHE itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kneelib.data.io import read_radiograph
from kneelib.data.transforms import clahe
from kneelib.radiograph.localizer import KneeBox, Localizer, crop_knee
from kneelib.serve.predict import Grader, grade_record

#: Box colours (RGB) per side in the overview image.
SIDE_COLOURS = {"R": (255, 64, 64), "L": (64, 160, 255)}


@dataclass
class KneeResult:
    """One graded knee: its box, the crop the grader saw, probabilities and (optionally) a heat map."""

    box: KneeBox
    crop: np.ndarray
    grade: str
    probabilities: dict[str, float]
    heatmap: np.ndarray | None = None

    @property
    def side(self) -> str:
        return self.box.side


@dataclass
class BilateralResult:
    """Both knees of one radiograph, right knee (image left) first."""

    image: str
    radiograph: np.ndarray
    spacing_mm: float | None
    knees: list[KneeResult] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """``{"image", "spacing_mm", "knees": [{"side", "box", "grade", "probabilities"}]}``."""
        return {"image": self.image, "spacing_mm": self.spacing_mm,
                "knees": [{"side": k.side, "box": k.box.as_list(), "grade": k.grade,
                           "probabilities": k.probabilities} for k in self.knees]}


def grading_crop(radiograph: np.ndarray, box: KneeBox, *, image_size: int, apply_clahe: bool = True) -> np.ndarray:
    """The box as a training-style crop: unmirrored, ``image_size`` square, CLAHE-processed."""
    crop = crop_knee(radiograph, box, mirror=False, pad="edge")
    interp = cv2.INTER_AREA if crop.shape[0] > image_size else cv2.INTER_LINEAR
    crop = cv2.resize(crop, (image_size, image_size), interpolation=interp)
    return clahe(crop) if apply_clahe else crop


def grade_bilateral(
    path: str | os.PathLike,
    grader: Grader,
    localizer: Localizer,
    *,
    heatmaps: bool = False,
) -> BilateralResult:
    """Locate, crop and grade both knees of the radiograph at ``path``.

    ``heatmaps``: also compute each knee's Grad-CAM map (needs a grader with ``heatmap``, i.e. runs,
    not an exported model).
    """
    radiograph, spacing = read_radiograph(path)
    boxes = localizer.locate(radiograph, spacing_mm=spacing)
    crops = [grading_crop(radiograph, b, image_size=grader.image_size, apply_clahe=not grader.clahe)
             for b in boxes]
    probs = grader.probabilities(crops)
    result = BilateralResult(str(path), radiograph, spacing)
    for box, crop, p in zip(boxes, crops, probs):
        record = grade_record(p, grader.class_names)
        cam = grader.heatmap(crop)[0] if heatmaps else None  # type: ignore[attr-defined]
        result.knees.append(KneeResult(box, crop, record["grade"], record["probabilities"], cam))
    return result


def overview_image(result: BilateralResult, *, max_width: int = 1024) -> np.ndarray:
    """The radiograph (RGB, at most ``max_width`` wide) with each knee's box, side and grade drawn."""
    img = result.radiograph
    scale = min(1.0, max_width / img.shape[1])
    if scale < 1.0:
        img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA)
    rgb = np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    thick = max(2, round(img.shape[1] / 400))
    font = max(0.5, img.shape[1] / 1400)
    for knee in result.knees:
        x0, y0, x1, y1 = (round(v * scale) for v in knee.box.as_list())
        colour = SIDE_COLOURS.get(knee.side, (255, 255, 0))
        cv2.rectangle(rgb, (x0, y0), (x1 - 1, y1 - 1), colour, thick, cv2.LINE_AA)
        p = knee.probabilities[knee.grade]
        label = f"{knee.side}: {knee.grade} ({100 * p:.0f}%)"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
        ty = y0 - 6 if y0 - th - 8 >= 0 else y1 + th + 6
        cv2.rectangle(rgb, (x0, ty - th - 4), (x0 + tw + 6, ty + base), (0, 0, 0), -1)
        cv2.putText(rgb, label, (x0 + 3, ty), cv2.FONT_HERSHEY_SIMPLEX, font, colour, thick, cv2.LINE_AA)
    return rgb


def write_outputs(result: BilateralResult, out_dir: str | os.PathLike, stem: str | None = None) -> dict[str, Path]:
    """Write ``<stem>_overview.png`` and the ``<stem>_<side>.png`` crops into ``out_dir`` (each
    atomically; ``stem`` defaults to the radiograph's file stem); return the paths by ``"overview"`` / side."""
    from kneelib.atomic import write_bytes

    out = Path(out_dir)
    stem = stem or Path(result.image).stem
    files = {"overview": (out / f"{stem}_overview.png", overview_image(result))}
    for knee in result.knees:
        files[knee.side] = (out / f"{stem}_{knee.side}.png", knee.crop)
    written = {}
    for key, (path, image) in files.items():
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
        written[key] = write_bytes(path, cv2.imencode(".png", bgr)[1].tobytes())
    return written
