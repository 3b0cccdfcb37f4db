"""Turn a copy of the data set into the paper's layout (``kneelib data prepare SRC OUT``).

OUT gets ``{train,val,test}/{0..4}/<name>.png`` at 224 px, each file in the split and grade of the paper's
manifest (whatever folder it sat in under SRC). A file with the paper's bytes is linked (hardlink, else a
copy; ``symlink`` on request); any other file is decoded and passed through kneelib's one preprocessing
(:func:`kneelib.data.transforms.preprocess`: resize to 224 px with area interpolation, then — when
``clahe`` says so — the paper's CLAHE) and written as PNG. ``clahe="auto"`` applies CLAHE when
:mod:`kneelib.data.paper.pixel_check` finds the copy unprocessed (or cannot tell, for the 299 px copy, which
is published without it). On the real 299 px raw sample this reproduces the kneeKL224 files to a mean
absolute difference of 2.07 grey levels (worst file 2.84; ``tests/test_data_verify.py``).

Files the paper does not have, second copies, files in extra folders and unreadable files are left out
and counted (``OUT/prepare.json`` lists them). Nothing is written into SRC; OUT appears only complete
(:func:`kneelib.atomic.atomic_dir`). Re-running with the same source and options finds OUT done and
leaves it; ``force`` rebuilds it.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kneelib.atomic import atomic_dir
from kneelib.data.io import image_size, read_image
from kneelib.data.layout import SPLITS, Sample
from kneelib.data.paper.report import PRIMARY, Placement, VerifyReport, verdict
from kneelib.data.paper.verify import WORKERS, run_parallel, verify
from kneelib.data.split import check_output_location, place_file
from kneelib.errors import KneelibError

PREPARE_INFO = "prepare.json"
CLAHE_MODES = ("auto", "on", "off")
LINK_MODES = ("hardlink", "copy", "symlink")
PAPER_SIZE = 224


@dataclass
class PrepareResult:
    """What ``prepare`` did (``already``: OUT was complete from an earlier run with the same request)."""

    out: Path
    already: bool
    written: dict[str, int]
    linked: int = 0
    converted: int = 0
    clahe: bool = False
    link: str = ""
    relabelled: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    report: VerifyReport | None = field(default=None, repr=False)

    def skipped_summary(self) -> str:
        """``1 not in the paper's data set, extra folders auto_test/ (1,656 images)``."""
        return ", ".join(f"{k} {', '.join(v)}" if k == "extra folders" else f"{len(v):,} {k}"
                         for k, v in self.skipped.items())


def decide_clahe(mode: str, report: VerifyReport) -> bool:
    """Whether converted files get the paper's CLAHE: ``on``/``off``, or ``auto`` from the pixel check."""
    if mode not in CLAHE_MODES:
        raise KneelibError(f"--clahe {mode!r}: choose from {', '.join(CLAHE_MODES)}")
    if mode != "auto":
        return mode == "on"
    verdict = report.clahe.verdict if report.clahe else None
    return verdict == "unprocessed" or (report.content == "kneeKL299" and verdict in (None, "undecidable"))


def _write_one(p: Placement, root: Path, clahe: bool, mode: list[str]) -> str:
    """Place one file under ``root`` at the paper's split/grade; returns ``linked``, ``converted`` or why not."""
    import cv2

    from kneelib.data.transforms import preprocess

    dest = root / p.entry.split / str(p.entry.grade) / p.entry.file
    dest.parent.mkdir(parents=True, exist_ok=True)
    if p.identical:
        try:
            image_size(p.found.path)  # the manifest's bytes, but only an image enters OUT
        except KneelibError:
            return "unreadable"
        place_file(p.found.path.resolve(), dest, mode)
        return "linked"
    try:
        gray = read_image(p.found.path)
    except KneelibError:
        return "unreadable"
    if not cv2.imwrite(str(dest), preprocess(gray, image_size=PAPER_SIZE, clahe=clahe)):
        raise KneelibError(f"{dest}: cannot write the PNG")
    return "converted"


def _skipped(report: VerifyReport) -> dict[str, list[str]]:
    skipped: dict[str, list[str]] = {}
    for p in report.placements:
        if p.status == "extra":
            skipped.setdefault("not in the paper's data set", []).append(p.found.rel)
        elif p.status == "duplicate":
            skipped.setdefault("second copy", []).append(p.found.rel)
    if report.extra_folders:
        skipped["extra folders"] = [f"{e.name} ({e.images:,} images)" for e in report.extra_folders]
    return skipped


def _done_before(out: Path, request: dict, force: bool) -> dict | None:
    """The ``prepare.json`` of a complete OUT made by the same request; KneelibError for another one."""
    info = out / PREPARE_INFO
    if force or not info.is_file():
        return None
    try:
        done = json.loads(info.read_text())
    except (OSError, ValueError) as exc:
        raise KneelibError(f"{info}: cannot read ({exc}); --force rebuilds {out}") from None
    if done.get("request") != request:
        raise KneelibError(f"{out}: holds a copy prepared from {done.get('request', {}).get('source')} with other "
                           "options; --force replaces it")
    return done


def prepare(src: str | os.PathLike, out: str | os.PathLike, *, manifest: str | os.PathLike | None = None,
            clahe: str = "auto", link: str = "hardlink", force: bool = False, progress: bool | None = None,
            workers: int = WORKERS) -> PrepareResult:
    """Write the paper's layout of ``src`` to ``out`` (see the module docstring); nothing into ``src``."""
    start = time.perf_counter()
    if link not in LINK_MODES:
        raise KneelibError(f"--link {link!r}: choose from {', '.join(LINK_MODES)}")
    src, out = Path(src), Path(out)
    report = verify(src, manifest=manifest, progress=progress, workers=workers)
    if report.content == "unrelated":
        raise KneelibError(f"{src}: not the paper's data set (few of its file names are the paper's); "
                           "nothing to map to the paper's layout")
    check_output_location(out, [Sample(p.found.path, p.found.grade or 0) for p in report.placements], src)
    request = {"source": os.path.abspath(src), "manifest": os.path.abspath(manifest) if manifest else "packaged",
               "clahe": clahe, "link": link}
    done = _done_before(out, request, force)
    if done is not None:
        return PrepareResult(out, True, done.get("written", {}), seconds=time.perf_counter() - start, report=report)
    apply_clahe = decide_clahe(clahe, report)
    primaries = [p for p in report.placements if p.status in PRIMARY]
    mode = [link]
    if any(not p.identical for p in primaries):
        from kneelib.data import transforms  # noqa: F401  (torch loads once here, not in every thread)
    with atomic_dir(out, overwrite=force) as tmp:
        outcomes = run_parallel(lambda p: _write_one(p, tmp, apply_clahe, mode), primaries, progress,
                                "prepare", workers)
        skipped = _skipped(report)
        unreadable = [p.found.rel for p, o in zip(primaries, outcomes) if o == "unreadable"]
        if unreadable:
            skipped["unreadable"] = unreadable
        written = Counter(p.entry.split for p, o in zip(primaries, outcomes) if o != "unreadable")
        totals = report.split_totals()
        missing = {s: totals[s]["expected"] - written[s] for s in SPLITS
                   if s in totals and totals[s]["expected"] > written[s]}
        result = PrepareResult(out, False, {s: written[s] for s in SPLITS if written[s]},
                               sum(o == "linked" for o in outcomes), sum(o == "converted" for o in outcomes),
                               apply_clahe, mode[0], sum(p.status == "relabelled" for p in primaries),
                               skipped, missing, 0.0, report)
        info = {"request": request, "written": result.written, "linked": result.linked,
                "converted": result.converted, "clahe_applied": apply_clahe, "link": mode[0],
                "relabelled_put_back": result.relabelled, "skipped": skipped, "missing": missing,
                "source_verdict": verdict(report), "size": PAPER_SIZE}
        (tmp / PREPARE_INFO).write_text(json.dumps(info, indent=2) + "\n")
    result.seconds = time.perf_counter() - start
    return result
