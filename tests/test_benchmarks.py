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


def test_train_loop_benchmark_writes_the_gpu_report_schema(tmp_path: Path) -> None:
    """``bench.py --device cuda`` on a CPU (``--train-loop``): the same code path, tiny settings."""
    bench = _load_bench()
    data = make_tiny_dataset(tmp_path / "data", train_per_grade=4, size=64)
    out = tmp_path / "gpu.json"
    report = bench.main(["--device", "cpu", "--train-loop", "--archs", "resnet18", "--image-size", "64",
                         "--batch-size", "4", "--steps", "2", "--warmup", "1", "--workers", "0",
                         "--data", str(data), "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["device"].startswith("cpu") and saved == json.loads(json.dumps(report))
    assert set(saved["train_loop"]["resnet18"]) == {"eager", "graph"}
    assert all(v > 0 for v in saved["train_loop"]["resnet18"].values())
    detail = saved["train_loop_detail"]["resnet18"]["graph"]
    assert detail["path"] == "eager" and "CUDA device" in detail["why_eager"]  # no graph without a GPU
    assert set(saved["data_path"]) >= {"batched", "pil", "reference"}
    assert all(saved["data_path"][k] > 0 for k in ("batched", "pil", "reference"))
    # one architecture's 2 schemes x 3 seeds x 75 epochs of 5,778 + 826 images at the measured rates
    rates = saved["train_loop_detail"]["resnet18"]["graph"]
    expected = 6 * 75 * (5778 / rates["images_per_s"] + 826 / rates["eval_images_per_s"]) / 60
    assert saved["paper_profile_minutes"] == pytest.approx(expected, rel=0.01)
