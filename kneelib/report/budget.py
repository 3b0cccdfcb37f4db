"""Where a CPU's hours pay: the learning-curve table and figure (rows of ``benchmarks/budget_curves.py``).

A row is one training run: ``arch``, ``image_size``, ``epochs``, ``variant`` (of the scratch recipe), ``seed``,
``minutes``, ``val_prime_acc`` (per epoch), ``val_accuracy`` / ``val_qwk`` / ``val_balanced_accuracy`` (its
val'-chosen checkpoint on the official val split) and ``val_recall`` (per class).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kneelib.report.paper import display_name

Row = Mapping[str, Any]


def budget_table(rows: Iterable[Row]) -> pd.DataFrame:
    """One line per (architecture, size, epochs, variant): seeds, minutes, val' best and the official val
    split's accuracy, QWK, balanced accuracy and KL4 recall (5 classes), in percent (means over the seeds)."""
    records = []
    for r in rows:
        records.append({"model": display_name(r["arch"]), "px": r["image_size"], "epochs": r["epochs"],
                        "variant": r["variant"], "seed": r["seed"], "minutes": r["minutes"],
                        "val' best %": 100 * max(r["val_prime_acc"]), "val %": 100 * r["val_accuracy"],
                        "QWK": r["val_qwk"], "balanced %": 100 * r["val_balanced_accuracy"],
                        "KL4 recall %": 100 * (r.get("val_recall") or {}).get("4", float("nan"))})
    columns = ["model", "px", "epochs", "variant", "seed", "minutes", "val' best %", "val %", "QWK", "balanced %",
               "KL4 recall %"]
    df = pd.DataFrame(records, columns=columns)
    keys = ["model", "px", "epochs", "variant"]
    grouped = df.groupby(keys, sort=False).agg(
        seeds=("seed", "count"), **{c: (c, "mean") for c in columns[5:]}).reset_index()
    grouped = grouped.sort_values(keys[:3], kind="stable").set_index("model")
    grouped.attrs["formats"] = {"minutes": "{:.1f}", "val' best %": "{:.1f}", "val %": "{:.1f}", "QWK": "{:.2f}",
                                "balanced %": "{:.1f}", "KL4 recall %": "{:.1f}"}
    return grouped


def budget_curves_figure(rows: Iterable[Row], *, variant: str) -> Figure:
    """Left: best val' accuracy (what ``--hours`` reads) and, beside it, the official val accuracy of the kept
    checkpoint, against epochs (log scale), a line per architecture and image size, for the runs of one recipe
    ``variant`` (seeds' mean, each seed a dot). Right: official val accuracy of every variant measured at a setting
    that has more than one, a bar each."""
    df = pd.DataFrame([{"arch": r["arch"], "px": r["image_size"], "epochs": r["epochs"], "seed": r["seed"],
                        "variant": r["variant"], "acc": 100 * r["val_accuracy"],
                        "val_prime": 100 * max(r["val_prime_acc"])} for r in rows])
    fig = Figure(figsize=(14.0, 4.2), dpi=100, layout="constrained")
    selection, scored, bars = fig.subplots(1, 3, gridspec_kw={"width_ratios": [2, 2, 1.6]})
    of_variant = df[df["variant"] == variant] if not df.empty else df
    _draw_curves(selection, of_variant, "val_prime", "val' best accuracy % (selection; --hours reads it)")
    _draw_curves(scored, of_variant, "acc", "official val accuracy % (scored once)")
    fig.suptitle(f"Random weights, 5 classes, the scratch recipe with {variant}", fontsize=10)
    _draw_variants(bars, df)
    return fig


def _draw_curves(ax: Any, df: pd.DataFrame, column: str, ylabel: str) -> None:
    styles = {64: "o-", 96: "s--", 128: "^:"}
    colors = {"resnet18": "#ff7f0e", "densenet121": "#1f77b4"}
    for (arch, px), group in (df.groupby(["arch", "px"], sort=True) if not df.empty else []):
        mean = group.groupby("epochs")[column].mean()
        line, = ax.plot(mean.index, mean.values, styles.get(px, "o-"), color=colors.get(arch),
                        label=f"{display_name(arch)}, {px} px")
        ax.scatter(group["epochs"], group[column], s=10, color=line.get_color(), alpha=0.5)
    ax.set_xscale("log", base=2)
    if not df.empty:
        ticks = sorted(df["epochs"].unique())
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel("epochs (log scale)")
    ax.set_title(ylabel, fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _draw_variants(ax: Any, df: pd.DataFrame) -> None:
    """A bar per variant at every setting (architecture, size, epochs) where more than one variant was measured."""
    counts = df.groupby(["arch", "px", "epochs"])["variant"].nunique() if not df.empty else pd.Series(dtype=int)
    settings = [key for key, n in counts.items() if n > 1]
    if not settings:
        ax.set_axis_off()
        return
    labels, values, colors = [], [], []
    for i, (arch, px, epochs) in enumerate(settings):
        chosen = df[(df["arch"] == arch) & (df["px"] == px) & (df["epochs"] == epochs)]
        for variant, acc in chosen.groupby("variant", sort=False)["acc"].mean().items():
            labels.append(f"{display_name(arch)} {px}×{epochs}: {variant}")
            values.append(acc)
            colors.append(("#8ab6d6", "#f2b880")[i % 2])
    ax.barh(range(len(values)), values, color=colors)
    ax.set_yticks(range(len(values)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(max(0.0, min(values) - 5), max(values) + 2.5)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.1f}", va="center", fontsize=7)
    ax.set_xlabel("official val accuracy %")
    ax.set_title("Recipe variants, one change at a time", fontsize=9)


def seed_histories_figure(histories: Mapping[str, pd.DataFrame], *, title: str = "") -> Figure:
    """val' accuracy per epoch of every run of a sweep (keyed ``<arch>_<scheme>_s<seed>``, ``history.csv``'s
    columns): a panel per scale, a colour per architecture, a thin line per seed with its best epoch dotted."""
    parsed = {}
    for name, history in histories.items():
        rest, _, seed = name.rpartition("_s")
        arch, _, scheme = rest.rpartition("_")
        parsed.setdefault(scheme, {}).setdefault(arch, []).append((seed, history))
    schemes = sorted(parsed, key=lambda s: (s != "kl5", s))
    fig = Figure(figsize=(5.0 * max(1, len(schemes)), 3.8), dpi=100)
    axes = fig.subplots(1, max(1, len(schemes)), squeeze=False)[0]
    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
    for ax, scheme in zip(axes, schemes):
        for color, (arch, runs) in zip(colors, sorted(parsed[scheme].items())):
            for i, (_, history) in enumerate(sorted(runs, key=lambda run: run[0])):
                acc = 100 * history["val_acc"].astype(float)
                ax.plot(history["epoch"], acc, color=color, lw=1, alpha=0.7,
                        label=f"{display_name(arch)} ({len(runs)} seeds)" if i == 0 else None)
                best = int(acc.to_numpy().argmax())
                ax.plot(history["epoch"].iloc[best], acc.iloc[best], "o", color=color, ms=3)
        ax.set_title(f"{scheme}: val' accuracy per epoch (dot: the epoch kept)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("val' accuracy %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
