"""Training loop: run-directory files, weights-only checkpoints, resume, atomic writes, determinism, CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from fakes import make_tiny_dataset

from kneelib.cli import main
from kneelib.data.dataset import DecodeCache
from kneelib.data.layout import discover, select_split
from kneelib.errors import KneelibError
from kneelib.models.registry import build_model
from kneelib.train import checkpoint as ckpt
from kneelib.train import Runtime, TrainResult, runtime, train
from kneelib.train.config import TrainConfig, config_mismatch, limit_samples

#: Tiny and fast: 64 px, 10 train / 5 val images, batch 4; lr halves every epoch (tests the scheduler).
TINY = dict(arch="resnet18", epochs=3, image_size=64, batch_size=4, lr_step=1, lr_gamma=0.5,
            seed=7)
CPU = Runtime(device="cpu")
CONTRACT_KEYS = {"arch", "scheme", "class_names", "num_classes", "image_size", "clahe", "normalize",
                 "seed", "epochs", "batch_size", "lr", "weight_decay", "lr_step", "lr_gamma", "weights",
                 "data_dir", "data_hash", "versions", "git_commit", "device", "limit", "split_protocol",
                 "threads"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="module")
def cache() -> DecodeCache:
    return DecodeCache()


@pytest.fixture(scope="module")
def straight(data: Path, cache: DecodeCache, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 3-epoch run, uninterrupted."""
    out = tmp_path_factory.mktemp("runs") / "straight"
    return fit(TrainConfig(**TINY), data_dir=data, out_dir=out, progress=False, verbose=False,
                 cache=cache)


def fit(config: TrainConfig, runtime: Runtime = CPU, **kwargs: object) -> Path:
    """``train`` on the CPU; the run directory."""
    return train(config, runtime=runtime, **kwargs).run_dir


def history_rows(run: Path) -> list[dict[str, str]]:
    with (run / ckpt.HISTORY).open(newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


def test_run_dir_has_every_file(straight: Path) -> None:
    assert {p.name for p in straight.iterdir()} == {"config.json", "history.csv", "best.pt", "last.pt",
                                                   "status.json"}
    config = json.loads((straight / "config.json").read_text())
    assert CONTRACT_KEYS <= set(config)
    assert config["class_names"] == ["0", "1", "2", "3", "4"] and config["num_classes"] == 5
    assert config["normalize"] == {"mean": 0.5, "std": 0.5}
    assert {"torch", "torchvision", "kneelib", "python"} <= set(config["versions"])
    assert len(config["data_hash"]) == 64 and config["counts"] == {"train": 10, "val": 5}
    with (straight / "history.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["lr"]) for r in rows] == [1e-3, 5e-4, 2.5e-4]
    status = json.loads((straight / "status.json").read_text())
    assert status["finished"] is True and status["epoch"] == 3
    best_acc = max(float(r["val_acc"]) for r in rows)
    first_best = next(int(r["epoch"]) for r in rows if float(r["val_acc"]) == best_acc)
    assert status["best_val_acc"] == best_acc and status["best_epoch"] == first_best  # ties: earlier


def test_checkpoints_load_weights_only(straight: Path) -> None:
    best = torch.load(straight / "best.pt", weights_only=True)
    model = build_model("resnet18", num_classes=5)
    model.load_state_dict(best)
    last = torch.load(straight / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "best_val_acc", "best_epoch"} <= set(last)
    assert last["epoch"] == 3
    runtime.set_rng_state(last["rng"])


def test_resume_matches_uninterrupted_run(straight: Path, data: Path, cache: DecodeCache,
                                          tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    fit(TrainConfig(**TINY), data_dir=data, out_dir=out, progress=False, verbose=False, cache=cache,
          stop_after_epoch=1)
    assert json.loads((out / "status.json").read_text())["finished"] is False
    assert len(history_rows(out)) == 1
    torch.manual_seed(12345)  # a different global RNG state must not matter
    fit(TrainConfig(**TINY), data_dir=data, out_dir=out, resume=True, progress=False, verbose=False,
          cache=cache)
    assert history_rows(out) == history_rows(straight)
    a = torch.load(straight / "best.pt", weights_only=True)
    b = torch.load(out / "best.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la = torch.load(straight / "last.pt", weights_only=True)["model"]
    lb = torch.load(out / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(la[k], lb[k]) for k in la)


def test_train_returns_a_result_and_writes_config_once(data: Path, cache: DecodeCache, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out, two = tmp_path / "r", TrainConfig(**{**TINY, "epochs": 2})
    written: list[str] = []
    real_write = ckpt.write_json

    def counting(path: Path, data: dict) -> Path:
        written.append(Path(path).name)
        return real_write(path, data)

    monkeypatch.setattr(ckpt, "write_json", counting)
    first = train(two, runtime=CPU, data_dir=data, out_dir=out, progress=False, verbose=False, cache=cache,
                  stop_after_epoch=1)
    assert isinstance(first, TrainResult) and first.run_dir == out and Path(first) == out
    assert (first.epochs, first.finished) == (1, False)
    done = train(two, runtime=CPU, data_dir=data, out_dir=out, resume=True, progress=False, verbose=False,
                 cache=cache)
    status = json.loads((out / "status.json").read_text())
    assert (done.epochs, done.finished, done.best_epoch, done.best_val_acc) == (
        2, True, status["best_epoch"], status["best_val_acc"])
    assert written.count("config.json") == 1  # after the first epoch, when the execution path is known
    assert json.loads((out / "config.json").read_text())["execution"]["step"] == "eager"


def test_a_run_stopped_in_its_first_epoch_resumes(data: Path, cache: DecodeCache, tmp_path: Path) -> None:
    out = tmp_path / "early"
    out.mkdir()
    (out / "status.json").write_text('{"finished": false, "epoch": 0, "best_epoch": null, "best_val_acc": null}')
    with pytest.raises(KneelibError, match="unfinished run; pass --resume"):
        fit(TrainConfig(**{**TINY, "epochs": 1}), data_dir=data, out_dir=out, progress=False, verbose=False,
            cache=cache)
    fit(TrainConfig(**{**TINY, "epochs": 1}), data_dir=data, out_dir=out, resume=True, progress=False,
        verbose=False, cache=cache)
    assert json.loads((out / "status.json").read_text())["finished"] is True and (out / "config.json").is_file()


def test_same_seed_same_history_other_seed_differs(straight: Path, data: Path, cache: DecodeCache,
                                                   tmp_path: Path) -> None:
    one = fit(TrainConfig(**{**TINY, "epochs": 1}), data_dir=data, out_dir=tmp_path / "a",
                progress=False, verbose=False, cache=cache)
    assert history_rows(one) == history_rows(straight)[:1]
    other = fit(TrainConfig(**{**TINY, "epochs": 1, "seed": 8}), data_dir=data,
                  out_dir=tmp_path / "b", progress=False, verbose=False, cache=cache)
    assert history_rows(other) != history_rows(one)


def test_workers_do_not_change_results(straight: Path, data: Path, cache: DecodeCache,
                                       tmp_path: Path) -> None:
    run = fit(TrainConfig(**{**TINY, "epochs": 1}), Runtime(device="cpu", workers=2), data_dir=data,
                out_dir=tmp_path / "w", progress=False, verbose=False, cache=cache)
    assert history_rows(run) == history_rows(straight)[:1]


def test_initial_weights_from_a_checkpoint(straight: Path, data: Path, cache: DecodeCache,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(straight.parent)
    config = TrainConfig(**{**TINY, "epochs": 1, "limit": 5, "weights": "straight/best.pt"})
    assert config.weights == str(straight / "best.pt")
    run = fit(config, data_dir=data, out_dir=tmp_path / "ft", progress=False, verbose=False,
                cache=cache)
    assert json.loads((run / "config.json").read_text())["weights"] == str(straight / "best.pt")
    assert TrainConfig(arch="resnet18", weights="none").weights is None
    assert TrainConfig(arch="resnet18", weights="ImageNet").weights == "imagenet"


def test_finished_run_is_never_clobbered(straight: Path, data: Path, cache: DecodeCache) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in straight.iterdir()}
    lines: list[str] = []
    fit(TrainConfig(**TINY), data_dir=data, out_dir=straight, resume=True, progress=False,
          cache=cache, log=lines.append)
    assert len(lines) == 1 and "already finished" in lines[0]
    with pytest.raises(KneelibError, match="finished run"):
        fit(TrainConfig(**TINY), data_dir=data, out_dir=straight, progress=False, verbose=False,
              cache=cache)
    with pytest.raises(KneelibError, match="different configuration.*lr"):
        fit(TrainConfig(**{**TINY, "lr": 0.01}), data_dir=data, out_dir=straight, resume=True,
              progress=False, verbose=False, cache=cache)
    assert {p.name: p.stat().st_mtime_ns for p in straight.iterdir()} == before


def test_sweep_runs_drop_last_checkpoint_once_finished(straight: Path, data: Path, cache: DecodeCache,
                                                       tmp_path: Path) -> None:
    """keep_last=False: last.pt stays while the run can resume, and goes once it has finished."""
    out = tmp_path / "sweep"
    kwargs = {"data_dir": data, "out_dir": out, "progress": False, "verbose": False, "cache": cache,
              "keep_last": False}
    fit(TrainConfig(**TINY), **kwargs, stop_after_epoch=1)
    assert (out / "last.pt").is_file()
    fit(TrainConfig(**TINY), **kwargs, resume=True)
    assert {p.name for p in out.iterdir()} == {"config.json", "history.csv", "best.pt", "status.json"}
    assert history_rows(out) == history_rows(straight)
    a, b = (torch.load(r / "best.pt", weights_only=True) for r in (straight, out))
    assert all(torch.equal(a[k], b[k]) for k in a)
    old = tmp_path / "old"  # a finished run from before: its last.pt goes when the sweep passes by again
    shutil.copytree(straight, old)
    fit(TrainConfig(**TINY), **{**kwargs, "out_dir": old}, resume=True)
    assert {p.name for p in old.iterdir()} == {p.name for p in out.iterdir()}


def test_unfinished_run_needs_resume(data: Path, cache: DecodeCache, tmp_path: Path) -> None:
    out = tmp_path / "run"
    fit(TrainConfig(**TINY), data_dir=data, out_dir=out, progress=False, verbose=False, cache=cache,
          stop_after_epoch=1)
    with pytest.raises(KneelibError, match="--resume"):
        fit(TrainConfig(**TINY), data_dir=data, out_dir=out, progress=False, verbose=False, cache=cache)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(KneelibError, match="not empty"):
        fit(TrainConfig(**TINY), data_dir=data, out_dir=tmp_path / "other", progress=False,
              verbose=False, cache=cache)


def test_killed_checkpoint_write_keeps_previous(data: Path, cache: DecodeCache, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    two = TrainConfig(**{**TINY, "epochs": 2})
    fit(two, data_dir=data, out_dir=out, progress=False, verbose=False, cache=cache,
          stop_after_epoch=1)
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        if "epoch" in obj:  # last.pt: write part of it, then die
            Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        fit(two, data_dir=data, out_dir=out, resume=True, progress=False,
              verbose=False, cache=cache)
    monkeypatch.setattr(torch, "save", real_save)
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == 1
    assert leftovers(out) == []
    (out / ".last.pt.k1ll3d.tmp").write_bytes(b"left by a SIGKILL")  # atomic_path could not clean up
    # the run resumes from the intact checkpoint
    fit(two, data_dir=data, out_dir=out, resume=True, progress=False, verbose=False,
          cache=cache)
    assert json.loads((out / "status.json").read_text())["finished"] is True
    assert leftovers(out) == []


def test_limit_is_stratified_and_deterministic(data: Path) -> None:
    samples = select_split(discover(data), "train")
    five = limit_samples(samples, 5)
    assert five == limit_samples(samples, 5) and len(five) == 5
    assert sorted(s.grade for s in five) == [0, 1, 2, 3, 4]
    assert limit_samples(samples, None) == samples and limit_samples(samples, 99) == samples


def test_config_mismatch_ignores_runtime_fields_but_precision() -> None:
    a = {**TrainConfig(**TINY).to_dict(), **CPU.to_dict(), "data_hash": "x"}
    b = {**TrainConfig(**TINY).to_dict(), **Runtime(device="cuda", workers=3, threads=2).to_dict(),
         "data_hash": "x"}
    assert config_mismatch(a, b) == []
    assert config_mismatch(a, {**b, "data_hash": "y", "seed": 1, "precision": "bf16"}) == [
        "seed: 7 → 1", "precision: 'auto' → 'bf16'", "data_hash: 'x' → 'y'"]


def test_rng_state_round_trips_weights_only(tmp_path: Path) -> None:
    runtime.seed_everything(3)
    state = runtime.rng_state()
    ckpt.save_checkpoint({"rng": state}, tmp_path / "r.pt")
    import random

    import numpy as np

    expected = (torch.rand(2), np.random.rand(2), random.random())
    runtime.set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    assert torch.equal(torch.rand(2), expected[0])
    assert np.array_equal(np.random.rand(2), expected[1]) and random.random() == expected[2]


@pytest.mark.parametrize("bad", [{"arch": "resnet7"}, {"epochs": 0}, {"scheme": "kl9"},
                                 {"batch_size": 1}, {"image_size": 32}])
def test_bad_config_is_a_kneelib_error(bad: dict) -> None:
    with pytest.raises(KneelibError):
        TrainConfig(**{**TINY, **bad}).validate()


def test_cli_train(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    torch.set_num_threads(2)
    try:
        rc = main(["train", "--data", str(data), "--arch", "resnet18", "--scheme", "kl4", "--seed", "3",
                   "--out", str(out), "--epochs", "1", "--image-size", "64", "--batch-size", "4",
                   "--limit", "6", "--device", "cpu", "--threads", "1"])
        assert torch.get_num_threads() == 2  # --threads applies to the run only
    finally:
        torch.set_num_threads(1)
    assert rc == 0
    text = capsys.readouterr().out
    assert "epoch 1/1 lr 0.001 train loss" in text and "| val loss" in text
    config = json.loads((out / "config.json").read_text())
    assert config["scheme"] == "kl4" and config["class_names"] == ["0-1", "2", "3", "4"]
    assert config["limit"] == 6 and config["counts"] == {"train": 6, "val": 5}
    assert config["threads"] == 1 and config["device"] == "cpu" and config["workers"] == 0
    assert json.loads((out / "status.json").read_text())["finished"] is True
    rc = main(["train", "--data", str(data), "--arch", "resnet18", "--scheme", "kl4", "--seed", "3",
               "--out", str(out), "--epochs", "1", "--image-size", "64", "--batch-size", "4",
               "--limit", "6", "--device", "cpu", "--resume", "--quiet"])  # other threads: fine
    assert rc == 0


@pytest.mark.parametrize("case", ["missing", "no_val", "arch", "scheme"])
def test_cli_errors_are_one_line(case: str, data: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    source = data
    arch, scheme = "resnet18", "kl5"
    if case == "missing":
        source = tmp_path / "nowhere"
    elif case == "no_val":
        source = make_tiny_dataset(tmp_path / "d", val_per_grade=0)
    elif case == "arch":
        arch = "resnet7"
    else:
        scheme = "kl9"
    rc = main(["train", "--data", str(source), "--arch", arch, "--scheme", scheme,
               "--out", str(tmp_path / "run"), "--epochs", "1", "--image-size", "64", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("kneelib: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_atomic_writes_get_the_usual_file_mode(tmp_path: Path) -> None:
    """Files written through a temp file are not left private (mkstemp's 0600): they follow the umask."""
    import os

    from kneelib.atomic import write_text

    mask = os.umask(0o022)
    try:
        path = write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644


SCRATCH_TINY = {k: v for k, v in TINY.items() if k not in ("lr_step", "lr_gamma")}


def test_recipes_set_their_fields_and_overrides_win() -> None:
    paper = TrainConfig.from_recipe("paper", arch="resnet18")
    assert paper == TrainConfig(arch="resnet18")  # the paper's recipe is the defaults
    scratch = TrainConfig.from_recipe("scratch", arch="resnet18", lr=5e-4).validate()
    assert (scratch.recipe, scratch.optimizer, scratch.schedule, scratch.lr) == ("scratch", "adamw", "cosine", 5e-4)
    with pytest.raises(KneelibError, match="unknown recipe 'fast'; choose from paper, scratch"):
        TrainConfig.from_recipe("fast", arch="resnet18")
    for bad in ({"label_smoothing": 1.0}, {"ema_decay": -0.1}, {"optimizer": "sgd"}, {"schedule": "linear"},
                {"warmup_epochs": -1}):
        with pytest.raises(KneelibError):
            TrainConfig.from_recipe("scratch", **{**SCRATCH_TINY, **bad}).validate()


def test_scratch_recipe_resumes_exactly(data: Path, cache: DecodeCache, tmp_path: Path) -> None:
    """Per-batch schedule, weight EMA and balanced sampling (options beside the recipe) survive a kill."""
    config = TrainConfig.from_recipe("scratch", **SCRATCH_TINY, ema_decay=0.999, balanced=True, label_smoothing=0.1)
    straight = fit(config, data_dir=data, out_dir=tmp_path / "a", progress=False, verbose=False, cache=cache)
    out = tmp_path / "b"
    fit(config, data_dir=data, out_dir=out, progress=False, verbose=False, cache=cache, stop_after_epoch=1)
    fit(config, data_dir=data, out_dir=out, resume=True, progress=False, verbose=False, cache=cache)
    assert history_rows(out) == history_rows(straight)
    a, b = (torch.load(r / "best.pt", weights_only=True) for r in (straight, out))
    assert all(torch.equal(a[k], b[k]) for k in a)
    lrs = [float(row["lr"]) for row in history_rows(straight)]
    assert lrs[0] < lrs[1] and lrs[2] < lrs[1]  # warm-up during epoch 1, then cosine decay
    assert "ema" in torch.load(straight / "last.pt", weights_only=True)
    saved = json.loads((straight / "config.json").read_text())
    assert saved["recipe"] == "scratch" and saved["balanced"] is True


def test_a_run_of_a_removed_option_does_not_resume() -> None:
    """``prior_bias`` (removed): a run trained with it differs from any run now; one without it resumes."""
    now = {**TrainConfig(**TINY).to_dict(), **CPU.to_dict()}
    assert config_mismatch({**now, "prior_bias": False}, now) == []
    assert config_mismatch({**now, "prior_bias": True}, now) == ["prior_bias: True → False"]


def test_runs_from_before_the_recipe_fields_still_resume() -> None:
    old = TrainConfig(**TINY).to_dict()
    for key in ("recipe", "optimizer", "schedule", "warmup_epochs", "label_smoothing", "ema_decay", "balanced"):
        old.pop(key)
    assert config_mismatch(old, TrainConfig(**TINY).to_dict()) == []
    assert config_mismatch(old, TrainConfig.from_recipe("scratch", **SCRATCH_TINY).to_dict())


def test_cli_recipe(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--data", str(data), "--arch", "resnet18", "--epochs", "1", "--image-size", "64",
            "--batch-size", "4", "--limit", "6", "--device", "cpu", "--threads", "1"]
    assert main([*args, "--recipe", "fast", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err == "kneelib: error: unknown recipe 'fast'; choose from paper, scratch\n"
    assert not (tmp_path / "x").exists()
    assert main([*args, "--recipe", "scratch", "--lr", "-1", "--out", str(tmp_path / "y")]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "y").exists()
    assert main([*args, "--out", str(tmp_path / "paper")]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert notes == ["kneelib: note: the paper's recipe assumes ImageNet weights; from random weights use "
                     "--recipe scratch"]
    assert main([*args, "--recipe", "scratch", "--out", str(tmp_path / "scratch")]) == 0
    assert "note:" not in capsys.readouterr().err
    assert json.loads((tmp_path / "scratch" / "config.json").read_text())["optimizer"] == "adamw"
