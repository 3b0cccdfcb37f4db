"""Smoke test of benchmarks/bench.py: the --quick run on a tiny data set writes a complete report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from fakes import make_tiny_dataset

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("kneelib_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_writes_report(tmp_path: Path) -> None:
    bench = _load_bench()
    data = make_tiny_dataset(tmp_path / "data", train_per_grade=2, size=64)
    out = tmp_path / "results" / "bench.json"
    threads = torch.get_num_threads()
    report = bench.main(["--quick", "--archs", "resnet18", "se_resnet18", "--epoch-images", "8",
                         "--epoch-batch-size", "4", "--data", str(data), "--out", str(out)])
    assert torch.get_num_threads() == threads  # restored
    saved = json.loads(out.read_text())
    assert saved["targets"] == report["targets"]
    assert [m["arch"] for m in saved["models"]] == ["resnet18", "se_resnet18"]
    assert saved["models"][1]["torchvision_base"] == "resnet18" and saved["models"][1]["se"]
    for m in saved["models"]:
        for mode in ("train", "inference"):
            assert m[mode]["kneelib_images_per_s"] > 0 and m[mode]["ratio"] > 0
    assert set(saved["targets"]["model_within_5pct_of_torchvision"]) == {"resnet18"}
    epoch = saved["epoch"]
    assert epoch["images"] == 8
    assert epoch["kneelib"]["steady_epoch_images_per_s"] > 0 and epoch["steady_speedup"] > 0
    assert "| steady epoch |" in saved["table_markdown"]


def test_quick_defaults_and_missing_data(tmp_path: Path) -> None:
    bench = _load_bench()
    args = bench.parse_args(["--quick", "--iters", "3"])
    assert (args.image_size, args.iters, args.epoch_images, len(args.archs)) == (64, 3, 32, 2)
    with pytest.raises(bench.KneelibError, match="not found"):
        bench.main(["--quick", "--skip-models", "--data", str(tmp_path / "nope"),
                    "--out", str(tmp_path / "b.json")])
    assert not (tmp_path / "b.json").exists()
