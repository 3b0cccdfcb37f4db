"""The training-recipe ablation (``benchmarks/recipe_ablation.py``) as a table and learning curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kneelib.errors import KneelibError
from kneelib.train.checkpoint import read_json

__all__ = ["load_ablation", "ablation_table", "third_seed_table", "recipe_curves_figure"]


def load_ablation(path: str | Path) -> dict[str, Any]:
    """The ablation's JSON (``conditions`` and ``variants``); a KneelibError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise KneelibError(f"{path}: not found (run benchmarks/recipe_ablation.py)")
    data = read_json(path)
    if not isinstance(data.get("variants"), dict):
        raise KneelibError(f"{path}: not a recipe ablation (no 'variants')")
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
