"""Find the samples of a data set: split folders, a grade-folder pool, or a manifest CSV.

Layouts (auto-detected by :func:`discover`):

* ``DIR/{train,val,test}/{0..4}/*`` — any subset of the splits;
* ``DIR/{0..4}/*`` — a pool without splits (``Sample.split`` is None);
* a manifest CSV with columns ``path, grade[, patient_id, side, split]`` (relative paths resolve
  against the CSV's folder and must stay inside it; every path must name an image file:
  :func:`listed_path`, the rule every manifest reader applies); a folder with neither kind of
  sub-folder but a ``manifest.csv`` uses it.

Only files with an image suffix (:data:`kneelib.data.io.IMAGE_SUFFIXES`) count; other files and
hidden entries are ignored. Patient id and side come from ``<7-digit id><L|R>`` file names; when a
name does not parse, the file stem is the patient id (so a patient-grouped split still groups each
file on its own) and the side is None.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kneelib.data.io import is_image_file
from kneelib.errors import KneelibError

#: Split names, in the order samples are sorted and tables are printed.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Grade folder names.
GRADE_DIRS: tuple[str, ...] = ("0", "1", "2", "3", "4")
MANIFEST_NAME = "manifest.csv"

_KNEE_NAME = re.compile(r"^(\d{7})([LRlr])$")


@dataclass(frozen=True)
class Sample:
    """One knee image with its KL grade and, when known, patient id, side (L/R) and split."""

    path: Path
    grade: int
    patient_id: str | None = None
    side: str | None = None
    split: str | None = None


def parse_knee_name(stem: str) -> tuple[str, str] | tuple[None, None]:
    """``"9003126L"`` → ``("9003126", "L")``; ``(None, None)`` for any other name."""
    match = _KNEE_NAME.match(stem)
    if not match:
        return None, None
    return match.group(1), match.group(2).upper()


def sort_key(sample: Sample) -> tuple[int, int, str]:
    """Deterministic order: split (train, val, test; None first), grade, path."""
    split_rank = -1 if sample.split is None else SPLITS.index(sample.split)
    return split_rank, sample.grade, str(sample.path)


def make_sample(path: Path, grade: int, split: str | None, patient_id: str | None = None,
                side: str | None = None) -> Sample:
    """A Sample whose missing patient id / side are parsed from the file name (stem as fallback)."""
    parsed_id, parsed_side = parse_knee_name(path.stem)
    return Sample(path, grade, patient_id or parsed_id or path.stem, side or parsed_side, split)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _grade_folder(folder: Path) -> int:
    """The KL grade a folder name stands for; KneelibError for anything else."""
    if folder.name not in GRADE_DIRS:
        raise KneelibError(f"{folder}: folder {folder.name!r} is not a KL grade (expected 0-4)")
    return int(folder.name)


def _scan_grades(folder: Path, split: str | None) -> list[Sample]:
    samples = []
    for grade_dir in _subdirs(folder):
        grade = _grade_folder(grade_dir)
        with os.scandir(grade_dir) as entries:
            for entry in entries:
                if is_image_file(entry.name) and entry.is_file():
                    samples.append(make_sample(Path(entry.path), grade, split))
    return samples


def listed_path(root: Path, raw: str, where: str, *, folders: bool = True, absolute: bool = True) -> Path:
    """The image file a manifest row names, as a path under ``root``: the one rule for every manifest reader.

    ``raw`` must name an image file (:func:`~kneelib.data.io.is_image_file`); a relative path must stay
    inside ``root`` once ``.``/``..`` are resolved (lexically: symbolic links inside ``root`` may point
    anywhere, as ``kneelib split`` writes them); ``folders=False`` allows a bare file name only and
    ``absolute=False`` refuses absolute paths. KneelibError naming ``where`` (file and line) otherwise."""
    text = raw.strip()
    if not text or "\0" in text:
        raise KneelibError(f"{where}: empty or invalid file path {raw!r}")
    path = Path(os.path.normpath(text))
    if path.is_absolute():
        if not absolute:
            raise KneelibError(f"{where}: {text!r} is an absolute path; a file name is expected here")
    elif path.parts[0] == ".." or path == Path("."):
        raise KneelibError(f"{where}: {text!r} points outside {root} (a relative path must stay "
                           "inside the manifest's folder; name a file elsewhere by its absolute path)")
    elif not folders and len(path.parts) > 1:
        raise KneelibError(f"{where}: {text!r} is not a bare file name")
    if not is_image_file(path.name):
        raise KneelibError(f"{where}: {text!r} is not an image file name (.png/.jpg/.jpeg/.dcm/.dicom)")
    return path if path.is_absolute() else root / path


def _looks_like_grade(name: str) -> bool:
    return name.isdigit() or name in GRADE_DIRS


def read_manifest(csv_path: str | os.PathLike) -> list[Sample]:
    """Samples listed in a manifest CSV (``path, grade[, patient_id, side, split]``)."""
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise KneelibError(f"{csv_path}: cannot read manifest CSV ({exc})") from None
    missing = [c for c in ("path", "grade") if c not in columns]
    if missing:
        raise KneelibError(f"{csv_path}: manifest lacks column(s) {', '.join(missing)} "
                           f"(has: {', '.join(columns) or 'none'})")
    base = csv_path.parent
    samples, not_found = [], []
    for row_no, row in enumerate(rows, start=2):  # line 1 is the header
        raw_grade = row["grade"].strip()
        if raw_grade not in GRADE_DIRS:
            raise KneelibError(f"{csv_path}: line {row_no}: grade {raw_grade!r} is not a KL grade 0-4")
        split = (row.get("split") or "").strip() or None
        if split is not None and split not in SPLITS:
            raise KneelibError(f"{csv_path}: line {row_no}: split {split!r} is not one of {', '.join(SPLITS)}")
        path = listed_path(base, row["path"], f"{csv_path}: line {row_no}")
        if not path.is_file():
            not_found.append(f"line {row_no}: {row['path']}")
            continue
        side = (row.get("side") or "").strip().upper() or None
        if side not in (None, "L", "R"):
            raise KneelibError(f"{csv_path}: line {row_no}: side {side!r} is not L or R")
        samples.append(make_sample(path, int(raw_grade), split, (row.get("patient_id") or "").strip() or None, side))
    if not_found:
        more = f" and {len(not_found) - 3} more" if len(not_found) > 3 else ""
        raise KneelibError(f"{csv_path}: {len(not_found)} listed file(s) not found: "
                           f"{'; '.join(not_found[:3])}{more}")
    if not samples:
        raise KneelibError(f"{csv_path}: manifest lists no images")
    return sorted(samples, key=sort_key)


def detect_layout(source: str | os.PathLike) -> str:
    """``"splits"``, ``"pool"`` or ``"manifest"`` for a data source; KneelibError otherwise."""
    source = Path(source)
    if not source.exists():
        raise KneelibError(f"{source}: no such file or directory")
    if source.is_file():
        return "manifest"
    names = {p.name for p in _subdirs(source)}
    has_splits, has_grades = bool(names & set(SPLITS)), any(_looks_like_grade(n) for n in names)
    if has_splits and has_grades:
        raise KneelibError(f"{source}: has both split folders ({', '.join(sorted(names & set(SPLITS)))}) "
                           "and grade folders at the top; use one layout")
    if has_splits:
        return "splits"
    if has_grades:
        return "pool"
    if (source / MANIFEST_NAME).is_file():
        return "manifest"
    raise KneelibError(f"{source}: no {{train,val,test}}/{{0..4}}/ or {{0..4}}/ folders and no {MANIFEST_NAME}")


def discover(source: str | os.PathLike) -> list[Sample]:
    """All samples of a data set (layout auto-detected), sorted by (split, grade, path)."""
    source = Path(source)
    layout = detect_layout(source)
    if layout == "manifest":
        return read_manifest(source if source.is_file() else source / MANIFEST_NAME)
    if layout == "splits":
        samples = [s for split in SPLITS if (source / split).is_dir()
                   for s in _scan_grades(source / split, split)]
    else:
        samples = _scan_grades(source, None)
    if not samples:
        raise KneelibError(f"{source}: no images (.png/.jpg/.jpeg) found in its grade folders")
    return sorted(samples, key=sort_key)


def splits_present(samples: Iterable[Sample]) -> list[str | None]:
    """The splits that occur, in :data:`SPLITS` order (None, for pooled samples, first)."""
    present = {s.split for s in samples}
    return ([None] if None in present else []) + [s for s in SPLITS if s in present]


def select_split(samples: Sequence[Sample], split: str | None) -> list[Sample]:
    """The samples of one split (``None`` or ``"all"``: every sample); KneelibError if none."""
    if split in (None, "all"):
        chosen = list(samples)
    elif split not in SPLITS:
        raise KneelibError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    else:
        chosen = [s for s in samples if s.split == split]
    if not chosen:
        have = ", ".join(str(s) if s else "pool" for s in splits_present(samples)) or "none"
        raise KneelibError(f"no samples in split {split!r} (present: {have})")
    return chosen
