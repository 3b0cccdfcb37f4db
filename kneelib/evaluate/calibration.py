"""Calibration: expected calibration error, and temperature scaling fitted on the validation split.

A run's temperature ``T`` divides its logits before the softmax; it is fitted on the run's own val split
(the split that chose its checkpoint, never the test split) by minimising the negative log-likelihood,
and stored beside the run as ``calibration.json``. :func:`kneelib.evaluate.inference.load_run` reads it, and
evaluation and prediction apply it. ``T`` > 0 never changes a single run's predicted grade, only how sure
the probabilities are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from kneelib.atomic import write_text
from kneelib.evaluate.ensemble import softmax

CALIBRATION_FILE = "calibration.json"
ECE_BINS = 15


def reliability(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per equal-width bin of top-class probability: mean confidence, accuracy and count (the data of a
    reliability diagram; empty bins hold NaN)."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1) if probs.size else np.zeros(0)
    correct = probs.argmax(axis=1) == y_true if probs.size else np.zeros(0, dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out: dict[str, list[float]] = {"confidence": [], "accuracy": [], "count": []}
    for b in range(bins):
        mask = which == b
        out["count"].append(int(mask.sum()))
        out["confidence"].append(float(confidence[mask].mean()) if mask.any() else float("nan"))
        out["accuracy"].append(float(correct[mask].mean()) if mask.any() else float("nan"))
    return out


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: the sample-weighted mean |accuracy − confidence| over :func:`reliability`'s bins."""
    table = reliability(y_true, probs, bins)
    total = sum(table["count"])
    if total == 0:
        return float("nan")
    return float(sum(n / total * abs(acc - conf) for n, acc, conf
                     in zip(table["count"], table["accuracy"], table["confidence"]) if n))


def _nll(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    p = softmax(logits / temperature)
    return float(-np.log(np.clip(p[np.arange(len(y_true)), y_true], 1e-12, None)).mean())


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature minimising the NLL of ``softmax(logits / T)``: golden-section search on log T in
    [1/20, 20] (the NLL is unimodal in T), deterministic and dependency-free."""
    logits = np.asarray(logits, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _nll(logits, y_true, np.exp(a)), _nll(logits, y_true, np.exp(b))
    for _ in range(80):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _nll(logits, y_true, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _nll(logits, y_true, np.exp(b))
    return float(np.exp((lo + hi) / 2.0))


def calibration_record(logits: np.ndarray, y_true: np.ndarray, *, split: str, data: str) -> dict[str, Any]:
    """Fit ``T`` and describe the fit: NLL and ECE before and after, on the split it was fitted on."""
    t = fit_temperature(logits, y_true)
    before, after = softmax(logits), softmax(np.asarray(logits, dtype=np.float64) / t)
    return {"temperature": t, "fitted_on": split, "data": data, "n": int(len(y_true)),
            "nll_before": _nll(logits, y_true, 1.0), "nll_after": _nll(logits, y_true, t),
            "ece_before": expected_calibration_error(y_true, before),
            "ece_after": expected_calibration_error(y_true, after)}


def save_calibration(run_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    return write_text(Path(run_dir) / CALIBRATION_FILE, json.dumps(record, indent=2) + "\n")


def load_temperature(run_dir: str | os.PathLike) -> float:
    """The run's fitted temperature, 1.0 when it has none."""
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return 1.0
    return float(json.loads(path.read_text())["temperature"])
