"""Figures for explanations and new radiographs: Grad-CAM examples, a graded bilateral radiograph.

Pure functions of arrays, prediction frames and :class:`kneelib.radiograph.bilateral.BilateralResult` objects
(imported from :mod:`kneelib.report`). The maps come from :mod:`kneelib.serve.explain`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from kneelib.errors import KneelibError
from kneelib.report.figures import (
    _class_index,
    _freeze,
    _label,
    _probability_bars,
    select_model,
)


def right_and_wrong(predictions: pd.DataFrame, class_names: Sequence[str], *, n_right: int = 3,
                    n_wrong: int = 3, model: str | None = None) -> pd.DataFrame:
    """Rows to explain: the ``n_right`` most confident correct and ``n_wrong`` most confident wrong
    predictions of one model (default the ensemble), with a ``verdict`` column."""
    frame = select_model(predictions, model)
    true, pred = _class_index(frame["true"], class_names), _class_index(frame["pred"], class_names)
    confidence = frame[[f"p_{c}" for c in class_names]].to_numpy(dtype=float).max(axis=1)
    frame = frame.assign(verdict=np.where(true == pred, "correct", "wrong"), confidence=confidence)
    picks = [frame[frame["verdict"] == v].sort_values("confidence", ascending=False, kind="stable").head(k)
             for v, k in (("correct", n_right), ("wrong", n_wrong))]
    chosen = pd.concat(picks)
    if chosen.empty:
        raise KneelibError("no predictions to explain")
    return chosen.reset_index(drop=True)


def heatmap_figure(images: Sequence[np.ndarray], maps: Sequence[np.ndarray], titles: Sequence[str], *,
                   title: str = "Grad-CAM: where the ensemble looked") -> Figure:
    """A column per example: the crop above its Grad-CAM overlay (JET, red = most evidence)."""
    from kneelib.serve.explain import overlay

    if not images or not (len(images) == len(maps) == len(titles)):
        raise KneelibError("heatmap_figure needs as many maps and titles as images (at least one)")
    n = len(images)
    fig = Figure(figsize=(1.9 * n + 0.3, 4.3), layout="constrained")
    axes = np.asarray(fig.subplots(2, n, squeeze=False))
    for k, (img, cam, name) in enumerate(zip(images, maps, titles)):
        axes[0, k].imshow(img, cmap="gray", vmin=0, vmax=255)
        axes[0, k].set_title(name, fontsize="x-small")
        axes[1, k].imshow(overlay(np.asarray(img, dtype=np.uint8), cam))
        for ax in axes[:, k]:
            ax.set_axis_off()
    fig.suptitle(title)
    return _freeze(fig)


def explained_examples(predictor: Any, predictions: pd.DataFrame, class_names: Sequence[str], **kwargs: Any
                       ) -> Figure:
    """:func:`heatmap_figure` for :func:`right_and_wrong` rows, maps from ``predictor.heatmap``."""
    from kneelib.data.io import read_image

    rows = right_and_wrong(predictions, class_names, **kwargs)
    images = [read_image(p) for p in rows["path"]]
    maps = [predictor.heatmap(img)[0] for img in images]
    titles = [f"{Path(p).name}\ntrue {_label(t)}, pred {_label(q)}\n({v})"
              for p, t, q, v in zip(rows["path"], rows["true"], rows["pred"], rows["verdict"])]
    return heatmap_figure(images, maps, titles)


def bilateral_figure(result: Any, class_names: Sequence[str]) -> Figure:
    """A graded bilateral radiograph: the overview with boxes, then per knee its crop, heat map (if
    computed) and probability bars."""
    from kneelib.radiograph.bilateral import overview_image
    from kneelib.serve.explain import overlay

    knees = list(result.knees)
    with_maps = all(k.heatmap is not None for k in knees)
    ncols = 3 if with_maps else 2
    fig = Figure(figsize=(9.0, 3.2 + 2.4 * len(knees)), layout="constrained")
    grid = fig.add_gridspec(1 + len(knees), ncols, height_ratios=[3.2] + [2.4] * len(knees))
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(overview_image(result))
    ax.set_axis_off()
    ax.set_title(Path(result.image).name, fontsize="small")
    labels = [_label(c) for c in class_names]
    for r, knee in enumerate(knees, start=1):
        ax = fig.add_subplot(grid[r, 0])
        ax.imshow(knee.crop, cmap="gray", vmin=0, vmax=255)
        ax.set_axis_off()
        ax.set_title(f"{'right' if knee.side == 'R' else 'left'} knee", fontsize="small")
        if with_maps:
            ax = fig.add_subplot(grid[r, 1])
            ax.imshow(overlay(knee.crop, knee.heatmap))
            ax.set_axis_off()
            ax.set_title("Grad-CAM", fontsize="small")
        p = np.array([knee.probabilities[c] for c in class_names])
        _probability_bars(fig.add_subplot(grid[r, ncols - 1]), p, None, labels)
    return _freeze(fig)
