"""kneelib.report.paper (the published numbers) and kneelib.report (tables and figures) on fabricated metrics."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image
from sklearn import metrics as skm

from kneelib import report
from kneelib.errors import KneelibError
from kneelib.report import paper

KL4 = ("0-1", "2", "3", "4")
KL5 = ("0", "1", "2", "3", "4")
# a duck-typed kl4 scheme so these tests do not depend on kneelib.data.schemes
KL4_SCHEME = SimpleNamespace(name="kl4", class_names=KL4, grade_to_class=(0, 0, 1, 2, 3))


def fake_metrics(y_true, probs, class_names) -> dict:
    """The contract's metrics dict ``M`` computed with sklearn (stand-in for kneelib.evaluate)."""
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=float)
    y_pred = probs.argmax(1)
    labels = list(range(len(class_names)))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    m = {"n": len(y_true), "accuracy": skm.accuracy_score(y_true, y_pred),
         "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
         "qwk": skm.cohen_kappa_score(y_true, y_pred, weights="quadratic"),
         "mae": float(np.abs(y_true - y_pred).mean()), "per_class": {}, "roc": {},
         "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
         "ci": {"accuracy": [0.0, 1.0], "qwk": [0.0, 1.0]}}
    for avg in ("weighted", "macro"):
        ap, ar, af, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        m |= {f"precision_{avg}": ap, f"recall_{avg}": ar, f"f1_{avg}": af}
    for k, name in enumerate(class_names):
        fpr, tpr, _ = skm.roc_curve(y_true == k, probs[:, k])
        auc = skm.auc(fpr, tpr)
        m["roc"][name] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": auc}
        m["per_class"][name] = {"precision": p[k], "recall": r[k], "f1": f[k], "support": int(s[k]), "auc": auc}
    return m


def fake_data(n: int, n_classes: int, skill: float, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += skill
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs


def acc_only(accuracy: float, **extra) -> dict:
    """A minimal M for arithmetic checks."""
    return {"accuracy": accuracy, "precision_weighted": accuracy - 0.01, "recall_weighted": accuracy,
            "f1_weighted": accuracy - 0.02, "qwk": 0.8, "mae": 0.4, **extra}


# --------------------------------------------------------------------------- paper
def test_paper_table1_matches_paper_md():
    t1 = paper.table1()
    assert list(t1.loc["test", [0, 1, 2, 3, 4]]) == [639, 296, 447, 223, 51]
    assert t1.loc["test", "total"] == 1656 == t1.loc["test", [0, 1, 2, 3, 4]].sum()
    assert t1.loc["val", "total"] == 826 == t1.loc["val", [0, 1, 2, 3, 4]].sum()
    assert t1.loc["train", "total"] == 6604  # printed: the train+val pool
    assert paper.table1(printed_totals=False).loc["train", "total"] == 5777  # the row's own sum
    chen = paper.chen2018_table()
    assert list(chen["total"]) == [5778, 826, 1656]
    assert (chen.loc["test"] == t1.loc["test"]).all()
    assert chen.loc[["train", "val"]].sum()["total"] == 6604


def test_paper_tables_4_5_6_values_and_se_gain_arithmetic():
    t4, t5, t6 = paper.table4(), paper.table5(), paper.table6()
    assert list(t4.index) == list(paper.ARCH_ORDER) == list(t5.index)
    assert t4.at["se_densenet121", "accuracy"] == 69.77 and t4.at["se_densenet121", "model"] == "SE-DenseNet-121"
    assert t4.at["densenet121", "recall"] == 0.63  # the paper's apparent typo, kept as printed
    assert t5.at["se_resnet50", "se_gain"] == -0.07 and math.isnan(t5.at["resnet18", "se_gain"])
    for table in (t4, t5):
        for se, plain in paper.SE_PAIRS.items():
            assert table.at[se, "se_gain"] == pytest.approx(table.at[se, "accuracy"] - table.at[plain, "accuracy"])
    assert t5.at["se_densenet121", "accuracy"] - t4.at["se_densenet121", "accuracy"] == pytest.approx(
        paper.MERGE_GAIN_PP)
    assert t6.at["mean", "accuracy"] == 84.66 and list(t6.index) == [*KL4, "mean"]
    assert (t6["accuracy"].iloc[:4] / 100).round(2).tolist() == t6["recall"].iloc[:4].tolist()  # acc = recall
    assert paper.SEEDS == (21, 42, 84) and paper.RECIPE.epochs == 75 and paper.RECIPE.lr_gamma == 0.95
    assert paper.display_name("resnet18") == "ResNet-18" and paper.display_name("foo") == "foo"
    assert len(paper.other_results()) == len(paper.OTHER_RESULTS)
    with pytest.raises(KneelibError):
        paper.results_table("oa")


# --------------------------------------------------------------------------- tables
def test_table1_beside_paper_and_diff():
    counts = pd.DataFrame({g: [10 * (g + 1), g + 1] for g in range(5)}, index=["train", "val"])
    t = report.table1(counts)
    assert t.loc["train", ("ours", "KL0")] == 10 and t.loc["train", ("paper", "KL0")] == 2295
    assert t.loc["train", ("diff", "KL4")] == 50 - 175
    assert t.loc["train", ("paper", "total")] == 5777  # sums, not the printed 6604
    assert math.isnan(t.loc["test", ("ours", "KL0")]) and math.isnan(t.loc["total", ("ours", "total")])
    assert t.loc["total", ("paper", "total")] == 5777 + 826 + 1656
    # a kl4 table merges KL0 and KL1; "KL"-prefixed and total columns are accepted
    c2 = counts.rename(columns=lambda g: f"KL{g}").assign(total=0)
    t4 = report.table1(c2, KL4_SCHEME)
    assert t4.loc["train", ("ours", "KL0-1")] == 30 and t4.loc["test", ("paper", "KL0-1")] == 639 + 296
    assert "| split |" in report.format_table(t4)


def test_results_table_means_std_se_gain_and_diff():
    runs = {
        "a": ({"arch": "resnet18", "scheme": "kl5", "seed": 21}, acc_only(0.60)),
        "b": (("resnet18", "kl5", 42), acc_only(0.62)),
        "c": (("resnet18", "kl5", 84), acc_only(0.67)),
        "se_resnet18-kl5-s21": acc_only(0.70),  # bare M, run name parsed
        "se_resnet18_kl5_seed42": acc_only(0.66),
        "x": (("resnet18", "kl4", 21), acc_only(0.99)),  # another scheme: ignored
    }
    t = report.results_table(runs, "kl5")
    assert list(t.index) == list(paper.ARCH_ORDER)
    assert t.at["resnet18", "accuracy"] == pytest.approx(63.0)  # (60 + 62 + 67) / 3
    assert t.at["resnet18", "accuracy_std"] == pytest.approx(np.std([60, 62, 67], ddof=1))
    assert t.at["resnet18", "n_seeds"] == 3 and t.at["resnet18", "seeds"] == "21,42,84"
    assert t.at["se_resnet18", "accuracy"] == pytest.approx(68.0)
    assert t.at["se_resnet18", "se_gain"] == pytest.approx(5.0)  # 68 - 63 percentage points
    assert t.at["se_resnet18", "diff_se_gain"] == pytest.approx(5.0 - 0.78)
    assert t.at["resnet18", "diff_accuracy"] == pytest.approx(63.0 - 65.24)
    assert t.at["resnet18", "precision"] == pytest.approx(0.62) and t.at["resnet18", "qwk"] == pytest.approx(0.8)
    # partial sweep: missing architectures render as NaN rows
    assert t.loc["se_densenet121", "n_seeds"] == 0 and math.isnan(t.at["se_densenet121", "accuracy"])
    assert t.at["se_densenet121", "paper_accuracy"] == 69.77
    md = report.format_table(t)
    assert "SE-DenseNet-121" in md and "–" in md and "63.00" in md
    short = report.format_table(t, columns=report.RESULT_SUMMARY_COLUMNS)
    assert short.splitlines()[0].startswith("| arch | model | seeds | accuracy |")


def test_results_table_one_seed_real_metrics_and_errors():
    y, probs = fake_data(60, 4, 1.5, 0)
    m = fake_metrics(y, probs, KL4)
    t = report.results_table({"run1": (("se_densenet121", "kl4", 21), m)}, "kl4")
    assert t.at["se_densenet121", "accuracy"] == pytest.approx(100 * m["accuracy"])
    assert math.isnan(t.at["se_densenet121", "accuracy_std"]) and math.isnan(t.at["se_densenet121", "se_gain"])
    assert t.at["se_densenet121", "paper_accuracy"] == 82.51
    assert report.run_key("runs/se_densenet121/x", None, m) == ("se_densenet121", "kl4", None)
    with pytest.raises(KneelibError, match="mystery"):
        report.results_table({"mystery": acc_only(0.5)}, "kl5")
    assert report.results_table({}, "oa")["paper_accuracy"].isna().all()


def test_table6_from_fabricated_ensemble():
    y, probs = fake_data(200, 4, 2.0, 1)
    m = fake_metrics(y, probs, KL4)
    t = report.table6(m)
    assert list(t.index) == [*KL4, "mean"]
    assert t.at["2", "accuracy"] == pytest.approx(100 * m["per_class"]["2"]["recall"])
    assert t.at["mean", "accuracy"] == pytest.approx(100 * m["accuracy"])
    assert t.at["mean", "f1"] == pytest.approx(m["f1_weighted"])
    assert t.at["mean", "paper_accuracy"] == 84.66 and t.at["0-1", "paper_precision"] == 0.88
    for col in ("accuracy", "precision", "recall", "f1"):
        assert np.allclose(t[f"diff_{col}"], t[col] - t[f"paper_{col}"])
    assert report.table6(fake_metrics(y % 2, probs[:, :2], ("no OA", "OA")), "oa")["paper_f1"].isna().all()
    with pytest.raises(KneelibError):
        report.table6(None)


def test_overhead_table_and_save_table(tmp_path):
    rows = [{"name": "resnet18", "params": 11_000_000, "gflops": 1.8, "se_blocks": 0},
            {"name": "se_resnet18", "params": 11_220_000, "gflops": 1.82, "se_blocks": 8},
            {"name": "densenet121", "params": 7_000_000, "gflops": 2.9, "se_blocks": 0}]
    t = report.overhead_table(rows)
    assert list(t.index) == ["ResNet-18", "DenseNet-121"]
    assert t.at["ResNet-18", "params_overhead_pct"] == pytest.approx(2.0)
    assert t.at["ResNet-18", "se_blocks"] == 8 and math.isnan(t.at["DenseNet-121", "params_se_m"])
    csv, md = report.save_table(t, tmp_path / "tables", "overhead")
    assert pd.read_csv(csv, index_col=0).loc["ResNet-18", "params_m"] == pytest.approx(11.0)
    assert md.read_text().startswith("| model |")
    assert not list((tmp_path / "tables").glob(".*"))  # no temp files left behind
    with pytest.raises(KneelibError):
        report.save_table(t, tmp_path, "../evil")


# --------------------------------------------------------------------------- figures
@pytest.fixture(scope="module")
def kl4_eval():
    y, probs = fake_data(80, 4, 1.8, 2)
    m = fake_metrics(y, probs, KL4)
    preds = pd.DataFrame({"path": [f"img/{9000000 + i}L.png" for i in range(len(y))], "true": y,
                          "pred": probs.argmax(1), **{f"p_{c}": probs[:, k] for k, c in enumerate(KL4)}})
    return m, preds


def _check_png(fig: Figure, path) -> bytes:
    report.save_figure(fig, path, dpi=40)
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.size[0] > 50
    return path.read_bytes()


def test_figures_return_figures_and_save_deterministic_png(tmp_path, kl4_eval):
    m, preds = kl4_eval
    rng = np.random.default_rng(0)
    history = pd.DataFrame({"epoch": range(1, 6), "lr": 1e-3, "train_loss": [1.2, 1.0, .9, .8, .7],
                            "train_acc": [.4, .5, .6, .65, .7], "val_loss": [1.3, 1.1, 1.0, 1.05, 1.1],
                            "val_acc": [.35, .45, .55, .52, .5], "seconds": 1.0})
    images = [rng.integers(0, 255, (32, 32), dtype=np.uint8) for _ in range(len(preds))]
    figs = {
        "cm": (report.confusion_matrix_figure(m, KL4), 2),  # heatmap + colorbar
        "cm_norm": (report.confusion_matrix_figure(m, KL4, normalize=True), 2),
        "roc": (report.roc_figure(m, KL4), 1),
        "prob": (report.probability_figure(preds, KL4, n=4), 4),
        "prob_img": (report.probability_figure(preds, KL4, images=images, n=3), 6),
        "curves": (report.learning_curves_figure(history), 2),
        "se": (report.se_excitation_figure({"block1": rng.random((3, 64)), "block2": rng.random((3, 256))}), 2),
        "se_map": (report.se_excitation_figure({"b": rng.random((3, 16))}, kind="heatmap"), 2),
    }
    for name, (fig, n_axes) in figs.items():
        assert isinstance(fig, Figure) and len(fig.axes) == n_axes, name
        first = _check_png(fig, tmp_path / f"{name}.png")
        if name in ("cm", "roc", "curves"):  # a second save of the same figure gives the same bytes
            assert _check_png(fig, tmp_path / f"{name}_again.png") == first, f"{name} not byte-deterministic"
    # rebuilding from the same inputs gives the same bytes (no timestamps, deterministic example choice)
    again = report.probability_figure(preds, KL4, n=4)
    assert _check_png(again, tmp_path / "prob2.png") == (tmp_path / "prob.png").read_bytes()
    roc_ax = figs["roc"][0].axes[0]
    assert "AUC" in roc_ax.get_legend().get_texts()[0].get_text()


def test_choose_examples_spans_classes_and_figure_errors(kl4_eval):
    m, preds = kl4_eval
    rows = report.choose_examples(preds, KL4, n=4, seed=3)
    assert sorted(preds["true"].iloc[rows]) == [0, 1, 2, 3]
    assert rows == report.choose_examples(preds, KL4, n=4, seed=3)
    named = preds.assign(true=[KL4[t] for t in preds["true"]])
    assert report.choose_examples(named, KL4, n=4, seed=3) == rows
    with pytest.raises(KneelibError):
        report.probability_figure(preds.drop(columns="p_2"), KL4)
    with pytest.raises(KneelibError, match="outside"):
        report.choose_examples(preds.assign(true=7), KL4)
    with pytest.raises(KneelibError):
        report.confusion_matrix_figure(m, KL5)
    with pytest.raises(KneelibError):
        report.learning_curves_figure(pd.DataFrame({"epoch": [1]}))
    with pytest.raises(KneelibError):
        report.save_figure(Figure(), "/tmp/x.gif")


# --------------------------------------------------------------------------- against the sibling modules
def test_with_kneelib_metrics_stats_and_evaluate_frames(tmp_path):
    """The real producers' formats: compute_metrics' M, stats.class_counts, the long predictions frame."""
    schemes = pytest.importorskip("kneelib.data.schemes")
    metrics = pytest.importorskip("kneelib.evaluate.metrics")
    stats = pytest.importorskip("kneelib.data.stats")
    layout = pytest.importorskip("kneelib.data.layout")
    kl4 = schemes.get_scheme("kl4")
    y, probs = fake_data(60, 4, 1.5, 5)
    y[y == 3] = 2  # KL4 absent: its ROC/AUC is undefined (None)
    m = metrics.compute_metrics(y, probs, kl4, n_boot=20)
    assert report.table6(m).at["mean", "accuracy"] == pytest.approx(100 * m["accuracy"])
    fig = report.roc_figure(m, kl4.class_names)
    assert "n/a" in fig.axes[0].get_legend().get_texts()[3].get_text()
    report.confusion_matrix_figure(m, kl4.class_names)

    samples = [layout.Sample(path=tmp_path / f"{g}_{i}.png", grade=g, split=split)
               for split, per in (("train", 3), ("val", 1)) for g in range(5) for i in range(per)]
    counts = stats.class_counts(samples, "kl4")
    t = report.table1(counts, "kl4")
    assert t.loc["train", ("ours", "KL0-1")] == 6 and t.loc["val", ("diff", "KL4")] == 1 - 25

    names = list(kl4.class_names)
    frames = [pd.DataFrame({"model": model, "path": [f"{i}.png" for i in range(len(y))], "grade": y,
                            "true": [names[k] for k in y], "pred": [names[k] for k in probs.argmax(1)],
                            **{f"p_{c}": probs[:, k] for k, c in enumerate(names)}})
              for model in ("run_a", "run_b", "ensemble")]
    preds = pd.concat(frames, ignore_index=True)
    assert len(report.select_model(preds)) == len(y)
    images = {f"{i}.png": np.full((16, 16), 4 * i, dtype=np.uint8) for i in range(len(y))}
    assert len(report.probability_figure(preds, names, images=images, n=3, model="run_b").axes) == 6
    with pytest.raises(KneelibError, match="several models"):
        report.select_model(preds[preds["model"] != "ensemble"])


def test_overhead_table_accepts_model_summaries():
    from kneelib.models.summary import ModelSummary as Summary

    rows = [Summary("resnet18", "ResNet-18", 5, 10_000_000, 224, 2.0, 0),
            Summary("se_resnet18", "SE-ResNet-18", 5, 10_500_000, 224, 2.01, 8)]
    t = report.overhead_table(rows)
    assert t.at["ResNet-18", "params_overhead_pct"] == pytest.approx(5.0)
    assert t.at["ResNet-18", "gflops_overhead_pct"] == pytest.approx(0.5)


def test_prediction_figure_with_and_without_truth() -> None:
    from kneelib.report import prediction_figure

    gray = np.full((32, 32), 128, dtype=np.uint8)
    fig = prediction_figure(gray, [0.1, 0.6, 0.2, 0.1], ["0-1", "2", "3", "4"], title="x", true="3")
    assert len(fig.axes) == 2
    assert "true KL 3, predicted KL 2 (wrong)" in fig.axes[1].get_title()
    fig = prediction_figure(gray, [0.1, 0.6, 0.2, 0.1], ["0-1", "2", "3", "4"])
    assert fig.axes[1].get_title() == "predicted KL 2"


def test_format_table_takes_bare_format_specs_and_templates() -> None:
    """``formats={"col": ".1f"}`` (as 03_train passes) prints the number, not the spec."""
    import pandas as pd

    df = pd.DataFrame({"a": [61.234], "b": [0.5]}, index=pd.Index([21], name="seed"))
    assert "| 21 | 61.2 | 0.50 |" in report.format_table(df, formats={"a": ".1f", "b": "{:.2f}"})


def test_budget_table_and_figure() -> None:
    def row(arch: str, px: int, epochs: int, seed: int, acc: float) -> dict:
        return {"arch": arch, "image_size": px, "epochs": epochs, "variant": "flip-only", "seed": seed,
                "minutes": 2.0 * epochs, "val_prime_acc": [0.4, acc + 0.01], "val_accuracy": acc, "val_qwk": 0.6,
                "val_balanced_accuracy": acc - 0.05, "val_recall": {"0": 0.9, "4": 0.1}}

    rows = [row("resnet18", 64, 8, 21, 0.50), row("resnet18", 64, 8, 42, 0.54), row("densenet121", 64, 4, 21, 0.48)]
    table = report.budget_table(rows)
    resnet = table.loc["ResNet-18"]
    assert (resnet["seeds"], resnet["val %"], resnet["KL4 recall %"]) == (2, pytest.approx(52.0), pytest.approx(10.0))
    assert list(table.index) == ["DenseNet-121", "ResNet-18"]
    figure = report.budget_curves_figure(rows, variant="flip-only")
    selection, scored, bars = figure.axes
    assert len(selection.lines) == 2 and len(scored.lines) == 2 and not bars.axison  # one variant: no bars
    assert max(selection.lines[1].get_ydata()) == pytest.approx(53.0)  # val' best, seeds' mean (51 and 55)
    other = {**row("resnet18", 64, 8, 21, 0.45), "variant": "scratch"}
    bars = report.budget_curves_figure([*rows, other], variant="flip-only").axes[2]
    assert len(bars.patches) == 2 and "ResNet-18 64×8: scratch" in [t.get_text() for t in bars.get_yticklabels()]


def test_seed_histories_figure_has_a_panel_per_scale_and_a_line_per_seed() -> None:
    import pandas as pd

    history = pd.DataFrame({"epoch": [1, 2, 3], "val_acc": [0.4, 0.55, 0.5]})
    runs = {f"{arch}_{scheme}_s{seed}": history for arch in ("densenet121", "se_densenet121")
            for scheme in ("kl5", "kl4") for seed in (21, 42)}
    kl5, kl4 = report.seed_histories_figure(runs).axes
    assert kl5.get_title().startswith("kl5") and kl4.get_title().startswith("kl4")
    assert len(kl5.lines) == 2 * 2 * 2  # per architecture and seed: its curve and its best-epoch dot
    assert [t.get_text() for t in kl5.get_legend().get_texts()] == ["DenseNet-121 (2 seeds)", "SE-DenseNet-121 (2 seeds)"]
