"""Quality filter (``kneelib filter``): flag corrupt, tiny, blank, colour, blurred and too large images.

Nothing is deleted; the result is a report (CSV: ``file, reason, score, detail`` — one row per image,
``reason`` is ``ok`` or the first problem found, e.g. ``too-large`` for an image over the pixel budget of
:mod:`kneelib.data.io`, a decompression bomb — plus a JSON sidecar with the blur threshold and
how it was chosen). ``kneelib split --exclude REPORT`` skips every file whose reason is not ``ok``.

Blur measure (``score``): variance of ``cv2.Laplacian`` (CV_64F) on the grayscale image scaled so that
its shorter side is 224 px. The threshold is calibrated on the folder itself: an image is "blurred" when
its score is below ``median / 15``, the median taken over the folder's readable images (robust while
fewer than half of them are blurred; a MAD-based z-score was tried and broke down on small folders with
a few blurred files, whose outliers inflate the MAD). Measured on the real kneeKL224 crops (1,810): median
1013.7, threshold 67.6, lowest real crop 92.6 (1/11 of the median) — no real crop is flagged — while a
Gaussian blur of sigma 3 leaves at most 5.2 (sigma 1.5: at most 36). On un-enhanced (non-CLAHE) crops,
which are far less sharp overall, blur is harder to see: on the 299-px raw sample the threshold (2.0)
catches 61% of sigma-3 copies (sigma 4: 76%); pass ``--blur-fraction`` or ``--blur-threshold`` there.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from kneelib.atomic import atomic_path, write_text
from kneelib.data.io import decode, is_image_file
from kneelib.data.layout import MANIFEST_NAME, discover
from kneelib.data.pixels import ImageReadError, to_gray_uint8
from kneelib.errors import KneelibError

MIN_SIZE = 64  #: images with a side shorter than this (px) are "tiny"
BLUR_SIZE = 224  #: shorter side (px) the image is scaled to before measuring sharpness
BLUR_FRACTION = 1 / 15  #: blurred = Laplacian variance below this fraction of the folder's median
MIN_CALIBRATION = 5  #: fewer readable images than this: no data-calibrated blur check
COLOUR_TOLERANCE = 8.0  #: mean (max - min) over channels, in grey levels, above which it is colour
REPORT_COLUMNS = ("file", "reason", "score", "detail")
DEFAULT_REPORT = "filter_report.csv"


@dataclass
class FileCheck:
    """The verdict on one file: ``reason`` is ``ok`` or what is wrong; ``score`` the sharpness."""

    path: Path
    reason: str = "ok"
    score: float | None = None
    detail: str = ""


@dataclass
class BlurThreshold:
    """The blur threshold on the Laplacian variance and how it was obtained."""

    value: float | None
    method: str
    n_calibration: int = 0
    median: float | None = None
    fraction: float | None = None


@dataclass
class FilterResult:
    """All checks of one filter run."""

    source: Path
    checks: list[FileCheck]
    threshold: BlurThreshold
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def flagged(self) -> list[FileCheck]:
        """The checks that found a problem."""
        return [c for c in self.checks if c.reason != "ok"]


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian after scaling the shorter side to :data:`BLUR_SIZE`."""
    h, w = gray.shape[:2]
    scale = BLUR_SIZE / min(h, w)
    if abs(scale - 1.0) > 1e-6:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def check_file(path: Path) -> FileCheck:
    """Every check except blur (which needs the whole folder); ``score`` set when measurable."""
    try:
        pixels, mode = decode(path)
    except ImageReadError as exc:
        return FileCheck(path, exc.reason, None, exc.detail)
    if pixels.ndim == 3:
        rgb = pixels[..., :3]
        spread = float((rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2)).mean())
        if spread > COLOUR_TOLERANCE:
            return FileCheck(path, "wrong-mode", None,
                             f"colour image (mode {mode}, channels differ by {spread:.1f} grey levels)")
    gray = to_gray_uint8(pixels)
    h, w = gray.shape
    if min(h, w) < MIN_SIZE:
        return FileCheck(path, "tiny", None, f"{w}x{h} px (minimum side {MIN_SIZE})")
    if int(gray.max()) == int(gray.min()):
        return FileCheck(path, "blank", 0.0, f"every pixel is {int(gray.max())}")
    return FileCheck(path, "ok", sharpness(gray), "")


def calibrate_blur_threshold(scores: list[float], fraction: float = BLUR_FRACTION) -> BlurThreshold:
    """Data-calibrated threshold: ``fraction`` × the median Laplacian variance of ``scores``."""
    if len(scores) < MIN_CALIBRATION:
        return BlurThreshold(None, f"skipped: only {len(scores)} readable image(s), need {MIN_CALIBRATION} "
                                   "to calibrate (give --blur-threshold)", len(scores))
    median = float(np.median(scores))
    method = (f"median Laplacian variance of the {len(scores)} readable images ({median:.1f}) "
              f"x {fraction:.4g} (= 1/{1 / fraction:.3g})")
    return BlurThreshold(median * fraction, method, len(scores), median, fraction)


def list_images(source: str | os.PathLike) -> list[Path]:
    """Image files under a folder (recursive, hidden entries skipped) or listed in a manifest.

    Linked folders are followed, each real folder once: a link back up the tree (``train/0/loop -> ..``) or
    a second link to a folder already read adds nothing, so every file is listed once."""
    source = Path(source)
    if not source.exists():
        raise KneelibError(f"{source}: no such file or directory")
    if source.is_file():
        return [s.path for s in discover(source)]
    found, seen = [], set()
    for root, dirs, files in os.walk(source, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root, f) for f in files if is_image_file(f))
    if not found and (source / MANIFEST_NAME).is_file():  # a folder holding only a manifest (e.g. held-out)
        return [s.path for s in discover(source)]
    if not found:
        raise KneelibError(f"{source}: no images (.png/.jpg/.jpeg) found")
    return sorted(found)


def filter_images(source: str | os.PathLike, *, fraction: float = BLUR_FRACTION, threshold: float | None = None,
                  progress: bool | None = None) -> FilterResult:
    """Check every image under ``source``; blur threshold calibrated on it unless ``threshold`` given."""
    if not (math.isfinite(fraction) and 0 < fraction < 1):
        raise KneelibError(f"--blur-fraction {fraction}: must be a number in (0, 1)")
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        raise KneelibError(f"--blur-threshold {threshold}: must be a finite number >= 0")
    start = time.perf_counter()
    paths = list_images(source)
    show = sys.stderr.isatty() if progress is None else progress
    checks = [check_file(p) for p in tqdm(paths, desc="filter", unit="img", disable=not show)]
    if threshold is not None:
        blur = BlurThreshold(float(threshold), "fixed (--blur-threshold)")
    else:
        blur = calibrate_blur_threshold([c.score for c in checks if c.reason == "ok"], fraction)
    if blur.value is not None:
        for c in checks:
            if c.reason == "ok" and c.score is not None and c.score < blur.value:
                c.reason = "blurred"
                c.detail = f"Laplacian variance {c.score:.1f} < threshold {blur.value:.1f}"
    counts = dict(Counter(c.reason for c in checks))
    return FilterResult(Path(source), checks, blur, time.perf_counter() - start, counts)


def sidecar_path(report: str | os.PathLike) -> Path:
    """Where the JSON sidecar of a CSV report goes (``x.csv`` → ``x.json``)."""
    report = Path(report)
    if report.suffix.lower() == ".json":
        return report.with_name(report.name + ".meta.json")
    return report.with_suffix(".json")


def write_report(result: FilterResult, report: str | os.PathLike) -> tuple[Path, Path]:
    """Write the CSV report and its JSON sidecar atomically; return both paths."""
    report = Path(report)
    if report.is_dir():
        raise KneelibError(f"{report}: is a folder; give a file name for the report")
    try:
        with atomic_path(report) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(REPORT_COLUMNS)
            writer.writerows((os.path.abspath(c.path), c.reason, "" if c.score is None else round(c.score, 3),
                              c.detail) for c in result.checks)
        meta = {"source": os.path.abspath(result.source), "report": os.path.abspath(report),
                "n_files": len(result.checks), "counts": result.counts, "min_size": MIN_SIZE,
                "blur": {**asdict(result.threshold), "measure": "variance of cv2.Laplacian (CV_64F) on the "
                         f"grayscale image scaled so its shorter side is {BLUR_SIZE} px"},
                "seconds": round(result.seconds, 2)}
        side = write_text(sidecar_path(report), json.dumps(meta, indent=2) + "\n")
    except OSError as exc:
        raise KneelibError(f"{report}: cannot write the report ({exc.strerror or exc})") from None
    return report, side


def read_report(report: str | os.PathLike) -> set[Path]:
    """The flagged files (reason not ``ok``) of a filter report, as resolved paths."""
    report = Path(report)
    if not report.is_file():
        raise KneelibError(f"{report}: filter report not found")
    try:
        with open(report, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in ("file", "reason") if c not in columns]
            if missing:
                raise KneelibError(f"{report}: not a filter report (lacks column(s) {', '.join(missing)})")
            return {Path(row["file"]).resolve() for row in reader if (row["reason"] or "").strip() != "ok"}
    except (UnicodeDecodeError, csv.Error) as exc:
        raise KneelibError(f"{report}: cannot read filter report ({exc})") from None
