"""A sweep's runs (arch × scheme × seed under ``OUT/runs``) and their cached evaluations.

Each (arch, scheme) group of seeds is evaluated once — every member and the seed ensemble — and cached
as ``OUT/eval/<arch>_<scheme>/{metrics.json,predictions.csv}``. The cache is reused only while it is
newer than every member's ``best.pt`` and was made on the same split, data directory and evaluation
code (a fingerprint of the modules that compute predictions and metrics), so a change in how a metric is
computed always shows in the tables.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from kneelib.errors import KneelibError
from kneelib.evaluate.split_evaluation import evaluate_runs, save_metrics, save_predictions
from kneelib.train.config import run_name


def code_fingerprint() -> str:
    """A hash of the source of every module that turns a checkpoint into metrics."""
    from kneelib.data import dicom, io, pixels, transforms
    from kneelib.evaluate import calibration, ensemble, inference, metrics, split_evaluation

    digest = hashlib.sha256()
    for module in (inference, ensemble, calibration, split_evaluation, metrics, io, pixels, dicom, transforms):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def group_runs(out_dir: str | os.PathLike, arch: str, scheme: str, seeds: Sequence[int]) -> list[Path]:
    """The finished-or-not run directories of one (arch, scheme) group that hold a best checkpoint."""
    runs = [Path(out_dir) / "runs" / run_name(arch, scheme, s) for s in seeds]
    return [r for r in runs if (r / "best.pt").is_file()]


def _cache_valid(metrics_path: Path, runs: Sequence[Path], split: str, data_dir: str) -> bool:
    if not metrics_path.is_file():
        return False
    try:
        cached = json.loads(metrics_path.read_text())
    except ValueError:
        return False
    newest = max((r / "best.pt").stat().st_mtime for r in runs)
    return (metrics_path.stat().st_mtime >= newest and cached.get("split") == split
            and cached.get("data") == data_dir and cached.get("code") == code_fingerprint()
            and sorted(cached.get("runs", {}).values()) == sorted(str(r) for r in runs))


def evaluate_group(out_dir: str | os.PathLike, data_dir: str | os.PathLike, arch: str, scheme: str,
                   seeds: Sequence[int], *, split: str = "test", device: str = "auto",
                   progress: bool | None = None) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """Metrics and predictions of one group (members + ensemble), cached; ``None`` if it has no runs."""
    runs = group_runs(out_dir, arch, scheme, seeds)
    if not runs:
        return None
    cache = Path(out_dir) / "eval" / f"{arch}_{scheme}"
    metrics_path, preds_path = cache / "metrics.json", cache / "predictions.csv"
    if _cache_valid(metrics_path, runs, split, str(data_dir)) and preds_path.is_file():
        return json.loads(metrics_path.read_text()), pd.read_csv(preds_path)
    metrics, predictions = evaluate_runs(runs, data_dir, split=split, device=device, progress=progress)
    metrics["code"] = code_fingerprint()
    save_predictions(predictions, preds_path)
    save_metrics(metrics, metrics_path)
    return json.loads(metrics_path.read_text()), predictions


def evaluate_sweep(out_dir: str | os.PathLike, data_dir: str | os.PathLike, *, archs: Sequence[str],
                   schemes: Sequence[str], seeds: Sequence[int], split: str = "test",
                   device: str = "auto", progress: bool | None = None) -> dict[tuple[str, str], dict]:
    """``{(arch, scheme): metrics document}`` for every group of the sweep that has runs."""
    results = {}
    for scheme in schemes:
        for arch in archs:
            got = evaluate_group(out_dir, data_dir, arch, scheme, seeds, split=split, device=device,
                                 progress=progress)
            if got is not None:
                results[(arch, scheme)] = got[0]
    if not results:
        raise KneelibError(f"{Path(out_dir) / 'runs'}: no trained runs found for this sweep")
    return results


def metrics_by_run(results: dict[tuple[str, str], dict], scheme: str) -> dict[str, tuple[tuple, dict]]:
    """``{run name: ((arch, scheme, seed), M)}`` of one scheme, the input of ``report.results_table``."""
    table = {}
    for (arch, sch), doc in results.items():
        if sch != scheme:
            continue
        for name, m in doc["models"].items():
            seed = int(name.rsplit("_s", 1)[1])
            table[name] = ((arch, sch, seed), m)
    return table


def seed_correct(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per image (``path``, rows) and seed's model (columns), 1 where it graded the image right (no ensemble)."""
    members = predictions[predictions["model"] != "ensemble"]
    right = (members["true"] == members["pred"]).astype(float)
    return right.groupby([members["path"], members["model"]]).mean().unstack("model")


def se_gains(out_dir: str | os.PathLike, data_dir: str | os.PathLike, *, archs: Sequence[str],
             schemes: Sequence[str], seeds: Sequence[int], split: str = "test", device: str = "auto",
             progress: bool | None = None) -> list[dict[str, Any]]:
    """What SE blocks add to each backbone of the sweep: per scheme and plain architecture whose ``se_``
    twin is in ``archs``, the seed-mean accuracies on the same images and their difference, with a 95%
    interval over seeds and images (``lo``/``hi``/``p``: :func:`~kneelib.evaluate.metrics.two_level_difference_ci`)
    and one over the images alone (``images_lo``/``images_hi``: the seeds' mean per image, paired bootstrap)."""
    from kneelib.evaluate.metrics import paired_difference_ci, two_level_difference_ci

    rows = []
    for scheme in schemes:
        for plain in (a for a in archs if not a.startswith("se_") and f"se_{a}" in archs):
            groups = [evaluate_group(out_dir, data_dir, a, scheme, seeds, split=split, device=device,
                                     progress=progress) for a in (plain, f"se_{plain}")]
            if any(g is None for g in groups):
                continue
            a, b = (seed_correct(g[1]) for g in groups)
            a, b = a.align(b, join="inner", axis=0)
            images = paired_difference_ci(a.mean(axis=1).to_numpy(), b.mean(axis=1).to_numpy())
            rows.append({"scheme": scheme, "arch": plain, "n": int(a.shape[0]),
                         "seeds": min(a.shape[1], b.shape[1]),
                         "plain_accuracy": float(a.to_numpy().mean()), "se_accuracy": float(b.to_numpy().mean()),
                         **two_level_difference_ci(a.to_numpy().T, b.to_numpy().T),
                         "images_lo": images["lo"], "images_hi": images["hi"]})
    return rows


@dataclass(frozen=True)
class SweepResults:
    """One sweep's results: its folder (``OUT`` with ``runs/``), its grid, and the split and device they are scored
    with. Each method evaluates what it needs once (cached under ``OUT/eval``): the notebooks' one handle on a
    sweep, instead of passing the same seven arguments to every function."""

    out_dir: str | os.PathLike
    data_dir: str | os.PathLike
    archs: Sequence[str]
    schemes: Sequence[str]
    seeds: Sequence[int]
    split: str = "test"
    device: str = "auto"
    progress: bool | None = False

    @cached_property
    def results(self) -> dict[tuple[str, str], dict]:
        """``{(arch, scheme): metrics document}`` of every group with runs (:func:`evaluate_sweep`)."""
        return evaluate_sweep(self.out_dir, self.data_dir, archs=self.archs, schemes=self.schemes, seeds=self.seeds,
                              split=self.split, device=self.device, progress=self.progress)

    def metrics_by_run(self, scheme: str) -> dict[str, tuple[tuple, dict]]:
        """One scheme's runs, the input of ``report.results_table`` (:func:`metrics_by_run`)."""
        return metrics_by_run(self.results, scheme)

    def group(self, arch: str, scheme: str) -> tuple[dict[str, Any], pd.DataFrame]:
        """Metrics and predictions of one (arch, scheme) group; KneelibError when it has no runs."""
        got = evaluate_group(self.out_dir, self.data_dir, arch, scheme, self.seeds, split=self.split,
                             device=self.device, progress=self.progress)
        if got is None:
            raise KneelibError(f"{Path(self.out_dir) / 'runs'}: no trained runs of {arch} ({scheme})")
        return got

    def se_gains(self) -> list[dict[str, Any]]:
        """What SE blocks add to each backbone of the grid (:func:`se_gains`)."""
        return se_gains(self.out_dir, self.data_dir, archs=self.archs, schemes=self.schemes, seeds=self.seeds,
                        split=self.split, device=self.device, progress=self.progress)

    def run_dirs(self, arch: str, scheme: str) -> list[Path]:
        """The run directories of one group that hold a best checkpoint (:func:`group_runs`)."""
        return group_runs(self.out_dir, arch, scheme, self.seeds)
