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
