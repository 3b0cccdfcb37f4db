"""Compare a copy of the data set with the paper's manifest (``kneelib data verify``).

Every file of DIR (split folders, a pool of grade folders, or a manifest CSV) is matched with the
paper's crop of the same name (file stem, e.g. ``9003126L``) and is then one of: ``match`` (same place,
same bytes), ``relabelled`` (another split or grade than the paper's), ``changed`` (same place, other
bytes), ``duplicate`` (a second copy of a name) or ``extra`` (a name the paper does not have); each
paper file found nowhere is ``missing``. Folders outside the layout (e.g. ``auto_test/``) are summarised,
not matched. A file is hashed only when its size could match (same name and byte count, or an unknown
name whose size some paper file has), with a thread pool: the 6,604 train/val crops take about a second
when the page cache holds them. Changed files are decoded and compared with the reference pixels
(:mod:`kneelib.data.paper.pixel_check`) to tell another encoding, another size (kneeKL299) and missing CLAHE
apart. Only ``exact`` (every paper file matched, nothing else) counts as the paper's data set.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from kneelib.data.io import image_size, is_image_file
from kneelib.data.layout import GRADE_DIRS, MANIFEST_NAME, SPLITS, read_manifest
from kneelib.data.paper.manifest import PaperManifest, load_manifest
from kneelib.data.paper.pixel_check import PixelCheck, check_file, clahe_verdict, sample_evenly
from kneelib.data.paper.report import KINDS, PRIMARY, ExtraFolder, Finding, Found, Placement, VerifyReport, verdict
from kneelib.errors import KneelibError

DETAILED = 50  #: a copy of the paper's files: at most this many changed files are decoded and described
WORKERS = 8
T = TypeVar("T")
R = TypeVar("R")


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path, source: Path, split: str | None, grade: int | None,
               extra: str | None, recursive: bool = False) -> list[Found]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for name in sorted(files):
            if is_image_file(name):
                path = Path(root, name)
                found.append(Found(path, path.relative_to(source).as_posix(), split, grade,
                                   path.stat().st_size, extra))
    return found


def _loose(folder: Path, source: Path, extra: str) -> list[Found]:
    """Image files lying directly in ``folder`` (outside any grade folder)."""
    return [Found(p, p.relative_to(source).as_posix(), None, None, p.stat().st_size, extra)
            for p in sorted(folder.iterdir()) if p.is_file() and is_image_file(p.name)]


def _layout_hint(source: Path) -> str:
    nested = [d.name for d in _subdirs(source)
              if {s.name for s in _subdirs(d)} & {*SPLITS, *GRADE_DIRS}]
    if nested:
        return f"; it holds {', '.join(n + '/' for n in nested[:4])}: point at one of them"
    return ""


def scan(source: str | os.PathLike) -> tuple[str, list[Found]]:
    """The layout (``splits``, ``pool``, ``manifest``) and every image of ``source``, extra folders included."""
    source = Path(source)
    if not source.exists():
        raise KneelibError(f"{source}: no such file or directory")
    if source.is_file():
        samples = read_manifest(source)
        layout = "manifest" if all(s.split for s in samples) else "pool"  # no split column: a pool by another name
        return layout, [Found(s.path, str(s.path), s.split, s.grade, s.path.stat().st_size) for s in samples]
    subdirs = _subdirs(source)
    names = {d.name for d in subdirs}
    if names & set(SPLITS) and names & set(GRADE_DIRS):
        raise KneelibError(f"{source}: has both split folders and grade folders at the top; use one layout")
    if not names & {*SPLITS, *GRADE_DIRS}:
        if (source / MANIFEST_NAME).is_file():
            return scan(source / MANIFEST_NAME)
        raise KneelibError(f"{source}: no {{train,val,test}}/{{0..4}}/ or {{0..4}}/ folders and no "
                           f"{MANIFEST_NAME}{_layout_hint(source)}")
    layout = "splits" if names & set(SPLITS) else "pool"
    found = _loose(source, source, ".")
    for top in subdirs:
        if top.name in SPLITS:
            found += _loose(top, source, f"{top.name}/")
            for sub in _subdirs(top):
                if sub.name in GRADE_DIRS:
                    found += _images_in(sub, source, top.name, int(sub.name), None)
                else:
                    found += _images_in(sub, source, None, None, f"{top.name}/{sub.name}/", recursive=True)
        elif top.name in GRADE_DIRS:
            found += _images_in(top, source, None, int(top.name), None)
        else:
            found += _images_in(top, source, None, None, f"{top.name}/", recursive=True)
    if not found:
        raise KneelibError(f"{source}: no images (.png/.jpg/.jpeg/.dcm) found in its folders")
    return layout, found


def _sha256(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def _progress_bar(total: int, progress: bool | None, desc: str):
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    return tqdm(total=total, desc=desc, unit="file", disable=not show or total == 0, file=sys.stderr, leave=False)


def run_parallel(func: Callable[[T], R], items: list[T], progress: bool | None, desc: str, workers: int) -> list[R]:
    """``func`` over ``items`` in a thread pool (file reads, hashing and OpenCV release the GIL), in order."""
    with ThreadPoolExecutor(max_workers=workers) as pool, _progress_bar(len(items), progress, desc) as bar:
        results = []
        for result in pool.map(func, items):
            results.append(result)
            bar.update()
        return results


def _classify(found: list[Found], hashes: dict[Path, str | None],
              paper: PaperManifest) -> tuple[list[Placement], list[Finding]]:
    """Give each file of the layout its status; the paper files found nowhere become ``missing``."""
    data = [f for f in found if f.extra_folder is None]
    groups: dict[str, list[Found]] = defaultdict(list)
    placements, findings = [], []
    for f in data:
        entry = paper.entries.get(f.path.stem)
        if entry is not None:
            groups[f.path.stem].append(f)
            continue
        twin = paper.by_sha256.get(hashes.get(f.path) or "")
        detail = f"same bytes as {twin.file} ({twin.where})" if twin else "not in the paper's data set"
        placements.append(Placement(f, None, "extra", False))
        findings.append(Finding("extra", f.path.name, None, f.rel, detail))
    for stem, group in sorted(groups.items()):
        entry = paper.entries[stem]
        identical = {f.path: hashes.get(f.path) == entry.sha256 for f in group}
        home = [f for f in group if f.grade == entry.grade and f.split in (None, entry.split)]
        pick = home or group
        primary = next((f for f in pick if identical[f.path]), pick[0])
        status = "relabelled" if not home else "match" if identical[primary.path] else "changed"
        placements.append(Placement(primary, entry, status, identical[primary.path]))
        if status == "relabelled":
            paper_at = entry.where if primary.split else f"grade {entry.grade}"
            same = "same bytes" if identical[primary.path] else "other bytes"
            findings.append(Finding("relabelled", entry.file, entry.where, primary.rel,
                                    f"{paper_at} -> {primary.where} ({same})"))
        elif status == "changed":
            findings.append(Finding("changed", entry.file, entry.where, primary.rel,
                                    f"{primary.size:,} bytes, the paper's {entry.bytes:,}"))
        for other in group:
            if other is not primary:
                placements.append(Placement(other, entry, "duplicate", identical[other.path]))
                findings.append(Finding("extra", entry.file, entry.where, other.rel,
                                        f"a second copy of {entry.file} (the paper's place: {entry.where})"))
    for stem, entry in paper.entries.items():
        if stem not in groups:
            findings.append(Finding("missing", entry.file, entry.where, None, ""))
    return placements, findings


def _counts(paper: PaperManifest, placements: list[Placement],
            findings: list[Finding]) -> dict[str, dict[int, dict[str, int]]]:
    table: dict[str, dict[int, dict[str, int]]] = {}

    def row(split: str, grade: int) -> dict[str, int]:
        grades = table.setdefault(split, {})
        return grades.setdefault(grade, {"expected": 0, **{k: 0 for k in KINDS}})

    for split in SPLITS:
        for grade in range(len(GRADE_DIRS)):
            row(split, grade)
    for (split, grade), n in paper.counts().items():
        row(split, grade)["expected"] = n
    for p in placements:
        if p.entry is not None and p.status in PRIMARY:
            row(p.entry.split, p.entry.grade)[p.status] += 1
        else:
            row(p.found.split or "pool", p.found.grade)["extra"] += 1
    for f in findings:
        if f.kind == "missing":
            split, grade = f.expected.split("/")
            row(split, int(grade))["missing"] += 1
    return {s: dict(sorted(g.items())) for s, g in table.items()}


def _extra_folders(found: list[Found], hashes: dict[Path, str | None], paper: PaperManifest) -> list[ExtraFolder]:
    folders: dict[str, list[Found]] = defaultdict(list)
    for f in found:
        if f.extra_folder is not None:
            folders[f.extra_folder].append(f)
    out = []
    for name, files in sorted(folders.items()):
        entries = [(f, paper.entries.get(f.path.stem)) for f in files]
        splits = Counter(e.split for _, e in entries if e is not None)
        identical = sum(1 for f, e in entries if e is not None and hashes.get(f.path) == e.sha256)
        out.append(ExtraFolder(name, len(files), {s: splits[s] for s in SPLITS if splits[s]}, identical))
    return out


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        return image_size(path)
    except KneelibError:  # unreadable or over the pixel budget: the pixel check describes it
        return None


def verify(source: str | os.PathLike, *, manifest: str | os.PathLike | None = None,
           progress: bool | None = None, workers: int = WORKERS) -> VerifyReport:
    """Compare ``source`` with the paper's manifest (default: the packaged one); writes nothing.

    ``progress``: a tqdm bar on stderr (None: only when stderr is a terminal).
    """
    start = time.perf_counter()
    paper = load_manifest(manifest)
    layout, found = scan(source)
    sizes = {e.bytes for e in paper.entries.values()}

    def worth_hashing(f: Found) -> bool:
        entry = paper.entries.get(f.path.stem)
        return f.size == entry.bytes if entry is not None else f.size in sizes

    to_hash = [f.path for f in found if worth_hashing(f)]
    hashes = dict(zip(to_hash, run_parallel(_sha256, to_hash, progress, "sha256", workers)))
    placements, findings = _classify(found, hashes, paper)
    primaries = [p for p in placements if p.status in PRIMARY]
    differing = [p for p in primaries if not p.identical]
    data_images = sum(1 for f in found if f.extra_folder is None)
    content, image_size, clahe = "paper", None, None
    if not primaries or len(primaries) < data_images / 2:
        content = "unrelated"
    elif len(differing) > len(primaries) / 2:
        sizes_seen = Counter(s for s in (_image_size(p.found.path) for p in sample_evenly(differing, 20)) if s)
        image_size = sizes_seen.most_common(1)[0][0] if sizes_seen else None
        content = {(224, 224): "other-pixels", (299, 299): "kneeKL299"}.get(image_size, "other-size")
    if differing and content != "unrelated":
        with_reference = [p for p in differing if p.entry.thumb is not None]
        sample = (differing[:DETAILED] if content == "paper"
                  else sample_evenly(with_reference or differing))
        if any(p.entry.thumb is not None for p in sample):
            from kneelib.data import transforms  # noqa: F401  (torch loads once here, not in every thread)
        checks: list[PixelCheck] = run_parallel(lambda p: check_file(p.found.path, p.entry), sample,
                                             progress, "pixels", workers)
        described = {p.found.rel: c.describe() for p, c in zip(sample, checks)}
        findings = [Finding(f.kind, f.file, f.expected, f.found, f"{f.detail}: {described[f.found]}")
                    if f.kind in ("changed", "relabelled") and f.found in described else f for f in findings]
        if content != "paper":
            clahe = clahe_verdict(checks)
    order = {k: i for i, k in enumerate(KINDS)}
    findings.sort(key=lambda f: (order[f.kind], f.expected or "", f.found or "", f.file))
    return VerifyReport(str(source), paper.source, layout, data_images, _counts(paper, placements, findings),
                        findings, _extra_folders(found, hashes, paper), content, image_size, clahe,
                        time.perf_counter() - start, placements)


def verdict_line(source: str | os.PathLike, *, manifest: str | os.PathLike | None = None,
                 progress: bool | None = False) -> str:
    """One or two lines on ``source`` against the paper's data set (for the profiles and ``01_data``)."""
    return verdict(verify(source, manifest=manifest, progress=progress), with_hint=True)
