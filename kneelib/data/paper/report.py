"""The report of a comparison with the paper's data set: its records (:class:`VerifyReport`, :class:`Finding`, ...)
and its words (variant tags, the verdict, advice, the text report)."""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kneelib.data.layout import SPLITS
from kneelib.data.paper.manifest import Entry
from kneelib.data.paper.pixel_check import ClaheCheck

KINDS = ("match", "missing", "relabelled", "changed", "extra")  #: the count columns (duplicates count as extra)
PRIMARY = ("match", "relabelled", "changed")  #: statuses of the one file that stands for a paper crop
COLUMNS = ("expected", "match", "missing", "relabelled", "changed", "extra")
LISTED = 20  #: files listed per kind in the text report
TAGS = {"paper": "kneeKL224", "other-pixels": "kneeKL224-other-preprocessing", "kneeKL299": "kneeKL299",
        "other-size": "other-size", "unrelated": "unknown"}


@dataclass(frozen=True)
class Found:
    """One image under DIR: where it sits (split/grade, or the extra folder it is in) and its size."""

    path: Path
    rel: str
    split: str | None
    grade: int | None
    size: int
    extra_folder: str | None = None

    @property
    def where(self) -> str:
        return f"{self.split}/{self.grade}" if self.split else f"grade {self.grade}"


@dataclass(frozen=True)
class Finding:
    """A file that is not a match: ``kind``, its name, the paper's place, where it is found, a detail."""

    kind: str
    file: str
    expected: str | None = None
    found: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class ExtraFolder:
    """A folder outside the layout: its images, how many carry paper names (per split), how many are identical."""

    name: str
    images: int
    paper_names: dict[str, int]
    identical: int


@dataclass(frozen=True)
class Placement:
    """A file of the layout with its paper entry (None for extras) and status (for ``prepare``)."""

    found: Found
    entry: Entry | None
    status: str
    identical: bool


@dataclass
class VerifyReport:
    """The comparison of one folder with the paper's manifest."""

    source: str
    manifest: str
    layout: str
    n_images: int
    counts: dict[str, dict[int, dict[str, int]]]
    findings: list[Finding]
    extra_folders: list[ExtraFolder]
    content: str  #: paper | other-pixels | kneeKL299 | other-size | unrelated
    image_size: tuple[int, int] | None
    clahe: ClaheCheck | None
    seconds: float
    placements: list[Placement] = field(default_factory=list, repr=False)

    @property
    def exact(self) -> bool:
        """Every paper file in its place (split folders, or a manifest with splits) with its bytes; nothing else."""
        return not self.findings and not self.extra_folders and self.content == "paper" and self.layout != "pool"

    def kind_count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)

    def split_totals(self) -> dict[str, dict[str, int]]:
        """Per split: the counts summed over grades."""
        out: dict[str, dict[str, int]] = {}
        for split, grades in self.counts.items():
            total = Counter()
            for row in grades.values():
                total.update(row)
            out[split] = {k: total.get(k, 0) for k in ("expected", *KINDS)}
        return out

    def variant(self) -> list[str]:
        """Short tags of the kind of copy: ``exact`` or e.g. ``["kneeKL299", "pool"]``."""
        return variant_tags(self)

    def to_json(self) -> dict:
        """The report as JSON-ready data (every finding listed)."""
        return {
            "source": self.source, "manifest": self.manifest, "exact": self.exact, "variant": self.variant(),
            "verdict": verdict(self), "layout": self.layout, "images": self.n_images,
            "content": self.content, "image_size": list(self.image_size) if self.image_size else None,
            "counts": {s: {str(g): row for g, row in grades.items()} for s, grades in self.counts.items()},
            "findings": [asdict(f) for f in self.findings],
            "extra_folders": [asdict(e) for e in self.extra_folders],
            "clahe": self.clahe.to_json() if self.clahe else None,
            "advice": advice(self), "seconds": round(self.seconds, 3),
        }

    def render(self) -> str:
        """The human report (tables, files by name, what to do)."""
        return render(self)


def variant_tags(r: VerifyReport) -> list[str]:
    """``["exact"]``, or the kind of copy plus ``pool`` / ``extra-folder`` where they apply."""
    if r.exact:
        return ["exact"]
    return [TAGS[r.content]] + (["pool"] if r.layout == "pool" else []) + (["extra-folder"] if r.extra_folders else [])


def describe(r: VerifyReport) -> str:
    """What kind of copy it is, in words."""
    w, h = r.image_size or (0, 0)
    what = {"paper": "the paper's kneeKL224 files",
            "other-pixels": "the paper's names and grades at 224 px with other pixels (other preprocessing)",
            "kneeKL299": "the 299 px copy of the data set (kneeKL299)",
            "other-size": f"the paper's names at {w}x{h} px",
            "unrelated": "not the paper's data set"}[r.content]
    if r.layout == "pool":
        what += ", in a pool without splits"
    if r.extra_folders:
        what += f", with extra folder(s) {', '.join(e.name for e in r.extra_folders)}"
    return what


def _absent(r: VerifyReport) -> list[str]:
    totals = r.split_totals()
    return [s for s in SPLITS
            if s in totals and totals[s]["expected"] and totals[s]["missing"] == totals[s]["expected"]]


def _in_absent(f: Finding, absent: set[str]) -> bool:
    """A missing file of a split that is absent as a whole (reported once, not file by file)."""
    return f.kind == "missing" and f.expected.split("/")[0] in absent


def _split_parts(r: VerifyReport) -> str:
    totals, absent = r.split_totals(), _absent(r)
    parts = [f"{s} {totals[s]['match']:,}/{totals[s]['expected']:,}" for s in SPLITS
             if s in totals and totals[s]["expected"] and s not in absent]
    return ", ".join(parts) + (f"; {', '.join(absent)} absent" if absent else "")


def _problems(r: VerifyReport) -> str:
    absent = set(_absent(r))
    counts = {k: sum(1 for f in r.findings if f.kind == k and not _in_absent(f, absent))
              for k in ("relabelled", "changed", "extra", "missing")}
    return ", ".join(f"{n:,} {k}" for k, n in counts.items() if n)


def verdict(r: VerifyReport, *, with_hint: bool = False) -> str:
    """One line (two with ``with_hint``): does it match the paper's data set, and if not, how not."""
    totals = r.split_totals()
    if r.exact:
        return "matches the paper's data set exactly (" + ", ".join(
            f"{s} {totals[s]['match']:,}" for s in SPLITS if totals.get(s, {}).get("expected")) + ")"
    if r.content == "unrelated":
        named = sum(1 for p in r.placements if p.entry is not None)
        line = f"differs from the paper's data set: not the paper's ({named:,} of {r.n_images:,} file names are its)"
    elif (r.content == "paper" and r.layout != "pool" and not r.extra_folders and not _problems(r)):
        return f"matches the paper's data set ({_split_parts(r)})"
    else:
        problems = _problems(r)
        line = f"differs from the paper's data set: {describe(r)}; {_split_parts(r)}"
        line += f"; {problems}" if problems else ""
    if with_hint:
        line += f"\nrun `kneelib data verify {shlex.quote(r.source)}` for details"
        if r.content != "unrelated" and _prepare_reasons(r):
            line += f"; `kneelib data prepare {shlex.quote(r.source)} OUT` makes the paper's layout from it"
    return line


def _prepare_reasons(r: VerifyReport) -> list[str]:
    reasons = []
    if r.content in ("kneeKL299", "other-size"):
        reasons.append("resizes the images to 224 px")
    clahe = r.clahe.verdict if r.clahe else None
    if clahe == "unprocessed" or (r.content == "kneeKL299" and clahe == "undecidable"):
        reasons.append("applies the paper's CLAHE")
    if r.layout == "pool":
        reasons.append("places every file in the paper's split")
    moved = r.kind_count("relabelled")
    if moved and r.content != "unrelated":
        reasons.append(f"puts the {moved:,} relabelled file(s) back in the paper's split and grade")
    return reasons


def advice(r: VerifyReport) -> list[str]:
    """What to do about each difference, one sentence each (empty for an exact copy)."""
    if r.exact:
        return []
    if r.content == "unrelated":
        return ["not the paper's data set: there is nothing to compare it with; kneelib trains on it all the same, "
                "but its results are not comparable with the paper's"]
    lines = []
    reasons = _prepare_reasons(r)
    if reasons:
        lines.append(f"`kneelib data prepare {shlex.quote(r.source)} OUT` {', '.join(reasons)}; it writes nothing "
                     "into the source and OUT only when complete")
    if r.clahe is not None:
        lines.append(f"CLAHE: {r.clahe.sentence()}")
        if r.clahe.verdict == "other":
            lines.append("results trained on this copy are not comparable with the paper's; `prepare` keeps its "
                         "pixels (--clahe on applies the paper's CLAHE on top)")
    totals = r.split_totals()
    for split in _absent(r):
        lines.append(f"{split} absent ({totals[split]['expected']:,} files): the archive has them (fine if you hold "
                     "them back on purpose)")
    if r.content == "paper" and r.kind_count("changed"):
        lines.append(f"{r.kind_count('changed'):,} file(s) differ from the paper's (listed above): download them again")
    absent = set(_absent(r))
    partly_missing = sum(1 for f in r.findings if f.kind == "missing" and not _in_absent(f, absent))
    if partly_missing:
        lines.append(f"{partly_missing:,} file(s) missing (listed above): download the archive again")
    if r.kind_count("extra"):
        lines.append(f"{r.kind_count('extra'):,} file(s) not in the paper's data set or second copies (listed above): "
                     "kneelib trains on them unless removed; `prepare` leaves them out")
    for extra in r.extra_folders:
        lines.append(f"{extra.name} is not part of the paper's layout: kneelib reads only {{train,val,test}}/{{0..4}}/ "
                     "and ignores it")
    return lines


def _table(r: VerifyReport) -> list[str]:
    head = f"{'split':6} {'grade':5} " + " ".join(f"{c if c != 'expected' else 'paper':>10}" for c in COLUMNS)
    lines = [head]
    for split, grades in r.counts.items():
        rows = [(str(g), row) for g, row in grades.items() if any(row.values())]
        if not rows:
            continue
        rows.append(("all", r.split_totals()[split]))
        for grade, row in rows:
            lines.append(f"{split:6} {grade:5} " + " ".join(f"{row[c]:>10,}" for c in COLUMNS))
    return lines


def _files(r: VerifyReport) -> list[str]:
    absent = set(_absent(r))
    listed = [f for f in r.findings if not _in_absent(f, absent)]
    lines = []
    for kind in ("relabelled", "changed", "extra", "missing"):
        of_kind = [f for f in listed if f.kind == kind]
        if kind == "changed" and r.content != "paper" and of_kind:  # the copy's kind, not a file's fault
            w, h = r.image_size or (0, 0)
            size = f"{w}x{h} px" if r.image_size else "images"
            lines.append(f"  {kind:10} {len(of_kind):,} files in the paper's places with other bytes ({size}; "
                         "--json lists them)")
            continue
        for f in of_kind[:LISTED]:
            where = f.found or f"{f.expected}/{f.file}"
            lines.append(f"  {kind:10} {where}" + (f"  {f.detail}" if f.detail else ""))
        if len(of_kind) > LISTED:
            lines.append(f"  {kind:10} ... and {len(of_kind) - LISTED:,} more (--json lists them all)")
    return lines


def render(r: VerifyReport) -> str:
    """The full human report."""
    total = sum(row["expected"] for grades in r.counts.values() for row in grades.values())
    lines = [f"{r.source}: {describe(r)}",
             f"checked {r.n_images:,} images ({r.layout} layout) against the paper's manifest ({total:,} files) "
             f"in {r.seconds:.1f} s", ""]
    lines += _table(r) + [""]
    files = _files(r)
    if files:
        lines += ["files not matching, by name:"] + files + [""]
    for extra in r.extra_folders:
        names = ", ".join(f"{n:,} {s}" for s, n in extra.paper_names.items()) or "none"
        lines.append(f"extra folder {extra.name}: {extra.images:,} images; with the paper's names: {names}; "
                     f"identical to the paper's file: {extra.identical:,}")
    if r.extra_folders:
        lines.append("")
    lines.append(f"verdict: {verdict(r)}")
    lines += [f"  - {line}" for line in advice(r)]
    return "\n".join(lines)
