"""kneelib.evaluate.metrics: the metric dict M against hand computations on tiny arrays."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from kneelib.data.schemes import get_scheme
from kneelib.evaluate.metrics import (
    METRIC_KEYS,
    PER_CLASS_KEYS,
    _batched_qwk,
    bootstrap_ci,
    compute_metrics,
    qwk,
)

KL5 = get_scheme("kl5")
KL4 = get_scheme("kl4")


def one_hot_probs(pred: list[int], k: int) -> np.ndarray:
    """Probabilities whose argmax is ``pred`` (and which differ per row, for ROC)."""
    probs = np.full((len(pred), k), 0.1 / (k - 1))
    probs[np.arange(len(pred)), pred] = 0.9
    return probs


# y_true / y_pred used for hand computations (kl5):
#   class 0: 3 true, predicted 0,0,1   class 1: 2 true, predicted 1,2
#   class 2: 2 true, predicted 2,2     class 3: 1 true, predicted 4      class 4: 0 true
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 3]
Y_PRED = [0, 0, 1, 1, 2, 2, 2, 4]


@pytest.fixture(scope="module")
def m() -> dict:
    return compute_metrics(np.array(Y_TRUE), one_hot_probs(Y_PRED, 5), KL5, n_boot=200)


def test_keys_and_types(m: dict) -> None:
    assert tuple(m) == METRIC_KEYS
    assert isinstance(m["n"], int) and m["n"] == 8
    for key in METRIC_KEYS[1:11]:
        assert isinstance(m[key], float), key
    assert list(m["per_class"]) == list(KL5.class_names)
    for row in m["per_class"].values():
        assert tuple(row) == PER_CLASS_KEYS
        assert isinstance(row["support"], int)
    assert np.array(m["confusion_matrix"]).shape == (5, 5)
    assert set(m["roc"]) == set(KL5.class_names)
    assert set(m["ci"]) == {"accuracy", "qwk"} and all(len(v) == 2 for v in m["ci"].values())
    json.dumps(m, allow_nan=False)  # JSON-ready: no NaN, no numpy scalars


def test_accuracy_confusion_and_per_class(m: dict) -> None:
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["confusion_matrix"] == [
        [2, 1, 0, 0, 0],
        [0, 1, 1, 0, 0],
        [0, 0, 2, 0, 0],
        [0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0],
    ]
    pc = m["per_class"]
    # precision = TP / predicted, recall = TP / true (Table 6: per-class accuracy is the recall)
    expected = {"0": (2 / 2, 2 / 3), "1": (1 / 2, 1 / 2), "2": (2 / 3, 2 / 2),
                "3": (0.0, 0.0), "4": (0.0, 0.0)}
    for name, (p, r) in expected.items():
        assert pc[name]["precision"] == pytest.approx(p)
        assert pc[name]["recall"] == pytest.approx(r)
        assert pc[name]["accuracy"] == pc[name]["recall"]
        f1 = 0.0 if p + r == 0 else 2 * p * r / (p + r)
        assert pc[name]["f1"] == pytest.approx(f1)
    assert [pc[n]["support"] for n in KL5.class_names] == [3, 2, 2, 1, 0]


def test_weighted_and_macro_averages(m: dict) -> None:
    p = [1.0, 0.5, 2 / 3, 0.0, 0.0]
    r = [2 / 3, 0.5, 1.0, 0.0, 0.0]
    f = [0.8, 0.5, 0.8, 0.0, 0.0]
    support = [3, 2, 2, 1, 0]
    weighted = lambda xs: sum(x * s for x, s in zip(xs, support)) / sum(support)  # noqa: E731
    assert m["precision_weighted"] == pytest.approx(weighted(p))
    assert m["recall_weighted"] == pytest.approx(weighted(r))
    assert m["recall_weighted"] == pytest.approx(m["accuracy"])  # weighted recall is accuracy
    assert m["f1_weighted"] == pytest.approx(weighted(f))
    assert m["precision_macro"] == pytest.approx(sum(p) / 5)
    assert m["recall_macro"] == pytest.approx(sum(r) / 5)
    assert m["f1_macro"] == pytest.approx(sum(f) / 5)
    # balanced accuracy: mean recall over the classes present in y_true (0..3)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5 + 1.0 + 0.0) / 4)
    assert m["mae"] == pytest.approx((0 + 0 + 1 + 0 + 1 + 0 + 0 + 1) / 8)


def test_roc_and_auc(m: dict) -> None:
    assert m["roc"]["4"] == {"fpr": [], "tpr": [], "auc": None}  # class 4 absent → undefined
    assert m["per_class"]["4"]["auc"] is None
    roc2 = m["roc"]["2"]  # both class-2 knees scored 0.9, one other knee too (true 1 → pred 2)
    assert roc2["fpr"][0] == 0.0 and roc2["tpr"][-1] == 1.0
    assert roc2["auc"] == pytest.approx(1 - 0.5 * (1 / 6))  # one tie of 2 positives × 6 negatives
    assert m["per_class"]["2"]["auc"] == roc2["auc"]


def test_qwk_known_values() -> None:
    assert qwk(np.array([0, 1, 2, 3, 4]), np.array([0, 1, 2, 3, 4]), 5) == pytest.approx(1.0)
    assert qwk(np.array([0, 4]), np.array([4, 0]), 5) == pytest.approx(-1.0)
    # one KL4 knee graded 3: observed weighted disagreement 1, expected 85/5 = 17 → 1 - 1/17
    assert qwk(np.array([0, 1, 2, 3, 4]), np.array([0, 1, 2, 3, 3]), 5) == pytest.approx(16 / 17)
    assert qwk(np.array([1, 1]), np.array([1, 1]), 5) is None  # undefined, not NaN
    y = np.array([0, 1, 2, 3, 4])
    m = compute_metrics(y, one_hot_probs([0, 1, 2, 3, 3], 5), KL5, n_boot=50)
    assert m["qwk"] == pytest.approx(16 / 17)


def test_mae_on_kl4_merged_scale() -> None:
    grades = [0, 1, 2, 3, 4]  # KL grades → kl4 classes 0, 0, 1, 2, 3
    y = np.array([KL4.encode(g) for g in grades])
    pred = [1, 0, 1, 3, 1]  # errors 1, 0, 0, 1, 2 on the merged scale
    m = compute_metrics(y, one_hot_probs(pred, 4), KL4, n_boot=50)
    assert m["mae"] == pytest.approx(4 / 5)
    assert list(m["per_class"]) == ["0-1", "2", "3", "4"]
    assert m["per_class"]["0-1"]["support"] == 2


def test_bootstrap_ci_contains_estimate_and_is_deterministic() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 300)
    pred = np.where(rng.random(300) < 0.7, y, rng.integers(0, 5, 300))
    ci = bootstrap_ci(y, pred, 5)
    assert ci == bootstrap_ci(y, pred, 5)
    acc = float((y == pred).mean())
    kappa = qwk(y, pred, 5)
    assert ci["accuracy"][0] < acc < ci["accuracy"][1]
    assert ci["qwk"][0] < kappa < ci["qwk"][1]
    assert ci["accuracy"][1] - ci["accuracy"][0] < 0.2
    assert bootstrap_ci(y, pred, 5, seed=1) != ci


def test_batched_qwk_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 5, (4, 40)), rng.integers(0, 5, (4, 40))
    got = _batched_qwk(t, p, 5)
    for i in range(4):
        want = cohen_kappa_score(t[i], p[i], labels=list(range(5)), weights="quadratic")
        assert got[i] == pytest.approx(want)


def test_bad_shapes_rejected() -> None:
    with pytest.raises(ValueError):
        compute_metrics(np.array([0, 1]), np.ones((2, 4)) / 4, KL5)
    with pytest.raises(ValueError):
        compute_metrics(np.array([0, 5]), np.ones((2, 5)) / 5, KL5)


def test_all_one_class_is_json_safe() -> None:
    m = compute_metrics(np.array([2, 2, 2]), one_hot_probs([2, 2, 1], 5), KL5, n_boot=50)
    assert m["qwk"] == pytest.approx(0.0)  # observed = expected disagreement
    text = json.dumps(m, allow_nan=False)
    assert not any(math.isnan(x) for x in [m["accuracy"], m["mae"]])
    assert '"auc": null' in text


def test_two_level_interval_covers_the_spread_between_seeds() -> None:
    from kneelib.evaluate.metrics import paired_difference_ci, two_level_difference_ci

    rng = np.random.default_rng(0)
    n = 800
    a = (rng.random((3, n)) < 0.50).astype(float)  # three seeds near 50%
    # B's seeds disagree widely: 44%, 52% and 60%; their mean gain over A is about +2 points
    b = np.stack([(rng.random(n) < p).astype(float) for p in (0.44, 0.52, 0.60)])
    both = two_level_difference_ci(a, b, n_boot=2000)
    images = paired_difference_ci(a.mean(0), b.mean(0), n_boot=2000)
    assert both["diff"] == pytest.approx(b.mean() - a.mean())
    assert both["hi"] - both["lo"] > 1.5 * (images["hi"] - images["lo"])  # the seeds' spread is in it
    assert both["lo"] < 0 < both["hi"]  # three seeds this far apart cannot show a 2-point gain
    same = two_level_difference_ci(a, a)
    assert same["diff"] == 0 and same["lo"] <= 0 <= same["hi"]
    one = two_level_difference_ci(a[:1], b[:1])  # one seed a side: the images-only interval
    assert one["hi"] - one["lo"] == pytest.approx(
        np.subtract(*reversed([paired_difference_ci(a[0], b[0])[k] for k in ("lo", "hi")])), rel=0.25)
    with pytest.raises(ValueError):
        two_level_difference_ci(a, b[:, :10])
