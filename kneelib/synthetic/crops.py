"""The synthetic KL-graded data set: the embedded default that runs the whole pipeline on a laptop.

:func:`generate_dataset` writes the real data's layout (``{split}/{grade}/<7-digit id><L|R>.png``,
patient-grouped 7:1:2 split, both knees per synthetic patient) plus ``manifest.csv`` with each
crop's hidden ``severity`` and joint-space width. Left knees are the mirror image of right knees,
as in the real data set (its L crops are not flipped to look like R crops). The crops themselves
come from :mod:`kneelib.synthetic.anatomy`; full bilateral radiographs with their knee boxes
from :mod:`kneelib.synthetic.bilateral`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from kneelib.atomic import atomic_dir
from kneelib.errors import KneelibError
from kneelib.synthetic.anatomy import (
    SEVERITY_SD,
    min_jsw_mm,
    render_knee,
    sample_patient,
)

SPLITS = ("train", "val", "test")
FIRST_ID = 1_000_000  # synthetic patient ids are 7 digits from here (real OAI ids are 9xxxxxx)
MANIFEST_COLUMNS = ("path", "grade", "patient_id", "side", "split", "blurred", "severity", "jsw_mm")


@dataclass(frozen=True)
class KneeJob:
    """One crop to render: which patient, side, grade and split, and whether it is blurred."""

    index: int
    patient: int
    side: str
    grade: int
    split: str
    blurred: bool

    @property
    def path(self) -> str:
        return f"{self.split}/{self.grade}/{FIRST_ID + self.patient:07d}{self.side}.png"


def plan_dataset(per_grade: int, seed: int, ratios: Sequence[float], blur_fraction: float) -> list[KneeJob]:
    """Pair ``5 * per_grade`` knees into patients and split them by patient.

    Exactly ``per_grade`` knees per grade; a patient's two knees differ by at most one grade (an
    odd total leaves one single-knee patient). Patients are split 7:1:2 (``ratios``) in order of
    their grades, so each split gets a similar grade mix. Exactly ``round(blur_fraction * n)``
    knees are blurred.
    """
    rng = np.random.default_rng([seed, 0])
    grades = np.repeat(np.arange(5), per_grade)
    g = grades[np.argsort(grades + rng.uniform(0.0, 1.5, grades.size), kind="stable")]
    pairs = [[int(v) for v in g[i : i + 2]] for i in range(0, g.size, 2)]
    pairs = [pairs[i] for i in rng.permutation(len(pairs))]  # patient index = position
    order = sorted(range(len(pairs)), key=lambda i: (min(pairs[i]), max(pairs[i]), i))
    want, have, split_of = np.asarray(ratios, float) / float(sum(ratios)), np.zeros(3), {}
    for n, i in enumerate(order, start=1):
        s = int(np.argmax(want * n - have))
        have[s] += 1
        split_of[i] = SPLITS[s]
    flips = rng.random(len(pairs)) < 0.5
    knees = []
    for i, pair in enumerate(pairs):
        sides = ("R", "L") if len(pair) == 2 else (("R",) if flips[i] else ("L",))
        pair = pair[::-1] if flips[i] and len(pair) == 2 else pair
        knees += [(i, side, grade) for side, grade in zip(sides, pair, strict=True)]
    blurred = set(rng.choice(len(knees), int(round(blur_fraction * len(knees))), replace=False).tolist())
    return [KneeJob(j, i, side, grade, split_of[i], j in blurred) for j, (i, side, grade) in enumerate(knees)]


def render_job(job: KneeJob, *, seed: int, size: int, signs: float = 1.0) -> tuple[np.ndarray, float, float]:
    """Render one planned knee: (image, severity, narrower joint-space width in mm).

    Every image has its own Generator from (seed, image index); the patient's shared anatomy and
    exposure come from (seed, patient index), so any subset can be rendered in any order.
    """
    patient = sample_patient(np.random.default_rng([seed, 1, job.patient]))
    rng = np.random.default_rng([seed, 2, job.index])
    severity = float(np.clip(job.grade + rng.normal(0.0, SEVERITY_SD), -0.6, 4.8))
    img, knee = render_knee(rng, severity, size=size, side=job.side, patient=patient, blurred=job.blurred,
                            signs=signs)
    return img, severity, min_jsw_mm(knee)


def _check_args(per_grade: int, size: int, seed: int, bilateral: int, blur_fraction: float,
                ratios: Sequence[float], signs: float) -> None:
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise KneelibError(f"synthetic data: seed must be a non-negative integer, got {seed!r}")
    if not isinstance(per_grade, int | np.integer) or not 1 <= per_grade <= 1_000_000:
        raise KneelibError(f"synthetic data: per_grade must be an integer in 1..1000000, got {per_grade!r}")
    if not isinstance(size, int | np.integer) or not 32 <= size <= 2048:
        raise KneelibError(f"synthetic data: size must be an integer in 32..2048 px, got {size!r}")
    if not isinstance(bilateral, int | np.integer) or bilateral < 0:
        raise KneelibError(f"synthetic data: bilateral must be a non-negative integer, got {bilateral!r}")
    if not 0.0 <= blur_fraction <= 1.0:
        raise KneelibError(f"synthetic data: blur_fraction must be in [0, 1], got {blur_fraction!r}")
    if not 0.5 <= signs <= 5.0:
        raise KneelibError(f"synthetic data: signs must be in [0.5, 5] (1 = realistic), got {signs!r}")
    if len(ratios) != 3 or min(ratios) < 0 or ratios[0] <= 0:
        raise KneelibError(f"synthetic data: ratios must be 3 non-negative numbers (train > 0), got {ratios!r}")


def generate_dataset(
    out: str | os.PathLike,
    *,
    per_grade: int = 200,
    size: int = 224,
    seed: int = 0,
    bilateral: int = 0,
    blur_fraction: float = 0.03,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    signs: float = 1.0,
    progress: bool = True,
) -> dict:
    """Write a synthetic KL-graded data set to ``out`` and return what was written.

    Layout as the real ``kneeKL224`` data: ``{train,val,test}/{0..4}/<7-digit id><L|R>.png``
    (8-bit grayscale, ``size`` x ``size``, CLAHE-processed), exactly ``per_grade`` knees per grade,
    both knees of a patient in the same split, plus ``manifest.csv`` (``path, grade, patient_id,
    side, split, blurred, severity, jsw_mm``) and ``synthetic.json`` (the parameters). ``signs`` > 1
    draws the KL signs exaggerated (see :mod:`kneelib.synthetic.anatomy`). With
    ``bilateral`` > 0 also ``bilateral/*.png`` full PA radiographs and ``bilateral/boxes.csv``.
    Same arguments, same bytes. The folder is built aside and renamed at the end, so a failure
    leaves nothing; an existing non-empty ``out`` is a KneelibError.
    """
    _check_args(per_grade, size, seed, bilateral, blur_fraction, ratios, signs)
    t0 = time.time()
    out = Path(out)
    jobs = plan_dataset(int(per_grade), seed, ratios, blur_fraction)
    counts = {s: {str(g): 0 for g in range(5)} for s in SPLITS}
    rows = []
    with atomic_dir(out) as tmp:
        for split in SPLITS:
            for grade in range(5):
                (tmp / split / str(grade)).mkdir(parents=True)
        for job in tqdm(jobs, desc="synthetic knees", unit="img", disable=not progress):
            img, severity, jsw = render_job(job, seed=seed, size=int(size), signs=float(signs))
            (tmp / job.path).write_bytes(_png(img))
            counts[job.split][str(job.grade)] += 1
            rows.append((job.path, job.grade, f"{FIRST_ID + job.patient:07d}", job.side, job.split,
                         int(job.blurred), f"{severity:.4f}", f"{jsw:.3f}"))
        rows.sort()
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows)
        (tmp / "manifest.csv").write_text(buf.getvalue())
        bilateral_paths = []
        if bilateral:
            from kneelib.synthetic.bilateral import write_bilateral

            bilateral_paths = write_bilateral(tmp / "bilateral", bilateral, seed=seed,
                                              first_id=FIRST_ID + len({j.patient for j in jobs}))
        params = {"generator": "kneelib.synthetic.crops", "per_grade": int(per_grade), "size": int(size),
                  "seed": seed, "bilateral": int(bilateral), "blur_fraction": blur_fraction,
                  "ratios": list(ratios), "signs": float(signs), "images": len(rows), "counts": counts}
        (tmp / "synthetic.json").write_text(json.dumps(params, indent=2) + "\n")
    return {
        "out": out,
        "counts": counts,
        "images": len(rows),
        "patients": len({j.patient for j in jobs}),
        "blurred": sum(j.blurred for j in jobs),
        "manifest": out / "manifest.csv",
        "paths": [out / r[0] for r in rows],
        "bilateral": [out / "bilateral" / p for p in bilateral_paths],
        "seconds": round(time.time() - t0, 2),
    }


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - cv2 only fails on unsupported arrays
        raise KneelibError("synthetic data: PNG encoding failed")
    return buf.tobytes()
