"""The committed reference of a sweep's trained numbers, and the tolerance they are compared with.

Cells whose output is a deterministic computation from fixed inputs (Table 1's counts, parameter counts)
are compared exactly by nbval. The numbers that come out of training — every run's best validation
accuracy and Tables 4, 5 and 6 — are compared here, against ``notebooks/reference/<profile>.json``, which
``kneelib reproduce --update-notebooks`` writes:

- **exactly** (|Δ| ≤ 1e-6) when the reference and the sweep both ran with kneelib's AVX2 kernel pin
  (:mod:`kneelib.cpu_pin`): then every x86-64 machine computes the same floats;
- **within** :data:`TOLERANCE` otherwise (another architecture, e.g. ARM64, where the pin cannot apply
  and a few epochs of training turn last-bit differences into other accuracies): wide enough for a
  different but healthy training run, narrow enough to catch a model that stopped learning.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from kneelib.atomic import write_text
from kneelib.errors import KneelibError
from kneelib.pipeline.notebooks import NOTEBOOK_DIR
from kneelib.pipeline.profiles import Layout

REFERENCE_DIR = NOTEBOOK_DIR / "reference"
TABLES = ("table4", "table5", "table6")
#: Table columns compared (the paper's own numbers and the differences to them are not ours to check).
COLUMNS = ("accuracy", "accuracy_std", "precision", "recall", "f1", "f1_std", "se_gain", "qwk", "qwk_std", "mae")
#: |Δ| allowed when the pin is not in effect on both sides: percentage points, and absolute for the rest.
TOLERANCE = {"percent": 15.0, "unit": 0.3}
EXACT = 1e-6
_UNIT_SCALE = ("qwk", "qwk_std", "mae")


def reference_path(profile: str) -> Path:
    return REFERENCE_DIR / f"{profile}.json"


def _runs_kernels(layout: Layout) -> tuple[bool | None, str | None]:
    """``(pinned, vendor)`` of the sweep's runs: True if every run recorded kneelib's CPU pin, False if one did not;
    the processor vendor they all recorded (None where they differ or lack it); both None without runs."""
    kernels = [json.loads(config.read_text()).get("cpu_kernels", {})
               for config in sorted(layout.runs.glob("*/config.json"))]
    if not kernels:
        return None, None
    vendors = {k.get("vendor") for k in kernels}
    return all(bool(k.get("pinned")) for k in kernels), (vendors.pop() if len(vendors) == 1 else None)


def collect(layout: Layout) -> dict[str, float]:
    """The trained numbers of a finished sweep: ``runs/<run>/best_val_acc`` (percent) and
    ``<table>/<row>/<column>`` for Tables 4–6."""
    values: dict[str, float] = {}
    for status in sorted(layout.runs.glob("*/status.json")):
        doc = json.loads(status.read_text())
        if doc.get("finished"):
            values[f"runs/{status.parent.name}/best_val_acc"] = 100.0 * float(doc["best_val_acc"])
    for table in TABLES:
        path = layout.tables / f"{table}.csv"
        if not path.is_file():
            continue
        frame = pd.read_csv(path, index_col=0)
        for row, record in frame.iterrows():
            for column in COLUMNS:
                if column in record and pd.notna(record[column]):
                    values[f"{table}/{row}/{column}"] = float(record[column])
    return values


def write_reference(layout: Layout, profile: str) -> Path:
    """Record the sweep's trained numbers as ``notebooks/reference/<profile>.json``."""
    values = collect(layout)
    if not values:
        raise KneelibError(f"{layout.out}: no finished runs or tables to record as the reference")
    pinned, vendor = _runs_kernels(layout)
    doc = {"profile": profile, "pinned": bool(pinned), "vendor": vendor, "values": values}
    return write_text(reference_path(profile), json.dumps(doc, indent=1, sort_keys=True) + "\n")


def load_reference(profile: str) -> dict[str, Any] | None:
    path = reference_path(profile)
    return json.loads(path.read_text()) if path.is_file() else None


def _allowed(key: str, exact: bool) -> float:
    if exact:
        return EXACT
    return TOLERANCE["unit"] if key.rsplit("/", 1)[-1] in _UNIT_SCALE else TOLERANCE["percent"]


def compare(values: Mapping[str, float], reference: Mapping[str, Any], *, pinned: bool | None,
            vendor: str | None = None) -> tuple[str, list[str]]:
    """``(mode, differences)``: mode ``exact`` (both sides pinned, on the same processor vendor where the reference
    names one) or ``tolerance``; one line per number outside it, and per reference number the sweep lacks."""
    same_vendor = reference.get("vendor") is None or reference.get("vendor") == vendor
    exact = bool(reference.get("pinned")) and bool(pinned) and same_vendor
    problems = []
    for key, expected in sorted(reference["values"].items()):
        if key not in values:
            problems.append(f"{key}: missing (reference {expected:.4g})")
            continue
        got = values[key]
        if math.isnan(expected) and math.isnan(got):
            continue
        allowed = _allowed(key, exact)
        if not abs(got - expected) <= allowed:
            problems.append(f"{key}: {got:.4f}, reference {expected:.4f} (|Δ| > {allowed:g})")
    return ("exact" if exact else "tolerance"), problems


def check_sweep(layout: Layout, profile: str) -> str:
    """One line on how the sweep compares with the committed reference (KneelibError listing the
    differences when it does not match)."""
    reference = load_reference(profile)
    if reference is None:
        return f"no committed reference for profile {profile!r}"
    pinned, vendor = _runs_kernels(layout)
    mode, problems = compare(collect(layout), reference, pinned=pinned, vendor=vendor)
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise KneelibError(f"{layout.out} differs from {reference_path(profile)} ({mode} comparison): {shown}")
    why = (f"made on {reference['vendor']}, run on {vendor}: the pin does not make vendors agree"
           if reference.get("pinned") and reference.get("vendor") not in (None, vendor) else "no common CPU pin")
    how = "exactly (AVX2 pin on both sides)" if mode == "exact" else \
        f"within ±{TOLERANCE['percent']:g} points / ±{TOLERANCE['unit']:g} ({why})"
    return f"matches the committed reference {reference_path(profile).name}: {len(reference['values'])} numbers, {how}"
