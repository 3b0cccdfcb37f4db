"""Run directories under hostile conditions: two trainings on one directory (the lock), run and export files
with wrong types or values (validated on read, the error naming the file and the field)."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
from fakes import make_tiny_dataset

from kneelib.cli import main

TRAIN = ["--arch", "resnet18", "--scheme", "kl5", "--epochs", "1", "--image-size", "64", "--batch-size", "4",
         "--limit", "6", "--device", "cpu", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


def one_error_line(err: str) -> str:
    """The stderr of a clean failure: exactly one ``kneelib: error:`` line, no traceback."""
    assert err.startswith("kneelib: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_second_training_on_a_locked_run_dir_stops(data: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """While one process trains in RUN_DIR (it holds RUN_DIR/.lock), another `train` there stops and names it."""
    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"pid 4242 on otherhost\n")
    try:
        rc = main(["train", "--data", str(data), "--seed", "2", "--out", str(out), *TRAIN])
    finally:
        os.close(fd)
    err = one_error_line(capsys.readouterr().err)
    assert rc == 2 and "pid 4242 on otherhost" in err and str(out) in err
    assert not (out / "config.json").exists()


def test_lock_is_released_after_training(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A finished training leaves no lock file; a failed one on a fresh --out leaves no directory."""
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--seed", "1", "--out", str(out), *TRAIN]) == 0
    assert not (out / ".lock").exists() and (out / "config.json").is_file()
    assert main(["train", "--data", str(data), "--seed", "1", "--out", str(out), "--resume", *TRAIN]) == 0
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--seed", "1", "--out", str(tmp_path / "x"),
                 *TRAIN]) == 2
    assert not (tmp_path / "x").exists()


#: config.json fields with a wrong type or value (the run is otherwise fine); each names the field.
BAD_CONFIGS = {
    "image_size": "sixty-four", "class_names": 5, "arch": 7, "scheme": ["kl5"], "clahe": "yes",
    "num_classes": "five", "normalize": [0.5, 0.5],
}
BAD_VALUES = {"arch": "resnet7", "scheme": "kl9", "image_size": 0, "num_classes": 4, "class_names": ["a", "b"]}


@pytest.fixture(scope="module")
def crop(data: Path) -> Path:
    return next((data / "val").rglob("*.png"))


def broken_run(root: Path, field: str, value: object) -> Path:
    from fakes import make_run

    run = make_run(root, f"run_{field}")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, field: value}))
    return run


@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
@pytest.mark.parametrize(("field", "value"), [*BAD_CONFIGS.items(), *BAD_VALUES.items()],
                         ids=[*(f"type-{k}" for k in BAD_CONFIGS), *(f"value-{k}" for k in BAD_VALUES)])
def test_run_config_is_validated_naming_file_and_field(command: str, field: str, value: object, data: Path,
                                                       crop: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = broken_run(tmp_path, field, value)
    argv = {"evaluate": ["evaluate", str(run), "--data", str(data), "--split", "val", "--device", "cpu"],
            "predict": ["predict", "--runs", str(run), str(crop), "--device", "cpu"],
            "export": ["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]}[command]
    rc = main(argv)
    err = one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(run / "config.json") in err and field in err, err
    assert not (tmp_path / "m.pt").exists()


SIDECAR = {"format": "torchscript", "sha256": "0" * 64, "scheme": "kl5", "classes": ["0", "1", "2", "3", "4"],
           "image_size": 64, "clahe": False, "normalization": {"mean": 0.5, "std": 0.5}, "members": []}


@pytest.mark.parametrize(("field", "value"), [("classes", 7), ("classes", ["0", "1"]), ("image_size", "64"),
                                              ("image_size", -3), ("clahe", "no"), ("format", 3),
                                              ("scheme", None), ("sha256", 12), ("members", "all")])
def test_export_sidecar_is_validated_naming_file_and_field(field: str, value: object, crop: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"not read: the sidecar is checked first")
    (tmp_path / "m.pt.json").write_text(json.dumps({**SIDECAR, field: value}))
    rc = main(["predict", "--model", str(model), str(crop)])
    err = one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(tmp_path / "m.pt.json") in err and field in err, err
