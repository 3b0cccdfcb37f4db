"""kneelib.evaluate.sweep_groups: group evaluation with its cache, the bridge to report.results_table, and
SweepResults (what 05_results calls)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fakes import make_data, make_run

from kneelib.errors import KneelibError
from kneelib.evaluate import SweepResults, featured_metrics, sweep_groups
from kneelib.train.config import run_name


@pytest.fixture()
def sweep_dir(tmp_path: Path) -> tuple[Path, Path]:
    data = make_data(tmp_path / "data", split="test")
    out = tmp_path / "out"
    for seed in (21, 42):
        make_run(out / "runs", run_name("resnet18", "kl4", seed), scheme="kl4", seed=seed)
    return out, data


def test_group_is_evaluated_once_then_cached(sweep_dir: tuple[Path, Path], monkeypatch) -> None:
    out, data = sweep_dir
    metrics, preds = sweep_groups.evaluate_group(out, data, "resnet18", "kl4", [21, 42, 84], progress=False)
    assert sorted(metrics["models"]) == ["resnet18_kl4_s21", "resnet18_kl4_s42"]
    assert metrics["ensemble"] is not None and metrics["code"] == sweep_groups.code_fingerprint()
    assert (out / "eval" / "resnet18_kl4" / "metrics.json").is_file()

    def boom(*a, **k):
        raise AssertionError("re-evaluated although the cache is valid")

    monkeypatch.setattr(sweep_groups, "evaluate_runs", boom)
    again, preds2 = sweep_groups.evaluate_group(out, data, "resnet18", "kl4", [21, 42, 84], progress=False)
    assert again["ensemble"]["accuracy"] == metrics["ensemble"]["accuracy"]
    assert len(preds2) == len(preds)


def test_cache_is_invalidated_by_new_checkpoint_or_code(sweep_dir: tuple[Path, Path], monkeypatch) -> None:
    out, data = sweep_dir
    sweep_groups.evaluate_group(out, data, "resnet18", "kl4", [21, 42], progress=False)
    cached = out / "eval" / "resnet18_kl4" / "metrics.json"
    best = out / "runs" / "resnet18_kl4_s21" / "best.pt"
    os.utime(best, (cached.stat().st_mtime + 10, cached.stat().st_mtime + 10))
    calls = []
    real = sweep_groups.evaluate_runs
    monkeypatch.setattr(sweep_groups, "evaluate_runs", lambda *a, **k: calls.append(1) or real(*a, **k))
    sweep_groups.evaluate_group(out, data, "resnet18", "kl4", [21, 42], progress=False)
    assert calls == [1]
    monkeypatch.setattr(sweep_groups, "code_fingerprint", lambda: "changed")
    sweep_groups.evaluate_group(out, data, "resnet18", "kl4", [21, 42], progress=False)
    assert calls == [1, 1]


def test_sweep_and_results_table_input(sweep_dir: tuple[Path, Path]) -> None:
    out, data = sweep_dir
    results = sweep_groups.evaluate_sweep(out, data, archs=["resnet18", "se_resnet18"], schemes=["kl4"],
                                          seeds=[21, 42], progress=False)
    assert list(results) == [("resnet18", "kl4")]
    table = sweep_groups.metrics_by_run(results, "kl4")
    assert {k: v[0] for k, v in table.items()} == {
        "resnet18_kl4_s21": ("resnet18", "kl4", 21), "resnet18_kl4_s42": ("resnet18", "kl4", 42)}
    assert sweep_groups.metrics_by_run(results, "kl5") == {}
    json.dumps(results[("resnet18", "kl4")])  # plain JSON


def test_empty_sweep_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KneelibError, match="no trained runs"):
        sweep_groups.evaluate_sweep(tmp_path, tmp_path, archs=["resnet18"], schemes=["kl4"], seeds=[21])


def test_sweep_results_is_the_functions_with_the_arguments_held(sweep_dir: tuple[Path, Path]) -> None:
    """05_results' calls: one SweepResults gives what the four functions give with the same seven arguments."""
    out, data = sweep_dir
    archs, seeds = ["resnet18", "se_resnet18"], [21, 42]
    sweep = SweepResults(out, data, archs=archs, schemes=["kl4"], seeds=seeds, split="test", device="cpu")
    results = sweep_groups.evaluate_sweep(out, data, archs=archs, schemes=["kl4"], seeds=seeds, device="cpu",
                                          progress=False)
    assert sweep.results == results and sweep.results is sweep.results  # evaluated once
    assert sweep.metrics_by_run("kl4") == sweep_groups.metrics_by_run(results, "kl4")
    featured, predictions = sweep.group("resnet18", "kl4")
    assert featured == results[("resnet18", "kl4")] and len(predictions)
    assert featured_metrics(featured) is featured["ensemble"]
    assert sweep.run_dirs("resnet18", "kl4") == sweep_groups.group_runs(out, "resnet18", "kl4", seeds)
    assert sweep.se_gains() == []  # no se_resnet18 runs
    with pytest.raises(KneelibError, match="no trained runs of se_resnet18"):
        sweep.group("se_resnet18", "kl4")
    single = SweepResults(out, data, archs=["resnet18"], schemes=["kl4"], seeds=[21], device="cpu")
    doc = single.group("resnet18", "kl4")[0]
    assert doc["ensemble"] is None and featured_metrics(doc) == doc["models"]["resnet18_kl4_s21"]
