"""ONNX / TorchScript export of runs and ensembles (kneelib.serve.export) against the PyTorch Predictor."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from fakes import make_run

from kneelib.errors import KneelibError
from kneelib.serve.export import ExportedModel, export_runs, sidecar_path
from kneelib.serve.predict import Predictor

TOL = 1e-4


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    r18 = make_run(root, "r18", arch="resnet18", seed=1)
    return {"single": [r18], "ensemble": [r18, make_run(root, "se18", arch="se_resnet18", seed=2)]}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list:
    """Random gray images of several sizes, and one PNG path."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((64, 64), (80, 70), (50, 90))]
    path = tmp_path_factory.mktemp("img") / "knee.png"
    cv2.imwrite(str(path), rng.integers(0, 256, (100, 100), dtype=np.uint8))
    return [*arrays, path]


@pytest.fixture(scope="module")
def exported(runs: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Each (members, format) exported once, lazily."""
    root = tmp_path_factory.mktemp("export")

    class Lazy(dict):
        def __missing__(self, key: tuple[str, str]) -> Path:
            members, fmt = key
            out = root / f"{members}.{'onnx' if fmt == 'onnx' else 'pt'}"
            export_runs(runs[members], fmt=fmt, out=out)
            self[key] = out
            return out

    return Lazy()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("members", ["single", "ensemble"])
def test_exported_model_matches_predictor(runs: dict, images: list, exported: dict, members: str,
                                          fmt: str) -> None:
    out = exported[members, fmt]
    model = ExportedModel.load(out)
    expected = Predictor(runs[members], device="cpu").probabilities(images)
    for batch_size in (1, 3):  # dynamic batch axis
        probs = model.probabilities(images, batch_size=batch_size)
        assert probs.shape == (len(images), 5)
        assert np.abs(probs - expected).max() <= TOL
    assert model.class_names == ("0", "1", "2", "3", "4")
    assert model.format == fmt and model.image_size == 64 and model.clahe is False


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_sidecar_fields(runs: dict, exported: dict, fmt: str) -> None:
    import hashlib

    out = exported["ensemble", fmt]
    meta = json.loads(sidecar_path(out).read_text())
    assert sidecar_path(out) == Path(f"{out}.json")
    assert meta["format"] == fmt and meta["model_file"] == out.name
    assert meta["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert meta["classes"] == ["0", "1", "2", "3", "4"] and meta["scheme"] == "kl5"
    assert meta["image_size"] == 64 and meta["clahe"] is False
    assert meta["normalization"] == {"mean": 0.5, "std": 0.5}
    assert [(m["name"], m["arch"]) for m in meta["members"]] == [("r18", "resnet18"), ("se18", "se_resnet18")]
    assert all(Path(m["checkpoint"]).is_file() for m in meta["members"])
    assert meta["kneelib_version"] and meta["max_abs_logit_diff"] <= 1e-3
    assert meta["opset"] == (20 if fmt == "onnx" else None)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_corrupt_or_mismatched_files_are_kneelib_errors(exported: dict, tmp_path: Path, fmt: str) -> None:
    src = exported["single", fmt]
    out = tmp_path / src.name
    shutil.copy(src, out)
    shutil.copy(sidecar_path(src), sidecar_path(out))
    ExportedModel.load(out)  # the copy itself is fine

    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])  # truncated: the sha256 no longer matches
    with pytest.raises(KneelibError, match="sha256"):
        ExportedModel.load(out)

    import hashlib

    meta = json.loads(sidecar_path(out).read_text())
    meta["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()  # a sidecar that vouches for garbage
    sidecar_path(out).write_text(json.dumps(meta))
    with pytest.raises(KneelibError, match=f"cannot load the {'ONNX' if fmt == 'onnx' else 'TorchScript'}"):
        ExportedModel.load(out)

    sidecar_path(out).unlink()
    with pytest.raises(KneelibError, match="sidecar not found"):
        ExportedModel.load(out)
    with pytest.raises(KneelibError, match="exported model not found"):
        ExportedModel.load(tmp_path / "missing.onnx")


def test_sidecar_that_does_not_fit_is_an_error(exported: dict, tmp_path: Path) -> None:
    src = exported["single", "torchscript"]
    out = tmp_path / src.name
    shutil.copy(src, out)
    good = json.loads(sidecar_path(src).read_text())
    for change, message in (
        ({"classes": ["a", "b", "c", "d", "e"]}, "do not match scheme"),
        ({"normalization": {"mean": 0.485, "std": 0.229}}, "normalization"),
        ({"format": "tflite"}, "field .format. must be one of onnx, torchscript"),
        ({"sha256": None}, "sha256"),
    ):
        sidecar_path(out).write_text(json.dumps({**good, **change}))
        with pytest.raises(KneelibError, match=message):
            ExportedModel.load(out)
    sidecar_path(out).write_text(json.dumps({k: v for k, v in good.items() if k != "members"}))
    with pytest.raises(KneelibError, match="lacks members"):
        ExportedModel.load(out)
    sidecar_path(out).write_text("{not json")
    with pytest.raises(KneelibError, match="JSON"):
        ExportedModel.load(out)


def test_bad_export_requests(runs: dict, tmp_path: Path) -> None:
    with pytest.raises(KneelibError, match="unknown export format"):
        export_runs(runs["single"], fmt="tflite", out=tmp_path / "m.tflite")
    other = make_run(tmp_path, "big", arch="resnet18", image_size=96)
    with pytest.raises(KneelibError, match="preprocessing differs"):
        export_runs([runs["single"][0], other], fmt="torchscript", out=tmp_path / "m.pt")
    with pytest.raises(KneelibError, match="is a directory"):
        export_runs(runs["single"], fmt="torchscript", out=tmp_path)
    with pytest.raises(KneelibError, match="run directory not found"):
        export_runs([tmp_path / "nope"], fmt="onnx", out=tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big"]  # nothing half-written


def test_cli_export(runs: dict, images: list, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from kneelib.cli import export as cli_export

    parser = argparse.ArgumentParser()
    cli_export.register(parser.add_subparsers())
    out = tmp_path / "kl.pt"
    args = parser.parse_args(["export", *map(str, runs["ensemble"]), "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"model:   {out} (torchscript" in printed and f"sidecar: {out}.json" in printed
    assert "r18 (resnet18), se18 (se_resnet18)" in printed
    expected = Predictor(runs["ensemble"], device="cpu").probabilities(images)
    assert np.abs(ExportedModel.load(out).probabilities(images) - expected).max() <= TOL
    args = parser.parse_args(["export", str(runs["single"][0]), "--format", "torchscript", "--opset", "17",
                              "--out", str(tmp_path / "x.pt")])
    with pytest.raises(KneelibError, match="--opset"):
        args.func(args)


@pytest.mark.slow
def test_densenet121_onnx_export(tmp_path: Path, images: list) -> None:
    run = make_run(tmp_path, "dn", arch="densenet121", seed=3)
    out = tmp_path / "dn.onnx"
    export_runs([run], fmt="onnx", out=out)
    expected = Predictor([run], device="cpu").probabilities(images)
    assert np.abs(ExportedModel.load(out).probabilities(images) - expected).max() <= TOL
