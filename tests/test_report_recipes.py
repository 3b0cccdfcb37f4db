"""The recipe ablation's results file (written and read by kneelib.report.recipe_ablation), its table and learning
curves, and the committed results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kneelib import report
from kneelib.errors import KneelibError

COMMITTED = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "recipe_ablation_cpu.json"


def _variant(acc: float, epoch1: tuple[float, float]) -> dict:
    return {"epoch1_val_acc": list(epoch1), "left_prior_epoch1": [a > 0.41 for a in epoch1],
            "heldout_accuracy": {"s21": acc - 0.01, "s42": acc + 0.01},
            "ensemble": {"accuracy": acc, "qwk": 0.6, "mae": 0.7},
            "ensemble_ci": {"accuracy": [acc - 0.03, acc + 0.03]},
            "history": {f"s{s}": {"epoch": [1, 2], "train_loss": [1.4, 1.2], "val_acc": [epoch1[i], acc]}
                        for i, s in enumerate((21, 42))}}


RESULTS = {"conditions": {"val_prime_majority": 0.396},
           "variants": {"paper": _variant(0.49, (0.45, 0.43)), "better": _variant(0.525, (0.44, 0.40))}}


def test_ablation_table_rows_and_difference_to_the_baseline() -> None:
    table = report.ablation_table(RESULTS, baseline="paper")
    assert list(table.index) == ["paper", "better"]
    assert table.loc["better", "vs paper (points)"] == pytest.approx(3.5)
    assert table.loc["paper", "vs paper (points)"] == 0
    assert table.loc["better", "left the prior in epoch 1"] == "1 of 2"
    assert table.loc["paper", "left the prior in epoch 1"] == "all seeds"
    assert table.loc["better", "ensemble acc % (95% CI)"] == "52.5 (49.5–55.5)"
    assert "| +3.5 |" in report.format_table(table) and "| 0.60 |" in report.format_table(table)


def test_curves_figure_and_errors(tmp_path: Path) -> None:
    fig = report.recipe_curves_figure(RESULTS)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2 * 3 + 1  # 2 seeds + mean each, majority line
    bare = {"variants": {"paper": {k: v for k, v in RESULTS["variants"]["paper"].items() if k != "history"}}}
    with pytest.raises(KneelibError, match="learning curves"):
        report.recipe_curves_figure(bare)
    with pytest.raises(KneelibError, match="not found"):
        report.load_ablation(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"conditions": {}}))
    with pytest.raises(KneelibError, match="no 'variants'"):
        report.load_ablation(tmp_path / "bad.json")


def test_committed_ablation_is_complete() -> None:
    """Every variant of the committed measurement has both seeds, an ensemble and its learning curves."""
    results = report.load_ablation(COMMITTED)
    assert {"paper", "scratch v1"} <= set(results["variants"])
    assert [n for n in results["variants"] if n.startswith("scratch (")]  # the current recipe
    for name, v in results["variants"].items():
        assert len(v["heldout_accuracy"]) == 2 and set(v["history"]) == {"s21", "s42"}, name
        assert all(len(h["val_acc"]) == results["conditions"]["epochs"] for h in v["history"].values()), name
    report.ablation_table(results)
    check = report.third_seed_table(results)
    assert list(check.index) == ["paper", "scratch"]
    assert report.third_seed_table({"variants": {}}) is None


def test_the_densenet_learning_rate_is_the_one_val_prime_chose() -> None:
    """FAMILY_FIELDS' DenseNet peak lr is the variant with the best mean val' accuracy in the committed runs
    (selection never looks at the held-out split)."""
    from kneelib.train.recipes import FAMILY_FIELDS, RECIPES

    results = report.load_ablation(COMMITTED.with_name("recipe_densenet121_cpu.json"))
    assert results["conditions"]["arch"] == "densenet121"
    by_lr = {v["changes"]["lr"]: sum(v["best_val_acc"]) / len(v["best_val_acc"])
             for v in results["variants"].values()}
    chosen = FAMILY_FIELDS["scratch"]["densenet"]["lr"]
    assert max(by_lr, key=by_lr.get) == chosen != RECIPES["scratch"]["lr"]


def test_the_results_file_round_trips_through_the_writer(tmp_path: Path) -> None:
    """What benchmarks/recipe_ablation.py writes (conditions_record, variant_record, save_ablation) loads back
    and draws: the format lives in kneelib, not in the script."""
    rows = [{"epoch": str(e), "lr": "0.001", "train_loss": str(1.5 - e / 10), "train_acc": "0.4", "val_loss": "1.2",
             "val_acc": str(0.38 + e / 50)} for e in (1, 2, 3)]
    metrics = {"ensemble": {"accuracy": 0.5, "qwk": 0.6, "mae": 0.7, "ci": {"accuracy": [0.45, 0.55]}},
               "models": {"paper_s21": {"accuracy": 0.48, "qwk": 0.55}, "paper_s42": {"accuracy": 0.49, "qwk": 0.56}}}
    record = report.variant_record("paper", {}, seeds=[21, 42], histories=[rows, rows], metrics=metrics,
                                   majority=0.396, minutes=1.5)
    assert record["left_prior_epoch1"] == [False, False] and record["best_val_acc"] == [0.44, 0.44]
    assert record["history"]["s42"]["val_acc"] == [0.4, 0.42, 0.44]
    assert record["ensemble_ci"] == {"accuracy": [0.45, 0.55]}
    conditions = report.conditions_record(arch="resnet18", scheme="kl5", image_size=64, epochs=3, seeds=[21, 42],
                                          device="cpu", val_prime_majority=0.396, counts={"train": 10})
    report.save_ablation({"conditions": conditions, "variants": {"paper": record}}, tmp_path / "a.json")
    loaded = report.load_ablation(tmp_path / "a.json")
    assert loaded["variants"]["paper"] == record and loaded["conditions"]["seeds"] == [21, 42]
    assert report.ablation_table(loaded).loc["paper", "ensemble QWK"] == 0.6
    report.recipe_curves_figure(loaded)
    del record["history"]
    report.save_ablation({"variants": {"paper": record}}, tmp_path / "b.json")
    with pytest.raises(KneelibError, match="lacks history"):
        report.load_ablation(tmp_path / "b.json")


@pytest.mark.parametrize("name", ["recipe_ablation_cpu", "recipe_densenet121_cpu", "recipe_se_densenet121_cpu"])
def test_every_committed_results_file_has_the_format(name: str) -> None:
    report.load_ablation(COMMITTED.with_name(f"{name}.json"))
