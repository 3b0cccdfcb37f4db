"""Result tables with the paper's numbers beside ours (pure functions; saving is the only I/O).

Import through :mod:`kneelib.report`. Every table is a plain ``DataFrame`` (full precision, for CSV and
tests); :func:`format_table` renders a rounded markdown version, :func:`save_table` writes both.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kneelib.atomic import write_text
from kneelib.errors import KneelibError
from kneelib.report import paper

Metrics = Mapping[str, Any]  # the contract's metrics dict ``M``

_N_CLASSES_TO_SCHEME = {5: "kl5", 4: "kl4", 2: "oa"}
_ARCH_RE = re.compile(r"(?<![a-z0-9])((?:se_)?(?:resnet(?:18|34|50)|densenet121))(?![0-9])")
_SCHEME_RE = re.compile(r"(?<![a-z0-9])(kl5|kl4|oa)(?![a-z0-9])")
_SEED_RE = re.compile(r"(?<![a-z0-9])(?:seed|s)[_=-]?(\d+)(?![0-9])")


# --------------------------------------------------------------------------- helpers
def _scheme_obj(scheme: Any) -> Any:
    """A Scheme object from a name (via :mod:`kneelib.data.schemes`) or a ready scheme-like object."""
    if not isinstance(scheme, str):
        return scheme
    from kneelib.data.schemes import (
        get_scheme,  # report sits above data; imported on use
    )

    return get_scheme(scheme)


def _grade_label(name: str) -> str:
    return f"KL{name}" if name[:1].isdigit() else name


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return math.nan, math.nan
    arr = np.asarray(vals, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def _get(m: Metrics, key: str) -> float:
    value = m.get(key) if m else None
    return math.nan if value is None else float(value)


def run_key(run_name: str, spec: Any = None, metrics: Metrics | None = None) -> tuple[str, str, int | None]:
    """``(arch, scheme, seed)`` of a run from its config dict, an ``(arch, scheme, seed)`` tuple, or its name.

    Without a spec the name is parsed (e.g. ``se_densenet121-kl4-s21``); a scheme missing from the name is
    inferred from the number of classes in ``metrics``. KneelibError when the architecture is unknown.
    """
    if isinstance(spec, Mapping):
        arch, scheme, seed = spec.get("arch"), spec.get("scheme"), spec.get("seed")
    elif isinstance(spec, (tuple, list)) and len(spec) == 3:
        arch, scheme, seed = spec
    else:
        low = str(run_name).lower()
        arch_m, scheme_m = _ARCH_RE.search(low), _SCHEME_RE.search(low)
        seed_m = _SEED_RE.search(_ARCH_RE.sub(" ", low))
        arch = arch_m.group(1) if arch_m else None
        scheme = scheme_m.group(1) if scheme_m else None
        seed = int(seed_m.group(1)) if seed_m else None
    if scheme is None and metrics and metrics.get("per_class"):
        scheme = _N_CLASSES_TO_SCHEME.get(len(metrics["per_class"]))
    if not arch or not scheme:
        raise KneelibError(f"run {run_name!r}: cannot tell its architecture and scheme (give its config.json)")
    return str(arch), str(scheme), None if seed is None else int(seed)


def _split_entry(name: str, value: Any) -> tuple[tuple[str, str, int | None], Metrics | None]:
    if isinstance(value, Mapping) and "accuracy" in value:  # a bare M: parse the run name
        return run_key(name, None, value), value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        spec, m = value
        return run_key(name, spec, m), m
    raise KneelibError(f"run {name!r}: expected (config, metrics) or a metrics dict")


# --------------------------------------------------------------------------- Table 1
def _normalise_counts(counts: pd.DataFrame, scheme: Any) -> pd.DataFrame:
    """Split × class counts in ``scheme``'s class order; grade columns (0..4, "KL0") are merged."""
    df = counts.copy()
    df = df.loc[[i for i in df.index if str(i).lower() not in {"total", "sum"}]]  # "all" = a pool: kept
    df = df[[c for c in df.columns if str(c).lower() not in {"total", "sum"}]]
    df.index = [str(i) for i in df.index]
    names = list(scheme.class_names) if scheme is not None else [str(g) for g in paper.GRADES]
    cols = [str(c) for c in df.columns]
    if sorted(cols) == sorted(names):
        df.columns = cols
        return df[names].astype(float)
    try:
        grades = [int(re.sub(r"^(kl|grade)\s*", "", c.lower())) for c in cols]
    except ValueError as exc:
        raise KneelibError(f"count columns {cols} are neither KL grades 0..4 nor classes {names}") from exc
    df.columns = grades
    if scheme is None:
        return df.reindex(columns=list(paper.GRADES)).set_axis(names, axis=1).astype(float)
    out = pd.DataFrame(0.0, index=df.index, columns=names)
    for grade in df.columns:
        out[names[scheme.grade_to_class[grade]]] += df[grade].astype(float)
    return out


def table1(counts: pd.DataFrame, scheme: Any = "kl5") -> pd.DataFrame:
    """Table 1 beside ours: rows train/val/test/total; columns (ours|paper|diff, class...|total).

    ``counts``: split × grade counts (columns 0..4, "0".."4" or "KL0".., or already ``scheme``'s classes;
    any total row/column is recomputed). The paper's grades are merged for "kl4"/"oa". Totals are sums —
    the paper's printed train total 6,604 is the train+val pool (its train row sums to 5,777). A split we
    lack is NaN, and so is the total row then (no partial sums).
    """
    sch = None if scheme == "kl5" else _scheme_obj(scheme)
    ours = _normalise_counts(counts, sch)
    theirs = _normalise_counts(paper.table1(printed_totals=False).drop(columns="total"), sch)
    splits = list(paper.SPLITS) + [s for s in ours.index if s not in paper.SPLITS]
    blocks = {}
    for source, df in (("ours", ours), ("paper", theirs)):
        df = df.reindex(splits)
        df["total"] = df.sum(axis=1, skipna=False)
        df.loc["total"] = df.sum(axis=0, skipna=False)
        blocks[source] = df
    blocks["diff"] = blocks["ours"] - blocks["paper"]
    out = pd.concat(blocks, axis=1)
    out.columns = pd.MultiIndex.from_tuples(
        [(src, _grade_label(c) if c != "total" else c) for src, c in out.columns])
    out.index.name = "split"
    out.attrs["formats"] = {c: "{:.0f}" for c in out.columns}
    out.attrs["note"] = "paper train total printed as 6604 (the train+val pool); its train row sums to 5777"
    return out


# --------------------------------------------------------------------------- Tables 4 / 5
RESULT_COLUMNS = (
    "model", "n_seeds", "seeds", "accuracy", "accuracy_std", "precision", "recall", "f1", "f1_std",
    "se_gain", "qwk", "qwk_std", "mae", "paper_accuracy", "diff_accuracy", "paper_se_gain", "diff_se_gain",
    "paper_precision", "paper_recall", "paper_f1",
)

#: A printable subset of :func:`results_table`'s columns (``format_table(df, columns=...)``).
RESULT_SUMMARY_COLUMNS = ("model", "seeds", "accuracy", "accuracy_std", "precision", "recall", "f1", "se_gain",
                          "qwk", "mae", "paper_accuracy", "diff_accuracy", "paper_se_gain")


def results_table(metrics_by_run: Mapping[str, Any], scheme: str = "kl5") -> pd.DataFrame:
    """Table 4 ("kl5") or Table 5 ("kl4") from our runs, the paper's numbers beside.

    ``metrics_by_run``: run name -> ``(config dict | (arch, scheme, seed), M)`` or a bare ``M`` (its name
    parsed by :func:`run_key`). Runs of other schemes are ignored. One row per architecture in the paper's
    order (extra architectures after), metrics averaged over seeds: accuracy in %, support-weighted
    precision/recall/F1, kappa (qwk), MAE; ``*_std`` is the sample std over seeds (NaN for one seed);
    ``se_gain`` = SE model's mean accuracy − plain model's (percentage points); ``diff_*`` = ours − paper.
    Architectures without runs are all-NaN rows, so a partial sweep still renders.
    """
    by_arch: dict[str, list[tuple[int | None, Metrics]]] = {}
    for name, value in metrics_by_run.items():
        (arch, run_scheme, seed), m = _split_entry(name, value)
        if run_scheme == scheme and m:
            by_arch.setdefault(arch, []).append((seed, m))
    archs = list(paper.ARCH_ORDER) + sorted(a for a in by_arch if a not in paper.ARCH_ORDER)
    theirs = paper.results_table(scheme) if scheme in paper.RESULT_TABLES else None
    rows = []
    for arch in archs:
        runs = by_arch.get(arch, [])
        seeds = sorted(s for s, _ in runs if s is not None)
        row: dict[str, Any] = {"arch": arch, "model": paper.display_name(arch), "n_seeds": len(runs),
                               "seeds": ",".join(map(str, seeds))}
        for col, key, scale in (("accuracy", "accuracy", 100.0), ("precision", "precision_weighted", 1.0),
                                ("recall", "recall_weighted", 1.0), ("f1", "f1_weighted", 1.0),
                                ("qwk", "qwk", 1.0), ("mae", "mae", 1.0)):
            mean, std = _mean_std([_get(m, key) * scale for _, m in runs])
            row[col], row[f"{col}_std"] = mean, std
        for col in ("accuracy", "precision", "recall", "f1", "se_gain"):
            row[f"paper_{col}"] = (float(theirs.at[arch, col]) if theirs is not None and arch in theirs.index
                                   else math.nan)
        rows.append(row)
    df = pd.DataFrame(rows).set_index("arch")
    acc = df["accuracy"]
    df["se_gain"] = [acc[a] - acc[paper.SE_PAIRS[a]] if a in paper.SE_PAIRS else math.nan for a in df.index]
    df["diff_accuracy"] = df["accuracy"] - df["paper_accuracy"]
    df["diff_se_gain"] = df["se_gain"] - df["paper_se_gain"]
    df = df[list(RESULT_COLUMNS)]
    df.attrs["formats"] = {**{c: "{:.2f}" for c in df.columns if "accuracy" in c or "se_gain" in c},
                           **{c: "{:.2f}" for c in ("paper_precision", "paper_recall", "paper_f1")},
                           "n_seeds": "{:.0f}"}
    df.attrs["scheme"] = scheme
    return df


def results_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Table 4 or 5 (:func:`results_table`) narrow enough for a notebook page: one row per model, accuracy as
    "mean ± sd" over the seeds, F1, QWK, MAE, the SE gain, and the paper's accuracy and SE gain beside."""
    def mean_sd(mean: float, sd: float) -> str:
        return "–" if math.isnan(mean) else f"{mean:.1f}" + ("" if math.isnan(sd) else f" ± {sd:.1f}")

    out = pd.DataFrame({
        "seeds": table["n_seeds"], "acc %": [mean_sd(m, s) for m, s in zip(table["accuracy"], table["accuracy_std"])],
        "F1": table["f1"], "QWK": table["qwk"], "MAE": table["mae"], "SE gain": table["se_gain"],
        "paper acc %": table["paper_accuracy"], "paper SE gain": table["paper_se_gain"]})
    out.index = pd.Index(table["model"], name="model")
    out.attrs["formats"] = {"seeds": "{:.0f}", "F1": "{:.2f}", "QWK": "{:.2f}", "MAE": "{:.2f}", "SE gain": "{:+.1f}",
                            "paper acc %": "{:.2f}", "paper SE gain": "{:+.2f}"}
    return out


# --------------------------------------------------------------------------- SE gain per backbone
def se_gain_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """What SE blocks add per backbone and scale (rows of :func:`kneelib.evaluate.sweep_groups.se_gains`), in
    percentage points with its 95% intervals (over seeds and images, and over images alone), and the paper's
    gain beside."""
    out = []
    for r in rows:
        theirs = paper.results_table(r["scheme"]) if r["scheme"] in paper.RESULT_TABLES else None
        se = f"se_{r['arch']}"
        out.append({"scale": r["scheme"], "backbone": paper.display_name(r["arch"]), "images": r["n"],
                    "seeds": r["seeds"], "plain %": 100 * r["plain_accuracy"], "SE %": 100 * r["se_accuracy"],
                    "SE gain pp": 100 * r["diff"],
                    "95% CI, seeds and images": f"{100 * r['lo']:+.1f} to {100 * r['hi']:+.1f}",
                    "95% CI, images": (f"{100 * r['images_lo']:+.1f} to {100 * r['images_hi']:+.1f}"
                                       if r.get("images_lo") is not None else ""),
                    "p": r["p"],
                    "paper gain pp": (float(theirs.at[se, "se_gain"]) if theirs is not None and se in theirs.index
                                      else math.nan)})
    df = pd.DataFrame(out, columns=["scale", "backbone", "images", "seeds", "plain %", "SE %", "SE gain pp",
                                    "95% CI, seeds and images", "95% CI, images", "p", "paper gain pp"]
                      ).set_index("backbone")
    df.attrs["formats"] = {"plain %": "{:.1f}", "SE %": "{:.1f}", "SE gain pp": "{:+.1f}", "p": "{:.2f}",
                           "paper gain pp": "{:+.2f}"}
    return df


# --------------------------------------------------------------------------- Table 6
def table6(ensemble: Metrics | None, scheme: str = "kl4", class_names: Iterable[str] | None = None
           ) -> pd.DataFrame:
    """Table 6: the ensemble per class and a "mean" row, the paper's values and ``diff_*`` = ours − paper.

    Per-class accuracy (%) = 100 × recall; the mean row holds the overall accuracy and the support-weighted
    precision/recall/F1. The paper's rows (kl4 only) are matched to our classes by position.
    """
    if not ensemble:
        raise KneelibError("no ensemble metrics: Table 6 needs an ensemble of at least two runs")
    per_class = ensemble.get("per_class") or {}
    names = [str(c) for c in (class_names if class_names is not None else per_class)]
    missing = [c for c in names if c not in per_class]
    if missing:
        raise KneelibError(f"ensemble metrics have no per-class entry for {missing}")
    rows = {}
    for c in names:
        pc = per_class[c]
        rows[c] = {"accuracy": 100.0 * _get(pc, "recall"), "precision": _get(pc, "precision"),
                   "recall": _get(pc, "recall"), "f1": _get(pc, "f1"), "support": _get(pc, "support"),
                   "auc": _get(pc, "auc")}
    rows["mean"] = {"accuracy": 100.0 * _get(ensemble, "accuracy"),
                    "precision": _get(ensemble, "precision_weighted"),
                    "recall": _get(ensemble, "recall_weighted"), "f1": _get(ensemble, "f1_weighted"),
                    "support": _get(ensemble, "n"), "auc": math.nan}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "class"
    theirs = paper.table6()
    match = scheme == "kl4" and len(names) == len(theirs) - 1
    for col in ("accuracy", "precision", "recall", "f1"):
        df[f"paper_{col}"] = theirs[col].to_numpy() if match else math.nan
    for col in ("accuracy", "precision", "recall", "f1"):
        df[f"diff_{col}"] = df[col] - df[f"paper_{col}"]
    df.attrs["formats"] = {"accuracy": "{:.2f}", "paper_accuracy": "{:.2f}", "diff_accuracy": "{:.2f}",
                           "support": "{:.0f}", **{f"paper_{c}": "{:.2f}" for c in ("precision", "recall", "f1")}}
    return df


# --------------------------------------------------------------------------- SE overhead
def _as_mapping(row: Any) -> Mapping[str, Any]:
    if isinstance(row, Mapping):
        out = dict(row)
    elif dataclasses.is_dataclass(row):
        out = dataclasses.asdict(row)
    else:
        raise KneelibError(f"overhead row {row!r}: expected a dict or a ModelSummary")
    if "params" not in out and "parameters" in out:
        out["params"] = out["parameters"]
    return out


def overhead_table(rows: Iterable[Any]) -> pd.DataFrame:
    """Plain vs SE side by side from ``{name, params (or parameters), gflops, se_blocks}`` dicts or
    ``kneelib.models.summary.ModelSummary`` objects (one per architecture).

    One row per plain/SE pair (index: the plain model's display name): parameters in millions, GFLOPs,
    overhead in % of the plain model, and the SE model's block count. A missing partner gives NaN.
    """
    by_name = {str(r["name"]): r for r in map(_as_mapping, rows)}
    plains = [n for n in paper.PLAIN_ARCHS if n in by_name or f"se_{n}" in by_name]
    plains += sorted({n[3:] if n.startswith("se_") else n for n in by_name} - set(plains))
    out = []
    for plain in plains:
        p, s = by_name.get(plain, {}), by_name.get(f"se_{plain}", {})
        row = {"model": paper.display_name(plain),
               "params_m": _get(p, "params") / 1e6, "params_se_m": _get(s, "params") / 1e6,
               "gflops": _get(p, "gflops"), "gflops_se": _get(s, "gflops"), "se_blocks": _get(s, "se_blocks")}
        row["params_overhead_pct"] = 100.0 * (row["params_se_m"] / row["params_m"] - 1.0)
        row["gflops_overhead_pct"] = 100.0 * (row["gflops_se"] / row["gflops"] - 1.0)
        out.append(row)
    cols = ["model", "params_m", "params_se_m", "params_overhead_pct", "gflops", "gflops_se",
            "gflops_overhead_pct", "se_blocks"]
    df = pd.DataFrame(out, columns=cols).set_index("model")
    df.attrs["formats"] = {"params_m": "{:.2f}", "params_se_m": "{:.2f}", "params_overhead_pct": "{:.1f}",
                           "gflops": "{:.2f}", "gflops_se": "{:.2f}", "gflops_overhead_pct": "{:.1f}",
                           "se_blocks": "{:.0f}"}
    return df


# --------------------------------------------------------------------------- printing and saving
def _fmt(value: Any, fmt: str | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (float, np.floating)):
        fmt = fmt or "{:.3f}"  # "{:.1f}" or a bare format spec such as ".1f"
        return fmt.format(float(value)) if "{" in fmt else format(float(value), fmt)
    return str(value).replace("|", "\\|")


def _default_format(series: pd.Series) -> str | None:
    """Integral float columns (counts with NaN) print without decimals, other floats with 3."""
    if not pd.api.types.is_float_dtype(series):
        return None
    vals = series.dropna().to_numpy(dtype=float)
    return "{:.0f}" if vals.size and np.all(vals == np.round(vals)) else "{:.3f}"


def format_table(df: pd.DataFrame, *, formats: Mapping[Any, str] | None = None,
                 columns: Iterable[Any] | None = None) -> str:
    """A rounded GitHub-markdown rendering (no ``tabulate`` needed); NaN prints as "–".

    Per-column formats come from ``formats``, else ``df.attrs["formats"]`` (set by the table functions),
    else 3 decimals (integral float columns without decimals). ``columns`` selects and orders columns.
    MultiIndex column levels are joined with a space.
    """
    if columns is not None:
        df = df[list(columns)]
    fmts = {c: _default_format(df[c]) for c in df.columns}
    fmts |= {c: f for c, f in {**df.attrs.get("formats", {}), **(formats or {})}.items() if c in fmts}
    cols = list(df.columns)
    header = [str(df.index.name or "")] + [" ".join(map(str, c)) if isinstance(c, tuple) else str(c)
                                           for c in cols]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for idx, row in zip(df.index, df.itertuples(index=False)):
        cells = [_fmt(idx if not isinstance(idx, tuple) else " ".join(map(str, idx)), None)]
        cells += [_fmt(v, fmts.get(c)) for c, v in zip(cols, row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_table(df: pd.DataFrame, **kwargs: Any) -> Any:
    """:func:`format_table` as an IPython ``Markdown`` object: a notebook renders it as a table."""
    from IPython.display import Markdown

    return Markdown(format_table(df, **kwargs))


def save_table(df: pd.DataFrame, out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``out_dir/name.csv`` (full precision) and ``out_dir/name.md`` (rounded), each atomically."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise KneelibError(f"table name {name!r}: expected a plain file stem such as 'table4'")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise KneelibError(f"{out}: not a directory")
    flat = df.copy()
    if isinstance(flat.columns, pd.MultiIndex):
        flat.columns = ["_".join(map(str, c)) for c in flat.columns]
    csv_path = write_text(out / f"{name}.csv", flat.to_csv(float_format="%.6g", lineterminator="\n"))
    md_path = write_text(out / f"{name}.md", format_table(df))
    return csv_path, md_path
