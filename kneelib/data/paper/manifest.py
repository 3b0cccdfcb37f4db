"""The manifest of the paper's data set (Chen 2018, doi:10.17632/56rmx5bjcr.1), shipped in the package.

``assets/paper_manifest.csv.gz`` lists all 8,260 ``kneeKL224`` crops — the withheld test split included —
one row each: ``split, grade, file, patient_id, side, bytes, sha256, pixels, thumb`` (``file`` a bare image
file name: :func:`kneelib.data.layout.listed_path` refuses any other). ``bytes`` and
``sha256`` are the file's; the two pixel columns exist for train and val only (their images were at hand
when it was made; the test images were not):

* ``pixels``: the first 16 hex digits of the sha256 of the decoded grey image (uint8, row-major, as
  :func:`kneelib.data.io.read_image` returns it) — equal pixels under other file bytes (re-encoded PNG);
* ``thumb``: the image's 4x4 block means (``cv2.resize(..., (4, 4), INTER_AREA)``), 16 bytes in hex — a
  fingerprint coarse enough to compare a user's copy after other processing (see :mod:`kneelib.data.paper.pixel_check`).

It was made from the development copy with::

    python -m kneelib.data.paper.manifest ../shared/data/kneeKL224-manifest.csv ../shared/data/kneeKL224 \\
        kneelib/data/paper/assets/paper_manifest.csv.gz

(:func:`build_paper_manifest`: every file's sha256 is checked against the source CSV before its pixels
are read). :func:`load_manifest` also reads a plain CSV with at least ``split, grade, file, bytes, sha256``.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kneelib.data.layout import GRADE_DIRS, SPLITS, listed_path, parse_knee_name
from kneelib.errors import KneelibError

PAPER_MANIFEST = Path(__file__).with_name("assets") / "paper_manifest.csv.gz"
COLUMNS = ("split", "grade", "file", "patient_id", "side", "bytes", "sha256", "pixels", "thumb")
REQUIRED = ("split", "grade", "file", "bytes", "sha256")
THUMB_SIZE = 4  #: the fingerprint is THUMB_SIZE x THUMB_SIZE block means


@dataclass(frozen=True, slots=True)
class Entry:
    """One crop of the paper's data set; ``pixels``/``thumb`` are None where no reference exists."""

    split: str
    grade: int
    file: str
    patient_id: str | None
    side: str | None
    bytes: int
    sha256: str
    pixels: str | None = None
    thumb: bytes | None = None

    @property
    def stem(self) -> str:
        return Path(self.file).stem

    @property
    def where(self) -> str:
        return f"{self.split}/{self.grade}"


@dataclass(frozen=True)
class PaperManifest:
    """The entries by file stem (``9003126L``), with a lookup by sha256."""

    source: str
    entries: dict[str, Entry]
    by_sha256: dict[str, Entry]

    def counts(self) -> dict[tuple[str, int], int]:
        """Files per (split, grade)."""
        out: dict[tuple[str, int], int] = {}
        for e in self.entries.values():
            out[(e.split, e.grade)] = out.get((e.split, e.grade), 0) + 1
        return out


def pixel_digest(gray: np.ndarray) -> str:
    """16 hex digits identifying a grey image's pixels (shape included)."""
    head = f"{gray.shape[0]}x{gray.shape[1]}:".encode()
    return hashlib.sha256(head + np.ascontiguousarray(gray, dtype=np.uint8).tobytes()).hexdigest()[:16]


def thumbnail(gray: np.ndarray) -> np.ndarray:
    """The 4x4 block means of a grey image (uint8)."""
    import cv2

    return cv2.resize(gray, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA)


def _parse_row(row: dict[str, str], where: str) -> Entry:
    split, grade, file = row["split"].strip(), row["grade"].strip(), row["file"].strip()
    if split not in SPLITS or grade not in GRADE_DIRS or not file:
        raise KneelibError(f"{where}: bad row (split {split!r}, grade {grade!r}, file {file!r})")
    listed_path(Path(split, grade), file, where, folders=False, absolute=False)  # prepare writes it there
    parsed_id, parsed_side = parse_knee_name(Path(file).stem)
    thumb = (row.get("thumb") or "").strip()
    try:
        size, sha = int(row["bytes"]), row["sha256"].strip().lower()
        thumb_bytes = bytes.fromhex(thumb) if thumb else None
    except ValueError as exc:
        raise KneelibError(f"{where}: bad row ({exc})") from None
    if len(sha) != 64 or (thumb_bytes is not None and len(thumb_bytes) != THUMB_SIZE ** 2):
        raise KneelibError(f"{where}: bad sha256 or thumb")
    return Entry(split, int(grade), file, (row.get("patient_id") or "").strip() or parsed_id,
                 (row.get("side") or "").strip() or parsed_side, size, sha,
                 (row.get("pixels") or "").strip() or None, thumb_bytes)


@functools.lru_cache(maxsize=4)
def _load(path: str, stamp: tuple[int, int]) -> PaperManifest:
    try:
        raw = Path(path).read_bytes()
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8-sig")
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise KneelibError(f"{path}: not a manifest of the paper's data set (lacks {', '.join(missing)})")
        entries = [_parse_row(row, f"{path}: line {n}") for n, row in enumerate(reader, start=2)]
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error) as exc:
        raise KneelibError(f"{path}: cannot read the manifest ({exc})") from None
    if not entries:
        raise KneelibError(f"{path}: the manifest lists no files")
    by_stem = {e.stem: e for e in entries}
    if len(by_stem) != len(entries):
        raise KneelibError(f"{path}: the manifest lists a file name twice")
    return PaperManifest(path, by_stem, {e.sha256: e for e in entries})


def load_manifest(path: str | os.PathLike | None = None) -> PaperManifest:
    """The paper's manifest (default: the packaged one); KneelibError when it cannot be read."""
    path = Path(path) if path is not None else PAPER_MANIFEST
    try:
        stat = path.stat()
    except OSError as exc:
        raise KneelibError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    return _load(str(path), (stat.st_mtime_ns, stat.st_size))


def build_paper_manifest(source_csv: str | os.PathLike, images: str | os.PathLike,
                         dest: str | os.PathLike) -> int:
    """Write the packaged manifest from the shared CSV and the train/val images; returns the row count."""
    from kneelib.atomic import write_bytes
    from kneelib.data.io import read_image

    images = Path(images)
    with open(source_csv, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in sorted(rows, key=lambda r: (SPLITS.index(r["split"]), int(r["grade"]), r["file"])):
        patient_id, side = parse_knee_name(Path(row["file"]).stem)
        pixels = thumb = ""
        image = images / row["split"] / row["grade"] / row["file"]
        if image.is_file():
            data = image.read_bytes()
            if len(data) != int(row["bytes"]) or hashlib.sha256(data).hexdigest() != row["sha256"]:
                raise KneelibError(f"{image}: differs from {source_csv}; not taken as the reference")
            gray = read_image(image)
            pixels, thumb = pixel_digest(gray), thumbnail(gray).tobytes().hex()
        writer.writerow((row["split"], row["grade"], row["file"], patient_id or "", side or "",
                         row["bytes"], row["sha256"], pixels, thumb))
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        gz.write(out.getvalue().encode())
    write_bytes(dest, buffer.getvalue())
    return len(rows)


if __name__ == "__main__":  # python -m kneelib.data.paper.manifest SOURCE_CSV IMAGES DEST
    print(build_paper_manifest(*sys.argv[1:4]), "rows written to", sys.argv[3])
