"""Evaluate trained runs (and their ensemble) on a data split: metrics documents, predictions, summary."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from kneelib import atomic
from kneelib.data.layout import discover, select_split, splits_present
from kneelib.errors import KneelibError
from kneelib.evaluate.calibration import calibration_record, save_calibration
from kneelib.evaluate.ensemble import ensemble_probabilities, softmax
from kneelib.evaluate.inference import ENSEMBLE, as_device, forward, load_runs
from kneelib.evaluate.metrics import compute_metrics

#: ``--split all`` evaluates every discovered sample (a pool or manifest without splits).
ALL_SPLITS = "all"


def _split_samples(data_dir: str | os.PathLike, split: str) -> list:
    samples = discover(data_dir)
    if split == ALL_SPLITS:
        chosen = list(samples)
    else:
        present = [s for s in splits_present(samples) if s]
        if split not in present:
            listed = ", ".join(present) if present else "none (a pool without splits; use --split all)"
            raise KneelibError(f"{data_dir}: no '{split}' split (splits present: {listed})")
        chosen = select_split(samples, split)
    if not chosen:
        raise KneelibError(f"{data_dir}: no images in split '{split}'")
    return chosen


def _prediction_frame(
    model: str, samples: Sequence[Any], y_true: np.ndarray, probs: np.ndarray, names: Sequence[str]
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "model": model,
            "path": [str(s.path) for s in samples],
            "grade": [int(s.grade) for s in samples],
            "true": [names[i] for i in y_true],
            "pred": [names[i] for i in probs.argmax(axis=1)],
        }
    )
    for k, name in enumerate(names):
        frame[f"p_{name}"] = probs[:, k]
    return frame


def evaluate_runs(
    run_dirs: Sequence[str | os.PathLike],
    data_dir: str | os.PathLike,
    *,
    split: str = "test",
    device: str | torch.device = "auto",
    batch_size: int = 64,
    progress: bool | None = None,
    n_boot: int = 1000,
    tta: bool = False,
    calibrated: bool = True,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Evaluate each run and (with several) their ensemble on ``split`` of ``data_dir``.

    Returns the metrics document ``{"models": {name: M}, "ensemble": M | None, "split", "data",
    "scheme", "class_names", "runs": {name: path}}`` and a long per-image predictions DataFrame with
    columns ``model, path, grade, true, pred, p_<class>...``: one block of rows per run and, with
    several runs, one for ``model == "ensemble"`` (``grade`` is the KL grade, ``true``/``pred`` class
    names). ``tta``: horizontal-flip test-time augmentation; ``calibrated``: apply each run's fitted
    temperature where it has one (``temperatures`` in the document).
    """
    runs = load_runs(run_dirs, device=as_device(device))
    scheme = runs[0].scheme
    samples = _split_samples(data_dir, split)
    y_true = np.array([scheme.encode(s.grade) for s in samples], dtype=np.int64)
    logits = forward(runs, [s.path for s in samples], batch_size=batch_size, progress=progress,
                     desc=f"evaluate {split}", tta=tta, calibrated=calibrated)
    names = list(scheme.class_names)
    models, frames = {}, []
    for run, z in zip(runs, logits):
        probs = softmax(z)
        models[run.name] = compute_metrics(y_true, probs, scheme, n_boot=n_boot)
        frames.append(_prediction_frame(run.name, samples, y_true, probs, names))
    ensemble = None
    if len(runs) > 1:
        probs = ensemble_probabilities(logits)
        ensemble = compute_metrics(y_true, probs, scheme, n_boot=n_boot)
        frames.append(_prediction_frame(ENSEMBLE, samples, y_true, probs, names))
    metrics = {
        "models": models,
        "ensemble": ensemble,
        "split": split,
        "data": str(data_dir),
        "scheme": scheme.name,
        "class_names": names,
        "tta": tta,
        "temperatures": {run.name: run.temperature if calibrated else 1.0 for run in runs},
        "runs": {run.name: str(run.path) for run in runs},
    }
    return metrics, pd.concat(frames, ignore_index=True)


def calibrate_runs(run_dirs: Sequence[str | os.PathLike], data_dir: str | os.PathLike, *, split: str = "val",
                   device: str | torch.device = "auto", batch_size: int = 64, progress: bool | None = None,
                   tta: bool = False) -> dict[str, dict[str, Any]]:
    """Fit each run's temperature on ``split`` (its validation split) and write ``RUN_DIR/calibration.json``."""
    runs = load_runs(run_dirs, device=as_device(device))
    samples = _split_samples(data_dir, split)
    logits = forward(runs, [s.path for s in samples], batch_size=batch_size, progress=progress,
                     desc=f"calibrate on {split}", tta=tta)
    y_true = np.array([runs[0].scheme.encode(s.grade) for s in samples], dtype=np.int64)
    records = {}
    for run, z in zip(runs, logits):
        records[run.name] = calibration_record(z, y_true, split=split, data=str(data_dir))
        save_calibration(run.path, records[run.name])
    return records


def featured_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics a document features: its ensemble's, or with one run (no ensemble) that run's."""
    return metrics["ensemble"] or next(iter(metrics["models"].values()))


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def save_metrics(metrics: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the metrics document as JSON atomically (NaN → null)."""
    return atomic.write_text(path, json.dumps(_json_safe(metrics), indent=2, allow_nan=False) + "\n")


def save_predictions(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the per-image predictions CSV atomically."""
    with atomic.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)


def format_summary(metrics: dict[str, Any]) -> str:
    """A compact text table: n, accuracy (95% CI), QWK, weighted F1 per model and the ensemble."""
    rows = list(metrics["models"].items())
    if metrics.get("ensemble"):
        rows.append((ENSEMBLE, metrics["ensemble"]))

    def f(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    width = max(len("model"), *(len(n) for n, _ in rows))
    lines = [f"{'model':<{width}}  {'n':>6}  {'accuracy':>8}  {'95% CI':>15}  {'qwk':>7}  {'f1_w':>6}  {'ece':>6}"]
    for name, m in rows:
        ci = "[{}, {}]".format(*(f(v, ".3f") for v in m["ci"]["accuracy"]))
        lines.append(f"{name:<{width}}  {m['n']:>6}  {f(m['accuracy'], '.4f'):>8}  {ci:>15}  "
                     f"{f(m['qwk'], '.4f'):>7}  {f(m['f1_weighted'], '.3f'):>6}  {f(m.get('ece'), '.3f'):>6}")
    return "\n".join(lines)
