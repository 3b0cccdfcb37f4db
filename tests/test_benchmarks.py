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


def _gpu_bench_module():
    import sys

    sys.path.insert(0, str(BENCH.parent))
    import gpu_bench

    return gpu_bench


TINY_LOOP = ["--device", "cpu", "--train-loop", "--image-size", "64", "--batch-size", "4", "--steps", "1",
             "--warmup", "1", "--workers", "0"]


def test_the_gpu_benchmark_keeps_what_finished_when_a_later_stage_fails(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage that raises is recorded and the next one runs; one that kills the process (here an interrupt in
    the data stage) leaves the JSON as written after the last finished stage."""
    bench, gpu_bench = _load_bench(), _gpu_bench_module()
    data = make_tiny_dataset(tmp_path / "data", train_per_grade=4, size=64)
    out = tmp_path / "gpu.json"
    real_loop = gpu_bench.train_loop_speed

    def loop_speed(arch, *args, **kwargs):
        if arch == "se_resnet18":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_loop(arch, *args, **kwargs)

    def data_path(*args, **kwargs):
        raise RuntimeError("DataLoader worker (pid 123) is killed by signal: Bus error")

    monkeypatch.setattr(gpu_bench, "train_loop_speed", loop_speed)
    monkeypatch.setattr(gpu_bench, "data_path_speed", data_path)
    report = bench.main([*TINY_LOOP, "--archs", "resnet18", "se_resnet18", "densenet121", "--data", str(data),
                         "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report)) and saved["finished"]
    assert list(saved["train_loop"]) == ["resnet18", "densenet121"]
    assert set(saved["errors"]) == {"train_loop:se_resnet18:eager", "train_loop:se_resnet18:graph", "data_path"}
    assert "Bus error" in saved["errors"]["data_path"] and saved["data_path"] is None
    assert saved["paper_profile"]["per_arch_minutes"].keys() == {"resnet18", "densenet121"}
    assert "FAILED data_path" in gpu_bench.markdown(saved)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gpu_bench, "data_path_speed", killed)
    out.unlink()
    with pytest.raises(KeyboardInterrupt):
        bench.main([*TINY_LOOP, "--archs", "resnet18", "--data", str(data), "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["train_loop"]["resnet18"]["eager"] > 0 and not saved["finished"]


def test_the_benchmarks_failure_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``KNEELIB_BENCH_FAIL`` (gpu_check.sh's rehearsal of a failing stage) makes the named stages raise."""
    bench, gpu_bench = _load_bench(), _gpu_bench_module()
    data = make_tiny_dataset(tmp_path / "data", train_per_grade=4, size=64)
    monkeypatch.setenv(gpu_bench.FAIL_ENV, "data_path")
    report = bench.main([*TINY_LOOP, "--archs", "resnet18", "--data", str(data), "--json", str(tmp_path / "g.json")])
    assert list(report["errors"]) == ["data_path"] and "forced failure" in report["errors"]["data_path"]
    assert report["train_loop"]["resnet18"]["eager"] > 0


def test_the_gpu_benchmark_measures_what_the_loop_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The step is built on a real batch in the loop's memory format, by the loop's own setup
    (``place_model``, ``make_lazy_step``, ``runtime.prepare_backends``)."""
    gpu_bench = _gpu_bench_module()
    from kneelib.data.batched import DeviceBatches
    from kneelib.train import build, runtime

    seen = {}
    real_make_step, real_prepare = build.make_step, getattr(runtime, "prepare_backends", None)

    def make_step(model, optimizer, device, *, example, **kwargs):
        seen.setdefault("examples", []).append(example.is_contiguous(memory_format=torch.channels_last))
        return real_make_step(model, optimizer, device, example=example, **kwargs)

    def prepare_backends(device):
        seen["prepared"] = True
        real_prepare(device)

    monkeypatch.setattr(build, "make_step", make_step)
    monkeypatch.setattr(gpu_bench, "make_step", make_step, raising=False)  # where a copy of the setup calls it
    monkeypatch.setattr(runtime, "prepare_backends", prepare_backends, raising=False)
    monkeypatch.setattr(runtime, "memory_format", lambda device, arch=None, bf16=False: torch.channels_last)
    images = [torch.randint(0, 256, (1, 64, 64), dtype=torch.uint8) for _ in range(8)]
    data = DeviceBatches(images, torch.arange(8) % 5, "cpu", augment=True)
    held = DeviceBatches(images, torch.arange(8) % 5, "cpu", augment=False)
    result = gpu_bench.train_loop_speed("resnet18", data, held, torch.device("cpu"), graphs=True, batch_size=4,
                                        steps=1, warmup=1)
    assert seen["examples"] == [True, True] and seen.get("prepared")  # train and eval steps, channels-last batches
    assert result["memory_format"] == "channels_last"


def test_loader_workers_are_capped_and_need_dev_shm(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_bench = _gpu_bench_module()
    cuda = torch.device("cuda")
    monkeypatch.setattr(gpu_bench, "dev_shm_gib", lambda: 64.0)
    assert gpu_bench.loader_workers(15, cuda, image_size=224, batch_size=32) == (8, "capped at 8")
    assert gpu_bench.loader_workers(2, cuda, image_size=224, batch_size=32) == (2, None)
    monkeypatch.setattr(gpu_bench, "dev_shm_gib", lambda: 0.06)
    workers, why = gpu_bench.loader_workers(8, cuda, image_size=224, batch_size=32)
    assert workers == 0 and "/dev/shm has 0.06 GiB free" in why
    monkeypatch.setattr(gpu_bench, "dev_shm_gib", lambda: None)
    assert gpu_bench.loader_workers(None, torch.device("cpu"), image_size=64, batch_size=4)[0] == 0


@pytest.mark.slow
def test_the_gpu_check_rehearsal_keeps_every_finished_result(tmp_path: Path) -> None:
    """``benchmarks/gpu_check.sh`` on a CPU with tiny settings (loader workers, a fake data set) and the
    benchmark's data stage forced to fail: the preflight passes, gpu-bench.json keeps both architectures and names
    the failure, the training runs, the pair and the summaries follow, and check.log ends with the last line."""
    import os
    import subprocess
    import sys

    data = make_tiny_dataset(tmp_path / "data", train_per_grade=4, size=64)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "KNEELIB_CHECK_WORK": str(tmp_path / "work"), "KNEELIB_CHECK_DEVICE": "cpu",
           "KNEELIB_CHECK_TINY": "1", "KNEELIB_CHECK_PYTHON": sys.executable, "KNEELIB_CHECK_DATA": str(data),
           "KNEELIB_BENCH_FAIL": "data_path"}
    done = subprocess.run(["bash", str(BENCH.parent / "gpu_check.sh")], cwd=BENCH.parents[1], env=env,
                          capture_output=True, text=True, timeout=900)
    log = (out / "check.log").read_text()
    assert done.returncode == 0, log[-3000:]
    assert log.rstrip().splitlines()[-1].startswith("== done in") and "preflight ok" in log
    assert json.loads((out / "preflight.json").read_text())["ok"]
    bench = json.loads((out / "gpu-bench.json").read_text())
    assert list(bench["train_loop"]) == ["se_densenet121", "resnet18"] and bench["finished"]
    assert list(bench["errors"]) == ["data_path"] and bench["settings"]["workers"] == 2
    prior = json.loads((out / "prior.json").read_text())
    assert set(prior) == {"se_densenet121", "resnet18"} and all(len(r["val_acc"]) == 2 for r in prior.values())
    memory = json.loads((out / "memory.json").read_text())
    assert memory["pair"]["finished"] == {"resnet18": 1, "se_resnet18": 1}


def test_the_gpu_checks_memory_summary(tmp_path: Path) -> None:
    """memory.json from runs as a GPU would leave them (config.json's gpu_memory): one run's need is its
    max_reserved plus what the device used beyond the allocator, less what it used before the check."""
    import sys

    sys.path.insert(0, str(BENCH.parent))
    import gpu_check_summary

    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    (work).mkdir()
    (work / "baseline_mib").write_text("512\n")
    (work / "pair_samples_mib").write_text("600\n20000\n23552\n1000\n")

    def run(folder: str, arch: str, reserved: float, outside: float, seconds: list[float]) -> None:
        path = work / folder / arch
        path.mkdir(parents=True)
        memory = {"max_reserved": reserved, "max_allocated": reserved - 1, "reserved_now": reserved,
                  "outside_allocator": outside, "per_run_estimate": reserved + outside, "device_used": 0,
                  "total": 80.0}
        (path / "config.json").write_text(json.dumps({"gpu_memory": memory, "execution": {"step": "cuda graph"}}))
        rows = ["epoch,lr,train_loss,train_acc,val_loss,val_acc,seconds"]
        rows += [f"{i + 1},0.001,1.0,0.5,1.0,0.45,{s}" for i, s in enumerate(seconds)]
        (path / "history.csv").write_text("\n".join(rows) + "\n")

    run("prior", "se_densenet121", 9.5, 1.0, [30.0, 20.0])
    run("prior", "densenet121", 8.0, 1.0, [25.0, 18.0])
    run("pair", "se_densenet121", 9.5, 12.0, [40.0])
    run("pair", "densenet121", 8.0, 11.0, [35.0])
    report = gpu_check_summary.summarize(out, work)
    assert report["per_run_alone_gib"] == {"densenet121": 8.5, "se_densenet121": 10.0}
    assert report["per_run_max_gib"] == 10.0
    assert report["pair"]["peak_device_used_gib"] == 22.5 and report["pair"]["sum_alone_gib"] == 18.5
    assert report["pair"]["epoch1_seconds"] == {"densenet121": 35.0, "se_densenet121": 40.0}
    assert report["pair"]["epoch1_seconds_alone"] == {"densenet121": 25.0, "se_densenet121": 30.0}
    jobs = report["resolve_jobs_paper"]
    assert jobs["by_measured_memory"] == int(0.9 * (80 - 0.5) // 10.0) and jobs["with_RUN_GPU_GIB"] >= 1
    assert json.loads((out / "memory.json").read_text()) == json.loads(json.dumps(report))
    assert json.loads((out / "prior.json").read_text())["densenet121"]["val_acc"] == [0.45, 0.45]


def test_publish_sweep_copies_histories_and_draws_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep's runs go to DEST with their history, the recipe fields (the loss among them) and one figure of
    every seed's val' accuracy per epoch; nothing else of the run (no checkpoint)."""
    import shutil
    import sys

    spec = importlib.util.spec_from_file_location("kneelib_publish", BENCH.parent / "publish_sweep.py")
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    committed = BENCH.parents[1] / "figures" / "real-cpu" / "runs"
    out, dest = tmp_path / "sweep", tmp_path / "published"
    for name in ("densenet121_kl5_s21", "densenet121_kl5_s42", "se_densenet121_kl4_s21"):
        run = out / "runs" / name
        run.mkdir(parents=True)
        shutil.copyfile(committed / name / "history.csv", run / "history.csv")
        (run / "config.json").write_text(json.dumps({**json.loads((committed / name / "config.json").read_text()),
                                                     "loss": "corn", "data_dir": "/private"}))
        (run / "status.json").write_text(json.dumps({"best_epoch": 4, "best_val_acc": 0.5, "finished": True}))
        (run / "best.pt").write_bytes(b"weights")
    monkeypatch.setattr(sys, "argv", ["publish_sweep.py", str(out), str(dest)])
    assert publish.main() == 0
    assert (dest / "histories.png").stat().st_size > 10_000
    saved = json.loads((dest / "runs" / "densenet121_kl5_s42" / "config.json").read_text())
    assert saved["loss"] == "corn" and "data_dir" not in saved
    assert not list(dest.rglob("*.pt"))
