"""Figures of the paper (Figs. 5–7) and of training/SE exploration, as matplotlib ``Figure`` objects.

Import through :mod:`kneelib.report`. Figures are built with ``matplotlib.figure.Figure`` (no pyplot global
state, nothing left open); :func:`save_figure` writes a byte-deterministic PNG atomically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from kneelib.atomic import atomic_path
from kneelib.errors import KneelibError

Metrics = Mapping[str, Any]

_TRUE_COLOR, _OTHER_COLOR, _PRED_EDGE = "#2a9d8f", "#b8c4cc", "#e76f51"
#: metadata that would otherwise vary between saves (software version, creation dates)
_NO_VOLATILE_METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None,
                                                            "CreationDate": None}, "svg": {"Date": None}}


def _palette(n: int) -> list:
    """``n`` colour-blind-safe colours (seaborn's palette; seaborn is imported only when needed)."""
    import seaborn as sns

    return sns.color_palette("colorblind", n)


def _label(name: str) -> str:
    """Class name -> axis label: "0-1" -> "KL 0-1", "no OA" unchanged."""
    return f"KL {name}" if str(name)[:1].isdigit() else str(name)


def _freeze(fig: Figure) -> Figure:
    """Run the constrained layout to convergence, then fix it, so every later save gives the same bytes."""
    for _ in range(2):
        fig.draw_without_rendering()
    fig.set_layout_engine("none")
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Save ``fig`` atomically (PNG by default; format from the suffix) without volatile metadata."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or "png"
    if fmt not in _NO_VOLATILE_METADATA:
        raise KneelibError(f"{path}: unsupported figure format {fmt!r} (use .png, .pdf or .svg)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata=_NO_VOLATILE_METADATA[fmt],
                    facecolor="white")
    return path


# --------------------------------------------------------------------------- Fig. 5 / Fig. 6
def confusion_matrix_figure(metrics: Metrics, class_names: Sequence[str], *, normalize: bool = False,
                            title: str = "Confusion matrix") -> Figure:
    """Fig. 5: heatmap of ``metrics["confusion_matrix"]`` (rows = true grade) with counts and row-%.

    ``normalize=True`` colours by row fraction and prints the percentage first.
    """
    cm = np.asarray(metrics.get("confusion_matrix") if metrics else None, dtype=float)
    if cm.ndim != 2 or cm.shape != (len(class_names), len(class_names)):
        raise KneelibError(f"confusion matrix of shape {cm.shape} does not fit {len(class_names)} classes")
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    if normalize:
        annot = [[f"{100 * f:.1f}%\n({c:.0f})" for c, f in zip(cr, fr)] for cr, fr in zip(cm, frac)]
    else:
        annot = [[f"{c:.0f}\n({100 * f:.1f}%)" for c, f in zip(cr, fr)] for cr, fr in zip(cm, frac)]
    size = 1.1 * len(class_names) + 2.4
    fig = Figure(figsize=(size + 0.8, size), layout="constrained")
    ax = fig.subplots()
    labels = [_label(c) for c in class_names]
    import seaborn as sns  # imported here: it costs ~1 s, and most callers draw no heatmap

    sns.heatmap(frac if normalize else cm, annot=np.asarray(annot), fmt="", cmap="Blues", square=True,
                xticklabels=labels, yticklabels=labels, linewidths=0.5, linecolor="white", ax=ax,
                vmin=0, vmax=1 if normalize else None,
                cbar_kws={"label": "fraction of true grade" if normalize else "images", "shrink": 0.8})
    ax.set_xlabel("predicted grade")
    ax.set_ylabel("true grade")
    ax.tick_params(axis="y", rotation=0)
    n = int(cm.sum())
    acc = np.trace(cm) / n if n else math.nan
    ax.set_title(f"{title}\n(n = {n}, accuracy {100 * acc:.2f}%)")
    return _freeze(fig)


def roc_figure(metrics: Metrics, class_names: Sequence[str], *, title: str = "ROC curves (one vs rest)"
               ) -> Figure:
    """Fig. 6: one-vs-rest ROC curve per class from ``metrics["roc"]``, AUC in the legend, chance diagonal."""
    roc = (metrics or {}).get("roc") or {}
    missing = [c for c in class_names if c not in roc]
    if missing:
        raise KneelibError(f"metrics have no ROC curve for classes {missing}")
    fig = Figure(figsize=(5.6, 5.2), layout="constrained")
    ax = fig.subplots()
    colors = _palette(len(class_names))
    for color, name in zip(colors, class_names):
        curve = roc[name] or {}
        auc = curve.get("auc")
        text = "n/a: one class only" if auc is None else f"{float(auc):.3f}"
        ax.plot(curve.get("fpr") or [], curve.get("tpr") or [], color=color, lw=1.8,
                label=f"{_label(name)} (AUC = {text})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _freeze(fig)


# --------------------------------------------------------------------------- Fig. 7
def _prob_columns(predictions: pd.DataFrame, class_names: Sequence[str]) -> list[str]:
    cols = [f"p_{c}" for c in class_names]
    missing = [c for c in cols if c not in predictions.columns]
    if missing:
        raise KneelibError(f"predictions have no probability columns {missing}")
    return cols


def _class_index(values: pd.Series, class_names: Sequence[str]) -> np.ndarray:
    """True/pred column as class indices (accepts indices or class names)."""
    names = [str(c) for c in class_names]
    if pd.api.types.is_numeric_dtype(values):
        idx = values.to_numpy(dtype=int)
        if idx.size and (idx.min() < 0 or idx.max() >= len(names)):
            raise KneelibError(f"predictions hold class indices outside 0..{len(names) - 1}")
        return idx
    try:
        return np.array([names.index(str(v)) for v in values], dtype=int)
    except ValueError as exc:
        raise KneelibError(f"predictions hold labels outside the classes {names}") from exc


def choose_examples(predictions: pd.DataFrame, class_names: Sequence[str], n: int = 6, seed: int = 0
                    ) -> list[int]:
    """Deterministic row positions for Fig. 7: round-robin over true classes, random within each class."""
    if len(predictions) == 0:
        raise KneelibError("predictions are empty: no examples to show")
    predictions = select_model(predictions)
    true = _class_index(predictions["true"], class_names)
    rng = np.random.default_rng(seed)
    pools = {c: list(rng.permutation(np.flatnonzero(true == c))) for c in range(len(class_names))}
    chosen: list[int] = []
    while len(chosen) < min(n, len(predictions)):
        for c in range(len(class_names)):
            if pools[c] and len(chosen) < n:
                chosen.append(int(pools[c].pop(0)))
    return sorted(chosen, key=lambda i: (true[i], i))


def select_model(predictions: pd.DataFrame, model: str | None = None) -> pd.DataFrame:
    """The rows of one model from a long predictions frame (``model`` column; default "ensemble" if present,
    else the only model). A frame without a ``model`` column is returned unchanged. Index reset."""
    if "model" not in predictions.columns:
        return predictions.reset_index(drop=True)
    models = list(dict.fromkeys(predictions["model"].astype(str)))
    if model is None:
        if "ensemble" in models:
            model = "ensemble"
        elif len(models) == 1:
            model = models[0]
        else:
            raise KneelibError(f"predictions hold several models {models}: choose one with model=")
    if model not in models:
        raise KneelibError(f"predictions have no model {model!r} (models: {models})")
    return predictions[predictions["model"].astype(str) == model].reset_index(drop=True)


def probability_figure(predictions: pd.DataFrame, class_names: Sequence[str], *,
                       images: Sequence[np.ndarray] | Mapping[str, np.ndarray] | None = None, n: int = 6,
                       seed: int = 0, indices: Sequence[int] | None = None, model: str | None = None,
                       title: str = "Predicted grade probabilities") -> Figure:
    """Fig. 7: a row per example — the crop (if ``images``) and a bar chart of its grade probabilities.

    ``predictions``: the evaluate DataFrame (path, true, pred, ``p_<class>``; with a ``model`` column the
    rows of ``model`` are used, see :func:`select_model`). ``images``: a mapping path -> array, or one
    array per (selected) prediction row. Examples come from :func:`choose_examples` (deterministic in
    ``seed``) unless ``indices`` (row positions) are given. The true grade's bar is highlighted and the
    predicted grade's bar outlined.
    """
    predictions = select_model(predictions, model)
    cols = _prob_columns(predictions, class_names)
    rows = list(indices) if indices is not None else choose_examples(predictions, class_names, n, seed)
    if not rows:
        raise KneelibError("no examples to show")
    true = _class_index(predictions["true"], class_names)
    probs = predictions[cols].to_numpy(dtype=float)
    paths = predictions["path"].astype(str).tolist() if "path" in predictions else [""] * len(predictions)
    if images is not None and not isinstance(images, Mapping) and len(images) != len(predictions):
        raise KneelibError(f"{len(images)} images for {len(predictions)} predictions: give one per row")
    ncols = 1 if images is None else 2
    fig = Figure(figsize=(3.0 * ncols + 1.4, 1.9 * len(rows) + 0.5), layout="constrained")
    axes = np.asarray(fig.subplots(len(rows), ncols, squeeze=False,
                                   width_ratios=[1, 2.2] if ncols == 2 else None))
    labels = [_label(c) for c in class_names]
    for r, i in enumerate(rows):
        p, t = probs[i], int(true[i])
        name = Path(paths[i]).name
        if images is not None:
            img = images.get(paths[i]) if isinstance(images, Mapping) else images[i]
            ax_img = axes[r, 0]
            if img is not None:
                img = np.asarray(img)
                lim = {"vmin": 0, "vmax": 255} if img.dtype == np.uint8 else {}
                ax_img.imshow(img, cmap="gray" if img.ndim == 2 else None, **lim)
            ax_img.set_axis_off()
            ax_img.set_title(name, fontsize="small")
        head = f"{name}: " if images is None and name else ""
        _probability_bars(axes[r, -1], p, t, labels, head=head)
    axes[-1, -1].set_xlabel("grade (green: true grade; orange outline: prediction)")
    fig.suptitle(title)
    return _freeze(fig)


def _probability_bars(ax: Axes, p: np.ndarray, true: int | None, labels: Sequence[str], *,
                      head: str = "") -> None:
    """Bars of one image's grade probabilities: the true grade (if known) filled, the prediction outlined."""
    pred = int(np.argmax(p))
    colors = [_TRUE_COLOR if k == true else _OTHER_COLOR for k in range(len(labels))]
    bars = ax.bar(range(len(labels)), p, color=colors)
    bars[pred].set_edgecolor(_PRED_EDGE)
    bars[pred].set_linewidth(2)
    for k, v in enumerate(p):
        ax.text(k, v + 0.03, f"{v:.2f}", ha="center", va="bottom", fontsize="x-small")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("probability")
    if true is None:
        ax.set_title(f"{head}predicted {labels[pred]}", fontsize="small")
    else:
        verdict = "correct" if pred == true else "wrong"
        ax.set_title(f"{head}true {labels[true]}, predicted {labels[pred]} ({verdict})", fontsize="small")
    ax.spines[["top", "right"]].set_visible(False)


def prediction_figure(image: np.ndarray, probabilities: Sequence[float], class_names: Sequence[str], *,
                      title: str = "", true: str | None = None) -> Figure:
    """One graded image: the crop beside its grade probabilities (``true``: the true class name, if known)."""
    fig = Figure(figsize=(6.5, 2.6), layout="constrained")
    ax_img, ax = fig.subplots(1, 2, width_ratios=[1, 2.2])
    ax_img.imshow(np.asarray(image), cmap="gray", vmin=0, vmax=255)
    ax_img.set_axis_off()
    labels = [_label(c) for c in class_names]
    t = list(class_names).index(true) if true is not None else None
    _probability_bars(ax, np.asarray(probabilities, dtype=float), t, labels)
    fig.suptitle(title)
    return _freeze(fig)


# --------------------------------------------------------------------------- training and SE
def learning_curves_figure(history: pd.DataFrame, *, title: str = "Learning curves") -> Figure:
    """Loss and accuracy per epoch, train vs val, with the best-val-accuracy epoch marked."""
    needed = ["epoch", "train_loss", "val_loss", "train_acc", "val_acc"]
    missing = [c for c in needed if c not in history.columns]
    if missing:
        raise KneelibError(f"history has no columns {missing}")
    if len(history) == 0:
        raise KneelibError("history is empty: no epochs to plot")
    epochs = history["epoch"].to_numpy()
    val_acc = history["val_acc"].to_numpy(dtype=float)
    if np.isnan(val_acc).all():
        raise KneelibError("history has no validation accuracy to mark the best epoch")
    best = int(np.nanargmax(val_acc))
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, kind in ((ax_loss, "loss"), (ax_acc, "acc")):
        ax.plot(epochs, history[f"train_{kind}"], marker=".", label="train")
        ax.plot(epochs, history[f"val_{kind}"], marker=".", label="val")
        ax.axvline(epochs[best], color="grey", ls=":", lw=1.2, label=f"best epoch ({epochs[best]})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss" if kind == "loss" else "accuracy")
        ax.grid(alpha=0.3)
    best_acc = float(history["val_acc"].iloc[best])
    ax_acc.plot([epochs[best]], [best_acc], "o", color="black", ms=6)
    ax_acc.annotate(f"best val acc {best_acc:.3f}", (epochs[best], best_acc), textcoords="offset points",
                    xytext=(0, 10), ha="center", fontsize="small",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85})
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    ax_acc.legend(loc="lower right", fontsize="small")
    ax_loss.legend(loc="upper right", fontsize="small")
    fig.suptitle(title)
    return _freeze(fig)


def se_excitation_figure(excitations: Mapping[str, np.ndarray], *, image_labels: Sequence[str] | None = None,
                         kind: str = "line", title: str = "SE excitation weights") -> Figure:
    """The excitation weights s_c of selected SE blocks: one panel per block (images × channels each).

    ``kind="line"``: a line per image over channel index; ``kind="heatmap"``: images × channels map.
    """
    if not excitations:
        raise KneelibError("no SE excitations to plot")
    if kind not in ("line", "heatmap"):
        raise KneelibError(f"unknown kind {kind!r} (use 'line' or 'heatmap')")
    arrays = {name: np.atleast_2d(np.asarray(a, dtype=float)) for name, a in excitations.items()}
    n_img = max(a.shape[0] for a in arrays.values())
    labels = list(image_labels) if image_labels is not None else [f"image {k + 1}" for k in range(n_img)]
    ncols = min(2, len(arrays))
    nrows = math.ceil(len(arrays) / ncols)
    fig = Figure(figsize=(6.0 * ncols, 2.8 * nrows + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    colors = _palette(n_img)
    for ax, (name, arr) in zip(axes, arrays.items()):
        if kind == "line":
            for k, row in enumerate(arr):
                ax.plot(np.arange(row.size), row, lw=0.9, color=colors[k], alpha=0.85,
                        label=labels[k] if k < len(labels) else None)
            ax.set_ylim(0, 1)
            ax.set_ylabel("excitation")
        else:
            im = ax.imshow(arr, aspect="auto", cmap="viridis", vmin=0, vmax=1)
            ax.set_yticks(range(arr.shape[0]), labels[: arr.shape[0]], fontsize="small")
            fig.colorbar(im, ax=ax, label="excitation")
        ax.set_xlabel("channel index")
        ax.set_title(f"{name} ({arr.shape[1]} channels)", fontsize="medium")
    for ax in axes[len(arrays):]:
        ax.set_axis_off()
    if kind == "line":
        axes[0].legend(fontsize="x-small", loc="lower right")
    fig.suptitle(title)
    return _freeze(fig)


# --------------------------------------------------------------------------- calibration (beyond the paper)
def reliability_figure(predictions: pd.DataFrame, class_names: Sequence[str], *, model: str | None = None,
                       bins: int = 10, title: str = "Reliability diagram") -> Figure:
    """Accuracy against confidence per confidence bin (the diagonal is perfect calibration), the ECE in
    the legend and the share of images per bin below."""
    from kneelib.evaluate.calibration import expected_calibration_error, reliability

    rows = select_model(predictions, model)
    probs = rows[_prob_columns(rows, class_names)].to_numpy(dtype=float)
    y_true = _class_index(rows["true"], class_names)
    data = reliability(y_true, probs, bins=bins)
    ece = expected_calibration_error(y_true, probs, bins=bins)
    fig = Figure(figsize=(4.6, 5.2))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    edges = np.linspace(0, 1, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    acc = np.nan_to_num(np.array(data["accuracy"], dtype=float))
    top.bar(centres, acc, width=1 / bins, edgecolor="black", alpha=0.8, label=f"accuracy (ECE {ece:.3f})")
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(title)
    counts = np.array(data["count"], dtype=float)
    bottom.bar(centres, counts / max(counts.sum(), 1), width=1 / bins, color="grey", edgecolor="black")
    bottom.set_xlabel("confidence (top-class probability)")
    bottom.set_ylabel("share")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    return _freeze(fig)
