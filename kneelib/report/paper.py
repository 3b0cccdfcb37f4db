"""The paper's published numbers as data — the single source of truth for every "paper" column.

Mikhaylichenko & Demyanenko, "Using squeeze-and-excitation blocks to improve an accuracy of automatically
grading knee osteoarthritis severity using convolutional neural networks", Computer Optics 46(2), 2022.
Numbers are kept exactly as printed (see ``/work/shared/PAPER.md``), quirks included; the docstrings say
where a printed number looks inconsistent. Nothing here computes or reads anything.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import pandas as pd

from kneelib.errors import KneelibError

#: The eight architectures in the order of Tables 4 and 5 (plain models first, then their SE versions).
ARCH_ORDER: tuple[str, ...] = (
    "resnet18", "resnet34", "resnet50", "densenet121",
    "se_resnet18", "se_resnet34", "se_resnet50", "se_densenet121",
)
PLAIN_ARCHS: tuple[str, ...] = ARCH_ORDER[:4]
SE_ARCHS: tuple[str, ...] = ARCH_ORDER[4:]
#: SE model -> its plain counterpart (for the "SE gain" column).
SE_PAIRS: dict[str, str] = dict(zip(SE_ARCHS, PLAIN_ARCHS))

DISPLAY_NAMES: dict[str, str] = {
    "resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50",
    "densenet121": "DenseNet-121", "se_resnet18": "SE-ResNet-18", "se_resnet34": "SE-ResNet-34",
    "se_resnet50": "SE-ResNet-50", "se_densenet121": "SE-DenseNet-121",
}

#: The three training seeds; tables report the mean over them.
SEEDS: tuple[int, ...] = (21, 42, 84)
#: Knee-grade columns of Table 1 (KL 0..4).
GRADES: tuple[int, ...] = (0, 1, 2, 3, 4)
SPLITS: tuple[str, ...] = ("train", "val", "test")


def display_name(arch: str) -> str:
    """``"se_densenet121"`` -> ``"SE-DenseNet-121"``; an unknown name is returned unchanged."""
    return DISPLAY_NAMES.get(arch, arch)


@dataclass(frozen=True)
class Recipe:
    """The training and data recipe of the paper (Sections "Data" and "Training")."""

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    lr_step: int = 5  #: the lr is multiplied by ``lr_gamma`` every ``lr_step`` epochs ("reduced by 5%")
    lr_gamma: float = 0.95
    epochs: int = 75
    image_size: int = 224
    seeds: tuple[int, ...] = SEEDS
    se_reduction: int = 16
    pretrained: str = "imagenet"
    split_ratio: tuple[float, float, float] = (0.7, 0.1, 0.2)  #: train:val:test, patient-grouped
    n_radiographs: int = 4130
    n_crops: int = 8260
    se_blocks_densenet121: int = 67  #: SE blocks the reference SE-DenseNet-121 holds
    #: The reference code's "paper protocol": pool Chen's train + val (6,604) and draw a stratified
    #: 12.5% validation subset with ``random_state=42`` (not grouped by patient).
    paper_protocol_val_fraction: float = 0.125
    paper_protocol_random_state: int = 42
    ensemble: str = "softmax(mean of the three seeds' logits)"
    metric_average: str = "weighted"  #: precision/recall/F1 averaged weighted by class support


RECIPE = Recipe()


# --------------------------------------------------------------------------- Table 1 and Chen 2018
TABLE1: dict[str, tuple[int, ...]] = {
    "train": (2295, 1051, 1504, 752, 175),
    "val": (319, 148, 223, 111, 25),
    "test": (639, 296, 447, 223, 51),
}
#: The totals as printed. The train total "6604" is the train+val pool; the train row sums to 5,777.
TABLE1_PRINTED_TOTALS: dict[str, int] = {"train": 6604, "val": 826, "test": 1656}

#: The public copy (Chen 2018, Mendeley doi:10.17632/56rmx5bjcr.1), split by patient.
CHEN2018: dict[str, tuple[int, ...]] = {
    "train": (2286, 1046, 1516, 757, 173),
    "val": (328, 153, 212, 106, 27),
    "test": (639, 296, 447, 223, 51),
}


def _counts_frame(rows: dict[str, tuple[int, ...]]) -> pd.DataFrame:
    df = pd.DataFrame.from_dict(rows, orient="index", columns=list(GRADES))
    df.index.name, df.columns.name = "split", "grade"
    return df


def table1(*, printed_totals: bool = True) -> pd.DataFrame:
    """Table 1: knee crops per split (rows) and KL grade (columns ``0..4``) plus a ``total`` column.

    Quirks: with ``printed_totals=True`` (default) the ``total`` column is the paper's printed one, whose
    train entry 6,604 is the train+val pool while the train row itself sums to 5,777; pass
    ``printed_totals=False`` for row sums. The paper's train + val rows equal Chen's train + val grade by
    grade except KL2 (1504 + 223 = 1727 vs 1516 + 212 = 1728), so the paper's pool sums to 6,603.
    """
    df = _counts_frame(TABLE1)
    df["total"] = (pd.Series(TABLE1_PRINTED_TOTALS) if printed_totals else df.sum(axis=1)).astype(int)
    return df


def chen2018_table() -> pd.DataFrame:
    """Chen 2018's public split counts (train 5,778 / val 826 / test 1,656; test identical to Table 1)."""
    df = _counts_frame(CHEN2018)
    df["total"] = df.sum(axis=1)
    return df


# --------------------------------------------------------------------------- Tables 4 and 5
@dataclass(frozen=True)
class ModelResult:
    """One row of Table 4/5: test metrics averaged over the three seeds (accuracy in %)."""

    arch: str
    accuracy: float
    precision: float
    recall: float
    f1: float
    se_gain: float | None  #: SE accuracy minus plain accuracy, percentage points; None for plain models


def _results(rows: list[tuple]) -> tuple[ModelResult, ...]:
    return tuple(ModelResult(*row) for row in rows)


#: Table 4 — 5-class KL scale. Quirk: DenseNet-121's recall 0.63 is below its accuracy 66.73 % although
#: weighted recall equals accuracy; it looks like a typo in the paper, kept as printed.
TABLE4: tuple[ModelResult, ...] = _results([
    ("resnet18", 65.24, 0.62, 0.65, 0.63, None),
    ("resnet34", 66.81, 0.65, 0.67, 0.65, None),
    ("resnet50", 66.42, 0.64, 0.67, 0.64, None),
    ("densenet121", 66.73, 0.64, 0.63, 0.65, None),
    ("se_resnet18", 66.02, 0.64, 0.66, 0.64, 0.78),
    ("se_resnet34", 67.11, 0.65, 0.67, 0.65, 0.30),
    ("se_resnet50", 67.47, 0.65, 0.68, 0.66, 1.05),
    ("se_densenet121", 69.77, 0.68, 0.70, 0.68, 3.04),
])

#: Table 5 — 4-class scale (KL0 and KL1 merged).
TABLE5: tuple[ModelResult, ...] = _results([
    ("resnet18", 79.63, 0.79, 0.80, 0.79, None),
    ("resnet34", 80.13, 0.80, 0.80, 0.80, None),
    ("resnet50", 80.36, 0.80, 0.80, 0.80, None),
    ("densenet121", 80.86, 0.80, 0.81, 0.80, None),
    ("se_resnet18", 79.77, 0.79, 0.80, 0.79, 0.14),
    ("se_resnet34", 80.28, 0.80, 0.80, 0.79, 0.15),
    ("se_resnet50", 80.29, 0.80, 0.80, 0.80, -0.07),
    ("se_densenet121", 82.51, 0.82, 0.83, 0.82, 1.65),
])

#: Merging KL0+KL1 raised the best model's accuracy by 12.74 points (69.77 -> 82.51).
MERGE_GAIN_PP: float = 12.74

RESULT_TABLES: dict[str, tuple[ModelResult, ...]] = {"kl5": TABLE4, "kl4": TABLE5}


def _results_frame(rows: tuple[ModelResult, ...]) -> pd.DataFrame:
    df = pd.DataFrame([{f.name: getattr(r, f.name) for f in fields(r)} for r in rows]).set_index("arch")
    df.insert(0, "model", [display_name(a) for a in df.index])
    df["se_gain"] = df["se_gain"].astype(float)
    return df


def table4() -> pd.DataFrame:
    """Table 4 (5-class): index ``arch``; columns model, accuracy (%), precision, recall, f1, se_gain (pp).

    Precision/recall/F1 are support-weighted averages. DenseNet-121's recall 0.63 < accuracy is a paper typo.
    """
    return _results_frame(TABLE4)


def table5() -> pd.DataFrame:
    """Table 5 (4-class, KL0+KL1 merged): same layout as :func:`table4`."""
    return _results_frame(TABLE5)


def results_table(scheme: str) -> pd.DataFrame:
    """The paper's results table for ``scheme`` ("kl5" -> Table 4, "kl4" -> Table 5)."""
    if scheme not in RESULT_TABLES:
        raise KneelibError(f"the paper has no results table for scheme {scheme!r} (only kl5, kl4)")
    return _results_frame(RESULT_TABLES[scheme])


# --------------------------------------------------------------------------- Table 6
@dataclass(frozen=True)
class ClassResult:
    """One row of Table 6 (accuracy in %; per-class accuracy equals recall)."""

    name: str  #: the kl4 class name ("0-1", "2", "3", "4") or "mean"
    label: str  #: as printed in the paper
    accuracy: float
    precision: float
    recall: float
    f1: float


#: Table 6 — ensemble of three SE-DenseNet-121 (seeds 21/42/84), 4-class scale. Per-class "accuracy" is
#: the class recall; the mean row's accuracy is the overall ensemble accuracy, its precision/recall/F1 the
#: support-weighted averages.
TABLE6: tuple[ClassResult, ...] = (
    ClassResult("0-1", "1 (KL0–1)", 91.87, 0.88, 0.92, 0.90),
    ClassResult("2", "2 (KL2)", 70.69, 0.76, 0.71, 0.73),
    ClassResult("3", "3 (KL3)", 82.96, 0.88, 0.83, 0.85),
    ClassResult("4", "4 (KL4)", 82.35, 0.89, 0.82, 0.86),
    ClassResult("mean", "mean", 84.66, 0.85, 0.85, 0.84),
)


def table6() -> pd.DataFrame:
    """Table 6: index = kl4 class name plus "mean"; columns label, accuracy (%), precision, recall, f1.

    Per-class accuracy = recall (e.g. 91.87 % vs 0.92). The mean row holds the overall ensemble accuracy.
    """
    df = pd.DataFrame([{f.name: getattr(r, f.name) for f in fields(r)} for r in TABLE6]).set_index("name")
    df.index.name = "class"
    return df


# --------------------------------------------------------------------------- other results cited
@dataclass(frozen=True)
class OtherResult:
    """A result the paper cites for comparison (accuracy in %; ``scale`` None where not stated)."""

    method: str
    accuracy: float
    scale: str | None  #: "kl5", "kl4" or None
    note: str = ""


OTHER_RESULTS: tuple[OtherResult, ...] = (
    OtherResult("Chen et al. 2019: VGG-19 + ordinal loss", 69.7, "kl5"),
    OtherResult("DenseNet-121, single model (authors' earlier work)", 68.98, "kl5"),
    OtherResult("DenseNet-121, seed ensemble (authors' earlier work)", 71.08, "kl5"),
    OtherResult("DenseNet ensemble", 77.2, "kl4"),
    OtherResult("Tiulpin et al. 2018: siamese network", 67.49, None),
    OtherResult("Two networks, also grading joint-space narrowing and osteophytes", 66.68, None),
    OtherResult("Inception-ResNet-v2 features + SVM", 64.7, None, "75.2 % with gait data"),
    OtherResult("kNN on texture features", 47.0, None, "at most 47 % (an upper bound)"),
)


def other_results() -> pd.DataFrame:
    """The comparison list: columns method, accuracy (%), scale, note."""
    df = pd.DataFrame([{f.name: getattr(r, f.name) for f in fields(r)} for r in OTHER_RESULTS])
    df.attrs["formats"] = {"accuracy": "{:.2f}"}
    return df
