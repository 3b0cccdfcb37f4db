"""Split a data set into train/val/test (``kneelib split``).

Two protocols:

* ``grouped`` (default): stratified by KL grade and grouped by patient — both knees of a patient land
  in the same split. A greedy apportionment over patient groups: groups are visited in a seeded random
  order, two-knee patients first, and each goes to the split whose per-grade counts are furthest below
  their targets (Sainte-Laguë divisor ``(count + 0.5) / (ratio * grade total)`` summed over the group's
  knees). Each grade is thus apportioned like seats in an election: every split gets its quota within
  about one image per grade, i.e. far inside ±2% on a few hundred images. (sklearn's
  ``StratifiedGroupKFold`` only makes equal folds, which a 7:1:2 split would have to merge.)
* ``paper``: the reference code's protocol — train and val (and a pool) are pooled and re-split with
  ``train_test_split(test_size=0.125, stratify=grades, random_state=seed)``, not grouped by patient;
  test is kept as is.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kneelib.atomic import atomic_dir, write_text
from kneelib.data.io import image_size
from kneelib.data.layout import MANIFEST_NAME, SPLITS, Sample, sort_key
from kneelib.errors import KneelibError

if TYPE_CHECKING:
    import pandas as pd

PROTOCOLS: tuple[str, ...] = ("grouped", "paper")
DEFAULT_RATIOS: tuple[float, float, float] = (0.7, 0.1, 0.2)
PAPER_VAL_FRACTION = 0.125
SPLIT_INFO = "split.json"
MANIFEST_COLUMNS = ("path", "grade", "patient_id", "side", "split", "source", "protocol")


def parse_ratios(text: str) -> tuple[float, float, float]:
    """``"7:1:2"`` → ``(0.7, 0.1, 0.2)``; three non-negative numbers, train > 0."""
    try:
        parts = [float(p) for p in str(text).split(":")]
    except ValueError:
        parts = []
    if (len(parts) != 3 or any(not np.isfinite(p) or p < 0 for p in parts) or parts[0] <= 0
            or not np.isfinite(sum(parts))):  # 1e308:1e308:1 would sum to inf and every share to 0
        raise KneelibError(f"--ratios {text!r}: expected train:val:test, e.g. 7:1:2 (train > 0)")
    total = sum(parts)
    return parts[0] / total, parts[1] / total, parts[2] / total


def grouped_split(samples: Sequence[Sample], ratios: Sequence[float] = DEFAULT_RATIOS,
                  seed: int = 42) -> list[Sample]:
    """Assign each patient (all its knees) to a split, stratified by grade; returns new Samples."""
    if not samples:
        raise KneelibError("nothing to split: no samples")
    ratios = np.asarray(ratios, dtype=float) / float(np.sum(ratios))
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[s.patient_id or str(s.path)].append(i)
    keys = sorted(groups)
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    order.sort(key=lambda k: -len(groups[k]))  # stable: bigger groups first, random within a size
    grade_total = np.bincount([s.grade for s in samples], minlength=5).astype(float)
    counts = np.zeros((len(SPLITS), 5))
    active = [j for j in range(len(SPLITS)) if ratios[j] > 0]
    assignment: dict[str, int] = {}
    for key in order:
        grades = [samples[i].grade for i in groups[key]]

        def fill(j: int) -> float:
            return sum((counts[j, g] + 0.5) / (ratios[j] * grade_total[g]) for g in grades)

        best = min(active, key=fill)
        for g in grades:
            counts[best, g] += 1
        assignment[key] = best
    out = [replace(s, split=SPLITS[assignment[s.patient_id or str(s.path)]]) for s in samples]
    return sorted(out, key=sort_key)


def paper_split(samples: Sequence[Sample], seed: int = 42,
                val_fraction: float = PAPER_VAL_FRACTION) -> list[Sample]:
    """The reference code's split: pool train+val, draw a stratified ``val_fraction``; test unchanged."""
    test = [s for s in samples if s.split == "test"]
    pool = sorted((s for s in samples if s.split != "test"), key=lambda s: (s.grade, str(s.path)))
    if len(pool) < 2:
        raise KneelibError("paper protocol: need at least two train/val images to re-split")
    from sklearn.model_selection import (
        train_test_split,  # imported here: sklearn is slow to import
    )
    try:
        train_idx, val_idx = train_test_split(np.arange(len(pool)), test_size=val_fraction,
                                              stratify=[s.grade for s in pool], random_state=seed)
    except ValueError as exc:
        raise KneelibError(f"paper protocol: cannot stratify ({exc})") from None
    out = [replace(pool[i], split="train") for i in train_idx] + [replace(pool[i], split="val") for i in val_idx]
    return sorted(out + list(test), key=sort_key)


def split_samples(samples: Sequence[Sample], *, protocol: str = "grouped",
                  ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 42) -> list[Sample]:
    """Split by ``protocol`` (``grouped`` or ``paper``); a grouped result is checked patient-disjoint."""
    if not 0 <= seed < 2**32:  # what NumPy and scikit-learn take
        raise KneelibError(f"--seed {seed}: must be an integer from 0 to 2**32 - 1")
    if protocol == "paper":
        return paper_split(samples, seed)
    if protocol != "grouped":
        raise KneelibError(f"unknown split protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    result = grouped_split(samples, ratios, seed)
    crossing = patients_across_splits(result)
    if crossing:  # cannot happen by construction; a hard check rather than an assert (kept under -O)
        raise KneelibError(f"internal error: {len(crossing)} patient(s) in more than one split")
    return result


#: The share of the official train split that becomes val' when the test split is withheld.
INNER_VAL_SHARE = 0.125
#: The fewest images of a grade that val' may hold (fewer: selection on it is mostly noise).
MIN_INNER_VAL_PER_GRADE = 5


def held_out_split(samples: Sequence[Sample], *, source: str | os.PathLike = "the data",
                   val_share: float = INNER_VAL_SHARE, seed: int = 42) -> list[Sample]:
    """Train on train', select on val', report on the official val split: for data whose test split is withheld.

    The official train split is re-split by patient, stratified by grade (:func:`grouped_split`, ``val_share``
    to val'); the official val split becomes ``test``, held out from training and selection. KneelibError
    (naming ``source``) without a train or val split, or with fewer than :data:`MIN_INNER_VAL_PER_GRADE` images
    of a grade in val'."""
    present = {s.split for s in samples}
    missing = [name for name in ("train", "val") if name not in present]
    if missing:
        have = ", ".join(sorted(str(p) for p in present if p)) or "no split folders"
        raise KneelibError(f"{source}: no {' or '.join(missing)} split (has {have}); held-out selection needs "
                           "DIR/train/{0..4} and DIR/val/{0..4}")
    train = [s for s in samples if s.split == "train"]
    inner = grouped_split(train, (1 - val_share, val_share, 0), seed)
    per_grade = np.bincount([s.grade for s in inner if s.split == "val"], minlength=5)
    short = [f"KL{g}: {n}" for g, n in enumerate(per_grade) if n < MIN_INNER_VAL_PER_GRADE]
    if short:
        raise KneelibError(f"{source}: too few images per grade for a patient-grouped val' split "
                           f"({', '.join(short)} of at least {MIN_INNER_VAL_PER_GRADE}; train has "
                           f"{len(train)} images)")
    held = [replace(s, split="test") for s in samples if s.split == "val"]
    return sorted(inner + held, key=sort_key)


def write_manifest(samples: Sequence[Sample], path: str | os.PathLike, *, protocol: str = "") -> Path:
    """A manifest CSV (:data:`MANIFEST_COLUMNS`) listing ``samples`` by absolute path, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(MANIFEST_COLUMNS)
    for s in samples:
        writer.writerow([str(Path(s.path).resolve()), s.grade, s.patient_id or "", s.side or "", s.split or "",
                         "", protocol])
    path = Path(path)
    write_text(path, buffer.getvalue())
    return path


def describe_split(source: str | os.PathLike, split: str) -> str:
    """Which images a table was computed on, in words: the split and its size, and for a held-out manifest
    (:func:`held_out_split`) that its ``test`` is the official val split, kept out of training and selection."""
    from kneelib.data.layout import detect_layout, discover

    source = Path(source)
    n = sum(s.split == split for s in discover(source))
    manifest = source if source.is_file() else source / MANIFEST_NAME
    held_out = False
    if detect_layout(source) == "manifest" and manifest.is_file():
        with open(manifest, newline="", encoding="utf-8") as handle:
            held_out = any(row.get("protocol") == "held-out" for row in csv.DictReader(handle))
    if held_out and split == "test":
        return (f"the official val split ({n:,} crops), held out: the runs trained on train' and were selected on "
                "val', a patient-grouped eighth of the official train split (the test split is withheld)")
    return f"the {split} split ({n:,} crops)"


def patients_across_splits(samples: Sequence[Sample]) -> dict[str, set[str | None]]:
    """Patients whose knees sit in more than one split (should be empty for ``grouped``)."""
    where: dict[str, set[str | None]] = defaultdict(set)
    for s in samples:
        where[s.patient_id or str(s.path)].add(s.split)
    return {p: splits for p, splits in where.items() if len(splits) > 1}


def proportions(samples: Sequence[Sample]) -> pd.DataFrame:
    """Share of each split overall (column ``all``) and within each grade (columns 0..4)."""
    import pandas as pd  # imported here to keep ``import kneelib.data.split`` light

    table = pd.crosstab(pd.Series([s.split for s in samples], name="split"),
                        pd.Series([s.grade for s in samples], name="grade"))
    shares = table / table.sum(axis=0)
    shares.insert(0, "all", table.sum(axis=1) / table.values.sum())
    return shares.reindex([s for s in SPLITS if s in shares.index])


def exclude(samples: Sequence[Sample], flagged: set[Path]) -> tuple[list[Sample], int]:
    """Drop samples whose (resolved) path is in ``flagged``; return the rest and the number dropped."""
    kept = [s for s in samples if s.path.resolve() not in flagged]
    return kept, len(samples) - len(kept)


def place_file(src: Path, dest: Path, mode: list[str]) -> None:
    """Symlink ``dest`` → ``src``; fall back to a hardlink, then a copy (``mode[0]`` remembers)."""
    while True:
        try:
            if mode[0] == "symlink":
                os.symlink(src, dest)
            elif mode[0] == "hardlink":
                os.link(src, dest)
            else:
                shutil.copy2(src, dest)
            return
        except OSError as exc:
            if mode[0] == "copy":
                raise KneelibError(f"{src}: cannot link or copy it to {dest} ({exc.strerror or exc})") from None
            mode[0] = "hardlink" if mode[0] == "symlink" else "copy"


def check_output_location(out: Path, samples: Sequence[Sample], source: str | os.PathLike | None = None) -> None:
    """KneelibError if OUT lies inside the source folder or an image folder, or contains an input image."""
    out_abs = Path(os.path.abspath(out))
    out_real = out_abs.resolve()
    inputs = {Path(os.path.abspath(s.path)).parent for s in samples} | {s.path.resolve().parent for s in samples}
    if source is not None and Path(source).is_dir():
        inputs |= {Path(os.path.abspath(source)), Path(source).resolve()}
    for folder in sorted(inputs):
        if folder in (out_abs, out_real) or folder in out_abs.parents or folder in out_real.parents:
            raise KneelibError(f"{out}: output folder lies inside the input data ({folder}); "
                               "write it somewhere else")
        if out_abs in folder.parents or out_real in folder.parents:
            raise KneelibError(f"{out}: output folder contains input images ({folder}); write it somewhere else")


def require_images(samples: Sequence[Sample]) -> None:
    """KneelibError naming the first sample whose file is not an image by its header (or is over the pixel
    budget): a data set takes image files only, whatever their names say."""
    for s in samples:
        try:
            image_size(s.path)
        except KneelibError as exc:
            raise KneelibError(f"{exc}; a data set takes image files only (`kneelib filter` finds such files, "
                               "`--exclude` skips them)") from None


def write_split(samples: Sequence[Sample], out: str | os.PathLike, *, info: dict, link: str = "symlink",
                overwrite: bool = False, source: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Write ``OUT/{split}/{grade}/`` links (symlink, else hardlink, else copy) plus ``manifest.csv``
    and ``split.json``, atomically; return OUT and the link mode used. Every file must be an image
    (:func:`require_images`)."""
    out = Path(out)
    check_output_location(out, samples, source)
    require_images(samples)
    mode, rows, used = [link], [], set()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for s in samples:
            rel = Path(s.split or "all", str(s.grade), s.path.name)
            n = 1
            while rel in used:  # same file name from two source folders
                n += 1
                rel = rel.with_name(f"{s.path.stem}__{n}{s.path.suffix}")
            used.add(rel)
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            src = s.path.resolve()
            place_file(src, tmp / rel, mode)
            rows.append((rel.as_posix(), s.grade, s.patient_id, s.side or "", s.split, str(src),
                         info.get("protocol", "")))
        with open(tmp / MANIFEST_NAME, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(MANIFEST_COLUMNS)
            writer.writerows(rows)
        (tmp / SPLIT_INFO).write_text(json.dumps({**info, "link": mode[0]}, indent=2) + "\n")
    return out, mode[0]
