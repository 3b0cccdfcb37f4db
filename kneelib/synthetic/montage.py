"""Figures of example knee crops per KL grade: synthetic beside real, and the paper's Fig. 1.

Both figures are grids with one row per KL grade (0-4); :func:`synthetic_vs_real_montage` shows
synthetic examples first and real ones (when a real folder is given) after them,
:func:`grade_examples` the crops of one data set. The figures are built without pyplot (safe under
the Agg backend, in scripts, tests and notebooks) and saved with ``fig.savefig(out, dpi=100)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from kneelib.atomic import atomic_path
from kneelib.data.io import read_image
from kneelib.data.layout import MANIFEST_NAME, discover
from kneelib.errors import KneelibError

GRADES = range(5)


def pick_examples(data_dir: str | os.PathLike, per_grade: int = 4, *, seed: int = 0) -> dict[int, list[Path]]:
    """Up to ``per_grade`` random image paths per KL grade of a data set (any layout).

    Images a synthetic ``manifest.csv`` marks as blurred are skipped; the choice depends only on
    ``seed`` and the folder's contents.
    """
    if per_grade < 1:
        raise KneelibError(f"per_grade must be at least 1, got {per_grade}")
    samples = discover(data_dir)
    skip = _blurred(Path(data_dir))
    rng = np.random.default_rng(seed)
    chosen = {}
    for grade in GRADES:
        paths = [s.path for s in samples if s.grade == grade and s.path.resolve() not in skip]
        idx = rng.permutation(len(paths))[:per_grade]
        chosen[grade] = [paths[i] for i in sorted(idx)]
    return chosen


def _blurred(folder: Path) -> set[Path]:
    manifest = folder / MANIFEST_NAME
    if not folder.is_dir() or not manifest.is_file():
        return set()
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    if "blurred" not in table.columns or "path" not in table.columns:
        return set()
    return {(folder / p).resolve() for p, b in zip(table["path"], table["blurred"], strict=True) if b == "1"}


def _grid(sources: list[tuple[str, dict[int, list[Path]]]], per_grade: int, title: str) -> Figure:
    """One row per grade; ``per_grade`` columns per source, each source's name over its columns."""
    ncols = per_grade * len(sources)
    fig = Figure(figsize=(1.5 * ncols + 0.6, 1.55 * len(GRADES) + 0.7), layout="constrained")
    axes = fig.subplots(len(GRADES), ncols, squeeze=False)
    for row, grade in enumerate(GRADES):
        for s, (name, examples) in enumerate(sources):
            paths = examples.get(grade, [])
            for j in range(per_grade):
                ax = axes[row, s * per_grade + j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < len(paths):
                    ax.imshow(read_image(paths[j]), cmap="gray", vmin=0, vmax=255)
                    ax.set_xlabel(paths[j].stem, fontsize=7)
                else:
                    ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes, color="0.5")
                if row == 0 and j == 0:
                    ax.set_title(name, loc="left", fontsize=10, fontweight="bold")
        axes[row, 0].set_ylabel(f"KL {grade}", fontsize=11)
    fig.suptitle(title, fontsize=12)
    return fig


def _save(fig: Figure, out: str | os.PathLike | None) -> None:
    if out is None:
        return
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format=(out.suffix.lstrip(".") or "png"))


def synthetic_vs_real_montage(
    synthetic_dir: str | os.PathLike,
    real_dir: str | os.PathLike | None = None,
    *,
    per_grade: int = 4,
    seed: int = 0,
    out: str | os.PathLike | None = None,
) -> Figure:
    """Grid of example crops per KL grade: ``per_grade`` synthetic, then ``per_grade`` real ones.

    Without ``real_dir`` only the synthetic columns are drawn. Saved to ``out`` (dpi 100) if given.
    """
    sources = [("synthetic", pick_examples(synthetic_dir, per_grade, seed=seed))]
    if real_dir is not None:
        sources.append(("real", pick_examples(real_dir, per_grade, seed=seed)))
    title = "Synthetic vs real knee crops per KL grade" if real_dir is not None else "Synthetic knee crops per KL grade"
    fig = _grid(sources, per_grade, title)
    _save(fig, out)
    return fig


def grade_examples(
    data_dir: str | os.PathLike,
    per_grade: int = 5,
    *,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    title: str = "Examples of knee crops per KL grade",
) -> Figure:
    """The paper's Fig. 1: ``per_grade`` example crops for each KL grade of one data set."""
    fig = _grid([(Path(data_dir).name or str(data_dir), pick_examples(data_dir, per_grade, seed=seed))],
                per_grade, title)
    _save(fig, out)
    return fig
