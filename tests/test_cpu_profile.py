"""The ``cpu`` profile's pieces: held-out selection (train'/val'/official val), per-family recipe fields, the
CPU's bf16 path, the sweep's projection and progress bar, and the SE gain with a paired bootstrap."""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import make_tiny_dataset

from kneelib import cpu_pin, report
from kneelib.cli import main
from kneelib.data.layout import discover
from kneelib.data.split import MIN_INNER_VAL_PER_GRADE, held_out_split, patients_across_splits, write_manifest
from kneelib.errors import KneelibError
from kneelib.evaluate.metrics import paired_difference_ci
from kneelib.pipeline.profiles import get_profile
from kneelib.pipeline.projection import Projection, SweepProgress, project_sweep, time_data, time_steps, trained_so_far
from kneelib.train import runtime
from kneelib.train.config import Runtime, TrainConfig
from kneelib.train.recipes import FAMILY_FIELDS, RECIPES, arch_family, recipe_fields


def test_held_out_split_on_the_real_crops(real_kl224: Path, tmp_path: Path) -> None:
    samples = discover(real_kl224)
    chosen = held_out_split(samples, source=real_kl224)
    counts = Counter(s.split for s in chosen)
    assert counts == {"train": 5056, "val": 722, "test": 826}  # train' + val' = official train (5,778)
    official_val = {s.path for s in samples if s.split == "val"}
    assert {s.path for s in chosen if s.split == "test"} == official_val  # held out, untouched
    assert not patients_across_splits([s for s in chosen if s.split != "test"])
    manifest = write_manifest(chosen, tmp_path / "manifest.csv", protocol="held-out")
    assert Counter(s.split for s in discover(manifest)) == counts  # a manifest kneelib reads back


def test_held_out_split_needs_train_and_val_and_enough_images(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "d", train_per_grade=2, val_per_grade=1)
    with pytest.raises(KneelibError, match=r"too few images per grade for a patient-grouped val' split"):
        held_out_split(discover(data), source=data)
    only_train = [s for s in discover(data) if s.split == "train"]
    with pytest.raises(KneelibError, match=r"^/x: no val split \(has train\)"):
        held_out_split(only_train, source="/x")
    assert MIN_INNER_VAL_PER_GRADE >= 2


def test_cpu_profile_bad_data_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_tiny_dataset(tmp_path / "tiny")
    out = tmp_path / "out"
    assert main(["reproduce", "--profile", "cpu", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"kneelib: error: {data}: too few images per grade")
    assert not out.exists()  # stopped before anything was written
    (data / "val").rename(tmp_path / "elsewhere")
    assert main(["reproduce", "--profile", "cpu", "--data", str(data), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [f"kneelib: error: {data}: no val split (has train); held-out "
                                                 "selection needs DIR/train/{0..4} and DIR/val/{0..4}"]
    assert captured.out == "" and not out.exists()  # nothing said about the data before the error
    (out / "kept").mkdir(parents=True)  # an existing output folder is never removed
    empty = tmp_path / "empty"
    (empty / "train" / "0").mkdir(parents=True)
    assert main(["reproduce", "--profile", "cpu", "--data", str(empty), "--out", str(out)]) == 2
    assert capsys.readouterr().err.count("kneelib: error:") == 1 and (out / "kept").is_dir()


def test_recipe_family_fields_apply_per_architecture() -> None:
    assert arch_family("se_densenet121") == arch_family("densenet121") == "densenet"
    assert arch_family("se_resnet50") == "resnet"
    for arch in ("resnet18", "densenet121", "se_densenet121"):
        expected = {**RECIPES["scratch"], **FAMILY_FIELDS["scratch"].get(arch_family(arch), {})}
        assert recipe_fields("scratch", arch) == expected
        config = TrainConfig.from_recipe("scratch", arch=arch)
        assert {k: getattr(config, k) for k in expected} == expected
    assert TrainConfig.from_recipe("scratch", arch="densenet121", lr=7e-4).lr == 7e-4  # explicit fields win
    assert recipe_fields("paper", "densenet121") == {}


def test_bf16_only_where_native_and_unpinned(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # a GPU with bf16
    assert runtime.autocast_dtype("fp32", cuda) is None and runtime.autocast_dtype("auto", cuda) is torch.bfloat16
    assert runtime.autocast_dtype("bf16", cpu) is torch.bfloat16
    monkeypatch.setattr(cpu_pin, "native_bf16", lambda: True)
    monkeypatch.delenv(cpu_pin.MARKER, raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert runtime.autocast_dtype("auto", cpu) is torch.bfloat16
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # pinned: the bit-exact fp32 path
    assert runtime.autocast_dtype("auto", cpu) is None
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(cpu_pin, "native_bf16", lambda: False)  # emulated bf16 would be slower
    assert runtime.autocast_dtype("auto", cpu) is None
    with pytest.raises(KneelibError, match="unknown precision"):
        runtime.autocast_dtype("fp16", cpu)
    with pytest.raises(KneelibError, match="precision must be one of"):
        Runtime(precision="half").validate()
    assert runtime.memory_format(cpu, "resnet18") == torch.contiguous_format
    assert runtime.memory_format(cpu, "resnet18", bf16=True) == torch.channels_last


def test_a_bf16_run_records_its_arithmetic(tmp_path: Path) -> None:
    from kneelib.train import train

    data = make_tiny_dataset(tmp_path / "d")
    config = TrainConfig(arch="resnet18", epochs=1, image_size=64, batch_size=4)
    run = train(config, runtime=Runtime(device="cpu", precision="bf16"), data_dir=data, out_dir=tmp_path / "run",
                progress=False, verbose=False).run_dir
    saved = json.loads((run / "config.json").read_text())
    assert saved["precision"] == "bf16" and saved["execution"]["arithmetic"] == "bf16 autocast"
    assert math.isfinite(float((run / "history.csv").read_text().splitlines()[1].split(",")[2]))


def test_projection_scales_timed_steps() -> None:
    train_s, eval_s = time_steps("resnet18", image_size=64, batch_size=4, steps=1)
    assert 0 < eval_s and 0 < train_s
    p = Projection({"a": 0.01, "b": 0.02}, {"a": 0.001, "b": 0.002}, {"train": 100, "val": 10, "test": 20},
                   epochs=3, runs_per_arch=2)
    assert p.epoch_seconds("a") == pytest.approx(100 * 0.01 + 10 * 0.001)
    assert p.run_seconds("b") == pytest.approx(3 * (2 + 0.02) + 20 * 0.002)
    assert p.total_seconds == pytest.approx(2 * (p.run_seconds("a") + p.run_seconds("b")))
    assert "projected training time: 0.3 min for 4 runs of 3 epochs" in p.describe()


def test_projection_of_a_resumed_sweep_counts_only_what_is_left(tmp_path: Path) -> None:
    for name, status in {"s21": {"finished": True, "epoch": 3}, "s42": {"finished": False, "epoch": 2},
                         "broken": None}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "status.json").write_text("{" if status is None else json.dumps(status))
    runs = [tmp_path / n for n in ("s21", "s42", "broken", "never-started")]
    assert trained_so_far(runs, epochs=3) == (1, 2)
    counts = {"train": 100, "val": 10, "test": 20}
    fresh = Projection({"a": 0.01}, {"a": 0.001}, counts, epochs=3, runs_per_arch=4)
    resumed = Projection({"a": 0.01}, {"a": 0.001}, counts, epochs=3, runs_per_arch=4, done={"a": (1, 2)})
    assert resumed.total_seconds == pytest.approx(fresh.total_seconds - fresh.run_seconds("a")
                                                  - 2 * fresh.epoch_seconds("a"))
    assert "for 3 runs of 3 epochs" in resumed.describe() and "1 finished earlier" in resumed.describe()
    assert "2 epochs of unfinished runs done" in resumed.describe() and "earlier" not in fresh.describe()
    # an architecture whose runs all finished is not timed and costs nothing
    finished = project_sweep(["resnet18"], counts, epochs=3, image_size=64, batch_size=4, runs_per_arch=2,
                             done={"resnet18": (2, 0)})
    assert finished.total_seconds == 0 and "for 0 runs" in finished.describe()


def test_projection_keeps_each_architectures_faster_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow minute of the shared machine inflates the architectures timed in it; a second round corrects it."""
    from kneelib.pipeline import projection as timing

    calls = []

    def fake(arch: str, **_: object) -> tuple[float, float]:
        calls.append(arch)
        slow = len(calls) <= 2  # the machine is slow while the first round times both architectures
        return (0.3, 0.03) if slow else (0.1, 0.01)

    monkeypatch.setattr(timing, "time_steps", fake)
    counts = {"train": 100, "val": 10, "test": 20}
    projection = project_sweep(["a", "b", "c"], counts, epochs=2, image_size=64, batch_size=4, runs_per_arch=1,
                               done={"c": (1, 0)})
    assert calls == ["a", "b"] * timing.TIMED_ROUNDS  # round-robin; c finished earlier and is not timed
    assert projection.train_seconds == {"a": 0.1, "b": 0.1, "c": 0.0} and projection.eval_seconds["a"] == 0.01
    assert f"from {timing.TIMED_ROUNDS} rounds of {timing.TIMED_STEPS} timed steps" in projection.describe()


def test_projection_counts_the_host_data_pipeline(tmp_path: Path) -> None:
    samples = [s for s in discover(make_tiny_dataset(tmp_path / "d")) if s.split == "train"]
    decode, augment, prepare = time_data(samples, "kl5", image_size=64, sample=4)
    assert decode > 0 and augment > 0 and prepare > 0
    counts = {"train": 100, "val": 10, "test": 20}
    bare = Projection({"a": 0.01}, {"a": 0.001}, counts, epochs=3, runs_per_arch=1)
    fed = Projection({"a": 0.01}, {"a": 0.001}, counts, epochs=3, runs_per_arch=1, data=(0.5, 0.2, 0.1))
    assert fed.epoch_seconds("a") - bare.epoch_seconds("a") == pytest.approx(100 * 0.2 + 10 * 0.1)
    assert fed.run_seconds("a") - bare.run_seconds("a") == pytest.approx(130 * 0.5 + 3 * 21 + 20 * 0.1)
    assert "and the data pipeline on a sample" in fed.describe() and "data pipeline" not in bare.describe()


def test_sweep_progress_counts_runs_and_weighted_epochs(tmp_path: Path) -> None:
    runs = {tmp_path / "cheap": 1.0, tmp_path / "dear": 3.0}
    (tmp_path / "cheap").mkdir()
    (tmp_path / "cheap" / "status.json").write_text(json.dumps({"finished": True, "epoch": 2}))
    stream = io.StringIO()
    with SweepProgress(runs, epochs=2, file=stream, disable=False, interval=0.05) as progress:
        assert progress.bar.n == 2.0 and progress.bar.total == 8.0
        (tmp_path / "dear").mkdir()
        (tmp_path / "dear" / "status.json").write_text(json.dumps({"finished": False, "epoch": 1}))
        progress._refresh()
        assert progress.bar.n == 5.0
    assert "runs 1/2, epochs 3/4" in stream.getvalue()


def test_paired_difference_ci() -> None:
    rng = np.random.default_rng(1)
    a = (rng.random(400) < 0.5).astype(float)
    same = paired_difference_ci(a, a)
    assert same["diff"] == 0 and same["lo"] == 0 and same["hi"] == 0
    better = a.copy()
    better[np.flatnonzero(a == 0)[:60]] = 1  # B right on 60 more of 400 images
    gain = paired_difference_ci(a, better)
    assert gain["diff"] == pytest.approx(0.15) and 0.10 < gain["lo"] < 0.15 < gain["hi"] < 0.20
    assert gain["p"] < 0.01
    with pytest.raises(ValueError):
        paired_difference_ci(a, a[:10])


def test_se_gain_table() -> None:
    rows = [{"scheme": "kl5", "arch": "densenet121", "n": 826, "seeds": 1, "plain_accuracy": 0.5,
             "se_accuracy": 0.52, "diff": 0.02, "lo": -0.01, "hi": 0.05, "p": 0.2, "images_lo": 0.0,
             "images_hi": 0.04}]
    table = report.se_gain_table(rows)
    row = table.iloc[0]
    assert table.index[0] == "DenseNet-121" and row["SE gain pp"] == pytest.approx(2.0)
    assert row["95% CI, seeds and images"] == "-1.0 to +5.0" and row["95% CI, images"] == "+0.0 to +4.0"
    assert row["paper gain pp"] == pytest.approx(69.77 - 66.73)  # Table 4
    assert isinstance(report.format_table(table), pd.DataFrame | str)


def test_cpu_profile_settings() -> None:
    cpu = get_profile("cpu")
    assert (cpu.recipe, cpu.weights, cpu.selection, cpu.project, cpu.jobs) == ("scratch", "none", "held-out", True, 1)
    assert len(cpu.archs) * len(cpu.schemes) == 16 and cpu.seeds == (21, 42, 84)


def test_thread_governor_follows_what_other_processes_leave_free(monkeypatch: pytest.MonkeyPatch) -> None:
    from kneelib.train import threads as governed

    clock = iter([0.0, 1.0, 10.0, 20.0, 30.0]).__next__
    samples = iter([(0.0, 0.0), (15.0, 5.0), (35.0, 15.0), (45.0, 25.0)]).__next__  # (all busy s, own busy s)
    set_to: list[int] = []
    monkeypatch.setattr(governed.torch, "set_num_threads", set_to.append)
    lines: list[str] = []
    gov = governed.ThreadGovernor(2, interval=5.0, clock=clock, sample=samples, cpus=2, log=lines.append)
    assert gov.step() == 2  # 1 s after the start: too early to look
    assert gov.step() == 1  # 10 s: others used 10 of 20 core-seconds (1 core busy) -> 1 thread
    assert gov.step() == 1 and set_to == [1]  # others still use one core: no change
    assert gov.step() == 2 and set_to == [1, 2]  # others idle again -> back to the starting count
    assert lines[0] == "threads 2 -> 1: other processes used 1.0 of 2 cores"
    assert governed.ThreadGovernor(1, cpus=2).step() == 1  # a single-threaded run is never changed
    assert governed.cpu_times() is None or all(t >= 0 for t in governed.cpu_times())
