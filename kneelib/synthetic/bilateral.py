"""Synthetic bilateral PA knee radiographs with their true knee-joint boxes (for localisation).

Both knees of one synthetic patient, femur and tibia shafts, soft tissue and air background, in
the PA display convention: the patient's right knee on the image's LEFT. The anatomy is the one
of :mod:`kneelib.synthetic.crops` (the right knee drawn as is, the left one mirrored), so a box
cropped out, resized to 224 px and CLAHE-processed looks like a training crop. The image is the
raw radiograph: no CLAHE.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import cv2
import numpy as np

from kneelib.synthetic.anatomy import (
    CROP_CENTRE_Y,
    CROP_MM,
    SEVERITY_SD,
    Grid,
    expose,
    knee_attenuation,
    sample_knee,
    sample_patient,
)

BOX_COLUMNS = ("image", "side", "x0", "y0", "x1", "y1", "grade", "spacing_mm")


def _knee_affine(xc: float, yc: float, crop_px: float, angle: float, mirror: bool) -> np.ndarray:
    """2x3 map from image pixel centres to the knee coordinates of a knee whose joint is at (xc, yc)."""
    c, s = math.cos(angle), math.sin(angle)
    L = np.array([[c, s], [-s, c]]) / crop_px
    if mirror:
        L[0] *= -1.0
    return np.hstack([L, (-L @ [xc, yc])[:, None]])


def render_bilateral(
    rng: np.random.Generator,
    grades: tuple[int, int],
    *,
    width: int = 1024,
    height: int = 832,
    spacing_mm: float | None = None,
    severities: tuple[float, float] | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Render one bilateral PA radiograph (uint8, height x width) of knees graded (right, left).

    Returns the image and one box per knee, right knee first: ``{"side", "x0", "y0", "x1", "y1",
    "grade", "severity", "spacing_mm"}`` — a square of one crop width (``CROP_MM`` mm) centred on
    the joint the way the training crops are, in integer pixel coordinates (x1, y1 exclusive).
    """
    if len(grades) != 2 or any(int(g) not in range(5) for g in grades):
        raise ValueError(f"grades must be two KL grades 0-4, got {grades!r}")
    patient = sample_patient(rng)
    patient["exposure"] = (rng.uniform(0.0, 0.05), rng.uniform(0.95, 1.02), rng.uniform(1.0, 1.4))
    spacing = float(spacing_mm) if spacing_mm is not None else rng.uniform(0.33, 0.4) * 1024 / width
    crop_px = CROP_MM / spacing
    if severities is None:
        severities = tuple(float(np.clip(g + rng.normal(0.0, SEVERITY_SD), -0.6, 4.8)) for g in grades)
    sep = rng.uniform(1.7, 1.9) * crop_px
    yc = height * rng.uniform(0.47, 0.55)
    A = np.zeros((height, width), np.float32)
    boxes = []
    half = width // 2
    for side, grade, sev, x0, x1, sgn in (("R", grades[0], severities[0], 0, half, 1.0),
                                          ("L", grades[1], severities[1], half, width, -1.0)):
        xc = width / 2 - sgn * sep / 2 + rng.normal(0.0, 0.02 * crop_px)
        yk = yc + rng.normal(0.0, 0.02 * crop_px)
        angle = sgn * math.radians(rng.uniform(0.0, 4.0))  # femora converge towards the knees
        M = _knee_affine(xc, yk, crop_px, angle, mirror=sgn < 0)
        sub = M.copy()
        sub[:, 2] += M[:, 0] * x0  # the grid covers columns x0..x1 only
        grid = Grid.from_affine((height, x1 - x0), sub)
        knee = sample_knee(rng, sev, patient)
        A[:, x0:x1] = knee_attenuation(grid, knee, rng)
        centre = np.linalg.solve(M[:, :2], np.array([0.0, CROP_CENTRE_Y]) - M[:, 2])
        r = crop_px / 2
        bx0, by0 = int(round(centre[0] - r)), int(round(centre[1] - r))
        n = int(round(crop_px))
        boxes.append({"side": side, "x0": bx0, "y0": by0, "x1": bx0 + n, "y1": by0 + n, "grade": int(grade),
                      "severity": round(sev, 4), "spacing_mm": round(spacing, 4)})
    img = expose(A, rng, patient)
    scale = width / 1024
    cv2.putText(img, "R", (int(40 * scale), int(80 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 2.0 * scale, 235,
                max(1, int(4 * scale)), cv2.LINE_AA)
    return img, boxes


def write_bilateral(folder: str | os.PathLike, n: int, *, seed: int, first_id: int,
                    width: int = 1024, height: int = 832) -> list[str]:
    """Write ``n`` bilateral radiographs ``<7-digit id>.png`` and ``boxes.csv`` into ``folder``.

    Each image has its own Generator from (seed, image number); the two knees' grades differ by
    at most one. Returns the file names.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(BOX_COLUMNS)
    names = []
    for i in range(n):
        rng = np.random.default_rng([seed, 3, i])
        g_right = int(rng.integers(0, 5))
        g_left = int(np.clip(g_right + rng.integers(-1, 2), 0, 4))
        img, boxes = render_bilateral(rng, (g_right, g_left), width=width, height=height)
        name = f"{first_id + i:07d}.png"
        ok, png = cv2.imencode(".png", img)
        (folder / name).write_bytes(png.tobytes())
        names.append(name)
        for b in boxes:
            writer.writerow((name, b["side"], b["x0"], b["y0"], b["x1"], b["y1"], b["grade"], b["spacing_mm"]))
    (folder / "boxes.csv").write_text(buf.getvalue())
    return names
