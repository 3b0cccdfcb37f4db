"""`kneelib reproduce` on any part of the grid (issue 29, 12): the grid and its settings are checked before any
work, and a sub-grid runs to the end, the notebooks that need a model outside it saying what they skip."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from kneelib.cli import main
from kneelib.pipeline import get_profile, reproduce

reproduce_module = importlib.import_module("kneelib.pipeline.reproduce")  # the package's `reproduce` is the function


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the sweep gets as far as drawing data or starting a notebook."""
    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sweep started its work before the settings were checked")

    monkeypatch.setattr(reproduce_module, "_sweep", started)


BAD_SETTINGS = {
    "arch": (["--archs", "resnet18", "resnet7"], "--archs: unknown architecture 'resnet7'"),
    "epochs": (["--epochs", "0"], "--epochs: must be at least 1"),
    "image size": (["--image-size", "7"], "--image-size: must lie in"),
    "split": (["--split", "foo"], "--split: unknown split 'foo'"),
    "device": (["--device", "tpu"], "--device: unknown device 'tpu'"),
    "jobs": (["--jobs", "0"], "--jobs: must be at least 1"),
    "seed twice": (["--seeds", "21", "21"], "--seeds: given more than once"),
    "negative seed": (["--seeds", "-1"], "--seeds: seeds are integers"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_settings_stop_before_any_work(case: str, tmp_path: Path, no_work: None,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    argv, message = BAD_SETTINGS[case]
    rc = main(["reproduce", "--out", str(tmp_path / "out"), *argv])
    out, err = capsys.readouterr()
    assert rc == 2 and err.startswith(f"kneelib: error: {message}") and err.count("\n") == 1, err
    assert out == "" and not (tmp_path / "out").exists()


def test_data_that_is_a_file_is_named_so(tmp_path: Path, no_work: None, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.csv"
    data.write_text("split,grade,file\n")
    rc = main(["reproduce", "--out", str(tmp_path / "out"), "--data", str(data)])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"kneelib: error: {data}: not a directory; --data takes a data directory " \
        "({train,val,test}/{0..4})\n", err
    rc = main(["reproduce", "--out", str(tmp_path / "out"), "--data", str(tmp_path / "nowhere")])
    assert rc == 2 and "data directory not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_se_model_of_02_comes_from_the_grid(tmp_path: Path) -> None:
    from kneelib.pipeline.notebooks import notebook_parameters
    from kneelib.pipeline.profiles import Layout

    def run_dir(**grid: object) -> str:
        params = notebook_parameters(get_profile("smoke", **grid), Layout(tmp_path), tmp_path, device="cpu",
                                     real_data_dir=None)
        return params["02_se_blocks"]["run_dir"]

    assert run_dir().endswith("runs/se_densenet121_kl4_s21")  # the full grid: as before
    assert run_dir(archs=["resnet18", "se_resnet18"], schemes=["kl5"], seeds=[7]).endswith("runs/se_resnet18_kl5_s7")
    assert run_dir(archs=["resnet18"]) == ""


@pytest.mark.slow
def test_a_sub_grid_without_se_models_runs_to_the_end(tmp_path: Path) -> None:
    """One plain model, one scheme, one seed (about 1.5 min on 2 cores): every notebook runs; 02_se_blocks says
    it skips the excitations."""
    profile = get_profile("smoke", archs=["resnet18"], schemes=["kl5"], seeds=[21], epochs=1, synth_per_grade=8,
                          synth_bilateral=1)
    lines: list[str] = []
    layout = reproduce(profile, out=tmp_path / "out", device="cpu", log=lines.append)
    assert any(line.startswith("reproduce (smoke) finished") for line in lines), lines
    assert lines[-1] == "trained numbers: not compared with the smoke reference (another grid or settings)"
    for name in ("01_data", "02_se_blocks", "04_ensemble", "05_results", "06_predict"):
        assert (layout.notebooks / f"{name}.ipynb").is_file(), name
    se = json.loads((layout.notebooks / "02_se_blocks.ipynb").read_text())
    printed = "".join("".join(o.get("text", "")) for c in se["cells"] for o in c.get("outputs", []))
    assert "No SE model in this sweep's grid: the excitations are skipped." in printed
    assert (layout.tables / "table4.csv").is_file() and not (layout.figures / "se_excitations.png").exists()
