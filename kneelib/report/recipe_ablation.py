"""The training-recipe ablation's results file: its format, a writer and a reader, and the table and learning
curves drawn from it (``benchmarks/results/recipe_*_cpu.json``, written by ``benchmarks/recipe_ablation.py``
through :func:`conditions_record`, :func:`variant_record` and :func:`save_ablation`).

The file is one JSON object:

* ``conditions``: what every variant shares: ``data``, ``arch``, ``scheme``, ``weights``, ``image_size``,
  ``epochs``, ``batch_size``, ``seeds``, ``device`` (in words), ``val_prime_majority`` (the majority class's
  share of val′, the selection split) and ``counts`` (images of train′, val′ and the held-out split);
* ``variants``: name → :data:`VARIANT_KEYS`: the ``recipe`` and the TrainConfig fields it ``changes``,
  ``minutes`` of training, per seed ``epoch1_val_acc``, ``epoch1_train_loss``, ``left_prior_epoch1`` (val′
  accuracy above the majority + 1 point after epoch 1) and ``best_val_acc``; per run ``heldout_accuracy`` and
  ``heldout_qwk`` on the held-out split; the seeds' ``ensemble`` (accuracy, qwk, mae) with its bootstrap
  ``ensemble_ci``; ``history``: ``s<seed>`` → the run's ``history.csv`` as columns (:data:`HISTORY_COLUMNS`);
* ``third_seed`` (optional): a check made after the choice: ``what`` (in words) and, per recipe,
  ``seed84_epoch1_val_acc``, ``seed84_best_val_acc``, ``heldout_accuracy`` of the three runs and ``ensemble3``
  (accuracy, qwk, mae, ``ci``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kneelib.errors import KneelibError
from kneelib.evaluate.split_evaluation import featured_metrics
from kneelib.train.checkpoint import read_json

__all__ = ["HISTORY_COLUMNS", "VARIANT_KEYS", "ablation_table", "conditions_record", "load_ablation",
           "recipe_curves_figure", "save_ablation", "third_seed_table", "variant_record"]

#: The learning-curve columns a variant keeps per seed (from ``history.csv``).
HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc")
#: The fields of one variant's record.
VARIANT_KEYS = ("recipe", "changes", "minutes", "epoch1_val_acc", "epoch1_train_loss", "left_prior_epoch1",
                "best_val_acc", "heldout_accuracy", "heldout_qwk", "ensemble", "ensemble_ci", "history")


def conditions_record(*, arch: str, scheme: str, image_size: int, epochs: int, seeds: Sequence[int], device: str,
                      val_prime_majority: float, counts: Mapping[str, int], batch_size: int = 32) -> dict[str, Any]:
    """The ``conditions`` every variant of one ablation shares (random weights, the held-out protocol)."""
    return {
        "data": "kneeKL224 (Chen 2018), official train split re-split 7:1 by patient (train'/val'); "
                "official val split held out", "arch": arch, "scheme": scheme, "weights": "none",
        "image_size": image_size, "epochs": epochs, "batch_size": batch_size, "seeds": list(seeds),
        "device": device, "val_prime_majority": val_prime_majority, "counts": dict(counts),
    }


def variant_record(recipe: str, changes: Mapping[str, Any], *, seeds: Sequence[int],
                   histories: Sequence[Sequence[Mapping[str, str]]], metrics: Mapping[str, Any],
                   majority: float, minutes: float | None) -> dict[str, Any]:
    """One variant's record from its runs' ``history.csv`` rows (one list per seed, in ``seeds`` order) and the
    metrics document of their evaluation on the held-out split (``kneelib.evaluate.evaluate_runs``)."""
    ensemble = featured_metrics(metrics)  # one seed: the run itself
    return {
        "recipe": recipe, "changes": dict(changes), "minutes": minutes,
        "epoch1_val_acc": [float(h[0]["val_acc"]) for h in histories],
        "epoch1_train_loss": [float(h[0]["train_loss"]) for h in histories],
        "left_prior_epoch1": [float(h[0]["val_acc"]) > majority + 0.01 for h in histories],
        "best_val_acc": [max(float(row["val_acc"]) for row in h) for h in histories],
        "heldout_accuracy": {k: m["accuracy"] for k, m in metrics["models"].items()},
        "heldout_qwk": {k: m["qwk"] for k, m in metrics["models"].items()},
        "ensemble": {k: ensemble[k] for k in ("accuracy", "qwk", "mae")},
        "ensemble_ci": ensemble.get("ci"),
        "history": {f"s{seed}": {k: [float(r[k]) for r in h] for k in HISTORY_COLUMNS}
                    for seed, h in zip(seeds, histories)},
    }


def save_ablation(results: Mapping[str, Any], path: str | Path) -> None:
    """Write the results file (indented JSON, NaN as null)."""
    Path(path).write_text(json.dumps(results, indent=1, default=lambda o: None if isinstance(o, float)
                                     and math.isnan(o) else o) + "\n")


def load_ablation(path: str | Path) -> dict[str, Any]:
    """The results file, checked against the format above; a KneelibError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise KneelibError(f"{path}: not found (run benchmarks/recipe_ablation.py)")
    data = read_json(path)
    if not isinstance(data.get("variants"), dict):
        raise KneelibError(f"{path}: not a recipe ablation (no 'variants')")
    for name, record in data["variants"].items():
        missing = [k for k in VARIANT_KEYS if not isinstance(record, dict) or k not in record]
        if missing:
            raise KneelibError(f"{path}: variant {name!r} lacks {', '.join(missing)}")
    return data


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def ablation_table(results: Mapping[str, Any], *, baseline: str = "paper") -> pd.DataFrame:
    """One row per variant: epoch-1 accuracy on val′ (the selection split) and whether every seed left the
    prior, held-out accuracy per seed, the seeds' ensemble with its 95% CI, QWK and MAE, and the ensemble's
    difference to ``baseline`` in accuracy points."""
    variants = results["variants"]
    base = variants.get(baseline, {}).get("ensemble", {}).get("accuracy")
    rows = []
    for name, v in variants.items():
        ens, ci = v["ensemble"], (v.get("ensemble_ci") or {}).get("accuracy") or [None, None]
        rows.append({
            "variant": name,
            "epoch-1 val′ acc %": " / ".join(_pct(a) for a in v["epoch1_val_acc"]),
            "left the prior in epoch 1": "all seeds" if all(v["left_prior_epoch1"]) else
            f"{sum(v['left_prior_epoch1'])} of {len(v['left_prior_epoch1'])}",
            "held-out acc % per seed": " / ".join(_pct(a) for a in v["heldout_accuracy"].values()),
            "ensemble acc % (95% CI)": f"{_pct(ens['accuracy'])} ({_pct(ci[0])}–{_pct(ci[1])})",
            f"vs {baseline} (points)": None if base is None else round(100 * (ens["accuracy"] - base), 1),
            "ensemble QWK": round(ens["qwk"], 3),
            "ensemble MAE": round(ens["mae"], 3),
        })
    table = pd.DataFrame(rows).set_index("variant")
    table.attrs["formats"] = {f"vs {baseline} (points)": "+.1f", "ensemble QWK": ".2f", "ensemble MAE": ".2f"}
    return table


def third_seed_table(results: Mapping[str, Any]) -> pd.DataFrame | None:
    """The check made after the choice (``third_seed`` in the results): each recipe's third seed and its
    3-seed ensemble on the held-out split; None when the results have no such check."""
    check = results.get("third_seed")
    if not check:
        return None
    rows = []
    for recipe, v in check.items():
        if not isinstance(v, Mapping):
            continue
        ens, single = v["ensemble3"], list(v["heldout_accuracy"].values())
        rows.append({"recipe": recipe, "seed-84 epoch-1 val′ acc %": _pct(v["seed84_epoch1_val_acc"]),
                     "held-out acc % s21 / s42 / s84": " / ".join(_pct(a) for a in single),
                     "mean of the 3 %": _pct(sum(single) / len(single)),
                     "3-seed ensemble acc % (95% CI)": f"{_pct(ens['accuracy'])} ({_pct(ens['ci'][0])}–{_pct(ens['ci'][1])})",
                     "ensemble QWK": round(ens["qwk"], 2), "ensemble MAE": round(ens["mae"], 2)})
    table = pd.DataFrame(rows).set_index("recipe")
    table.attrs["formats"] = {"ensemble QWK": ".2f", "ensemble MAE": ".2f"}
    return table


def recipe_curves_figure(results: Mapping[str, Any], variants: Sequence[str] | None = None, *,
                         title: str = "Learning curves from random weights") -> Figure:
    """Validation (val′) accuracy and training loss per epoch for each variant: the mean over seeds (line)
    and each seed (faint); the majority class of val′ as a dashed line."""
    chosen = [n for n in (variants or list(results["variants"])) if results["variants"][n].get("history")]
    if not chosen:
        raise KneelibError("no variant in the ablation results has learning curves ('history')")
    fig = Figure(figsize=(10, 3.8))
    ax_acc, ax_loss = fig.subplots(1, 2)
    colours = [f"C{i}" for i in range(len(chosen))]
    for colour, name in zip(colours, chosen):
        seeds = results["variants"][name]["history"]
        for key, ax in (("val_acc", ax_acc), ("train_loss", ax_loss)):
            curves = [np.asarray(h[key]) for h in seeds.values()]
            epochs = np.asarray(next(iter(seeds.values()))["epoch"])
            for c in curves:
                ax.plot(epochs, 100 * c if key == "val_acc" else c, color=colour, alpha=0.25, lw=1)
            mean = np.mean(curves, axis=0)
            ax.plot(epochs, 100 * mean if key == "val_acc" else mean, color=colour, lw=2, marker="o", ms=3,
                    label=name)
    majority = results.get("conditions", {}).get("val_prime_majority")
    if majority:
        ax_acc.axhline(100 * majority, color="grey", ls="--", lw=1, label="majority class (KL0)")
    ax_acc.set(xlabel="epoch", ylabel="val′ accuracy (%)", title="validation accuracy")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss (with label smoothing where used)")
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
