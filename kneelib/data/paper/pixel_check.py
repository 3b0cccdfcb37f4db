"""What differs in a file that carries a paper file's name but other bytes, and would CLAHE explain it?

Only hashes and two small fingerprints of the paper's train/val images travel with kneelib (see
:mod:`kneelib.data.paper.manifest`), never their pixels, so the questions are answered against those:

* same pixels? The decoded grey image's digest equals the reference's: another encoding of the same image.
* same picture? Resize to 224 px (area) and compare the 4x4 block means with the reference's thumbnail:
  mean |difference| at most :data:`SAME_PICTURE` grey levels (a JPEG quality-75 copy: at most 0.25).
* would CLAHE explain it? The same, after the paper's CLAHE (clip 5.0, 8x8 tiles, on the 224 px image):
  the real 299 px raw sample comes to a median 0.62 grey levels (worst 1.44 of 100 files) of the
  kneeKL224 thumbnails; left as it is, it differs by a median 14.5 (at least 3.3). CLAHE applied before
  resizing differs by a median 3.1, clip 2.0 instead of 5.0 by 8.9, global histogram equalisation by 40.

What it cannot tell: which other processing a copy had (only that the paper's CLAHE does or does not
explain it), nor anything for a test-split file (no reference pixels: those images are withheld).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kneelib.data.io import read_image
from kneelib.data.paper.manifest import Entry, pixel_digest, thumbnail
from kneelib.errors import KneelibError

PAPER_SIZE = 224
#: Largest median thumbnail difference (grey levels) still counted as the same picture.
SAME_PICTURE = 2.0
#: How many changed files the CLAHE check reads at most (evenly spread over them).
SAMPLE = 48


@dataclass(frozen=True)
class PixelCheck:
    """One changed file against its reference: readable? size, same pixels, thumbnail differences."""

    readable: bool
    size: tuple[int, int] | None = None
    same_pixels: bool | None = None
    as_is: float | None = None  #: mean |thumbnail difference| as the file is (after resizing to 224)
    with_clahe: float | None = None  #: the same after the paper's CLAHE
    error: str = ""

    def describe(self) -> str:
        """A few words for a report line."""
        if not self.readable:
            return f"unreadable ({self.error})"
        w, h = self.size or (0, 0)
        if self.same_pixels:
            return f"{w}x{h}, the same pixels in another encoding"
        if self.as_is is None:
            return f"{w}x{h}, other bytes (no reference pixels for this split)"
        if self.as_is <= SAME_PICTURE:
            return f"{w}x{h}, the same picture with small pixel changes (thumbnail differs by {self.as_is:.1f})"
        if self.with_clahe is not None and self.with_clahe <= SAME_PICTURE:
            return (f"{w}x{h}, without the paper's CLAHE: with it, the paper's picture "
                    f"(thumbnail differs by {self.with_clahe:.1f})")
        return f"{w}x{h}, other pixels (thumbnail differs by {self.as_is:.1f} grey levels)"


@dataclass(frozen=True)
class ClaheCheck:
    """The verdict over a sample of changed files: ``same-picture``, ``unprocessed``, ``other``, ``undecidable``."""

    verdict: str
    n_checked: int
    n_same_pixels: int = 0
    median_as_is: float | None = None
    median_with_clahe: float | None = None

    def sentence(self) -> str:
        """One sentence saying whether the paper's CLAHE explains the difference, and how it was decided."""
        figures = (f" (4x4 thumbnails of {self.n_checked} sampled files: median difference "
                   f"{self.median_as_is:.1f} grey levels as they are, {self.median_with_clahe:.1f} after the "
                   "paper's CLAHE)") if self.median_as_is is not None and self.median_with_clahe is not None else ""
        return {
            "same-picture": "the same pictures in another encoding or with small changes; CLAHE is already applied",
            "unprocessed": "the paper's CLAHE explains the difference: these images have not had it",
            "other": "the paper's CLAHE does not explain the difference: other processing",
            "undecidable": "cannot tell whether CLAHE explains it: no reference pixels for these files "
                           "(test split) or none readable",
        }[self.verdict] + figures

    def to_json(self) -> dict:
        return asdict(self)


def _to_paper_size(gray: np.ndarray, with_clahe: bool) -> np.ndarray:
    """kneelib's one preprocessing to 224 px (imported here: torch loads with kneelib.data.transforms)."""
    from kneelib.data.transforms import preprocess

    return preprocess(gray, image_size=PAPER_SIZE, clahe=with_clahe)


def _thumb_distance(gray: np.ndarray, ref: bytes) -> float:
    reference = np.frombuffer(ref, dtype=np.uint8).astype(np.int16)
    return float(np.abs(thumbnail(gray).astype(np.int16).ravel() - reference).mean())


def check_file(path: Path, entry: Entry) -> PixelCheck:
    """Decode ``path`` and compare it with the reference of ``entry`` (where the manifest has one)."""
    try:
        gray = read_image(path)
    except KneelibError as exc:
        return PixelCheck(False, error=str(exc).split(": ", 1)[-1])
    size = (int(gray.shape[1]), int(gray.shape[0]))
    same = pixel_digest(gray) == entry.pixels if entry.pixels else None
    if entry.thumb is None:
        return PixelCheck(True, size, same)
    return PixelCheck(True, size, same, _thumb_distance(_to_paper_size(gray, False), entry.thumb),
                      _thumb_distance(_to_paper_size(gray, True), entry.thumb))


def sample_evenly(items: list, n: int = SAMPLE) -> list:
    """At most ``n`` items spread evenly over ``items`` (all of them when there are fewer)."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def clahe_verdict(checks: list[PixelCheck]) -> ClaheCheck:
    """Pool the checks of sampled files into one verdict (medians over those with a reference)."""
    usable = [c for c in checks if c.readable and c.as_is is not None and c.with_clahe is not None]
    same_pixels = sum(bool(c.same_pixels) for c in checks)
    if not usable:
        return ClaheCheck("undecidable", len(checks), same_pixels)
    as_is = statistics.median(c.as_is for c in usable)
    with_clahe = statistics.median(c.with_clahe for c in usable)
    if as_is <= SAME_PICTURE:
        verdict = "same-picture"
    elif with_clahe <= SAME_PICTURE:
        verdict = "unprocessed"
    else:
        verdict = "other"
    return ClaheCheck(verdict, len(usable), same_pixels, round(as_is, 2), round(with_clahe, 2))
