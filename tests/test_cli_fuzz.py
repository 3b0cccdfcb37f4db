"""A fuzz-style sweep over the CLI (issue 29): every sub-command with bad paths (missing, a folder where a file is
wanted, a file where a folder is, a path under a regular file, a non-image) and bad values (negative, zero, NaN,
huge, an unknown choice) answers with exit status 2 and exactly one ``kneelib: error:`` line, no traceback, and
writes nothing. In-process (``kneelib.cli.main``) and fast: nothing here trains or renders for long."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import make_run, make_tiny_dataset

from kneelib.cli import build_parser, main
from kneelib.radiograph.localizer import PACKAGED_LOCALIZER


@dataclass(frozen=True)
class P:
    """The paths a case may use."""

    data: Path  # a tiny data set ({train,val}/{0..4}/)
    run: Path  # a fabricated run directory
    image: Path  # a real crop
    text: Path  # a text file named like an image
    afile: Path  # a regular file
    adir: Path  # an empty folder
    missing: Path  # nothing there
    out: Path  # a fresh output path (must stay absent)

    @property
    def under(self) -> Path:
        """A path under a regular file."""
        return self.afile / "x"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> P:
    root = tmp_path_factory.mktemp("fuzz")
    data = make_tiny_dataset(root / "data", train_per_grade=1)
    text = root / "notes.png"
    text.write_text("not an image\n")
    afile = root / "afile.csv"
    afile.write_text("a,b\n1,2\n")
    (root / "adir").mkdir()
    return P(data, make_run(root, "run"), next(data.rglob("*.png")), text, afile, root / "adir", root / "missing",
             root / "out")


@pytest.fixture
def paths(world: P, tmp_path: Path) -> P:
    """The shared inputs with this test's own fresh output path."""
    return dataclasses.replace(world, out=tmp_path / "out")


Case = Callable[[P], list[object]]
LOCALIZER = PACKAGED_LOCALIZER
NAN, HUGE = "nan", "1" + "0" * 12
#: sub-command -> {case name: argv}; every case must fail cleanly.
CASES: dict[str, dict[str, Case]] = {
    "models": {"unknown option": lambda p: ["models", "--nope"]},
    "stats": {
        "missing dir": lambda p: ["stats", p.missing],
        "a file": lambda p: ["stats", p.image],
        "under a file": lambda p: ["stats", p.under],
        "unknown scheme": lambda p: ["stats", p.data, "--scheme", "kl9"],
    },
    "filter": {
        "missing dir": lambda p: ["filter", p.missing, "--report", p.out / "r.csv"],
        "report is a dir": lambda p: ["filter", p.data, "--report", p.adir],
        "report under a file": lambda p: ["filter", p.data, "--report", p.under],
        "fraction nan": lambda p: ["filter", p.data, "--blur-fraction", NAN, "--report", p.out / "r.csv"],
        "fraction zero": lambda p: ["filter", p.data, "--blur-fraction", "0", "--report", p.out / "r.csv"],
        "threshold negative": lambda p: ["filter", p.data, "--blur-threshold", "-1", "--report", p.out / "r.csv"],
    },
    "split": {
        "missing src": lambda p: ["split", p.missing, p.out],
        "src a non-image": lambda p: ["split", p.text, p.out],
        "out a file": lambda p: ["split", p.data, p.afile],
        "out under a file": lambda p: ["split", p.data, p.under],
        "ratios zero": lambda p: ["split", p.data, p.out, "--ratios", "0:0:0"],
        "ratios nan": lambda p: ["split", p.data, p.out, "--ratios", "nan:1:1"],
        "ratios words": lambda p: ["split", p.data, p.out, "--ratios", "a:b"],
        "seed negative": lambda p: ["split", p.data, p.out, "--seed", "-1"],
        "seed huge": lambda p: ["split", p.data, p.out, "--seed", str(2**32)],
        "ratios overflow": lambda p: ["split", p.data, p.out, "--ratios", "1e308:1e308:1"],
        "unknown protocol": lambda p: ["split", p.data, p.out, "--protocol", "foo"],
        "exclude missing": lambda p: ["split", p.data, p.out, "--exclude", p.missing],
    },
    "synth": {
        "out a file": lambda p: ["synth", p.afile, "--per-grade", "1", "--size", "64"],
        "out under a file": lambda p: ["synth", p.under, "--per-grade", "1", "--size", "64"],
        "per-grade zero": lambda p: ["synth", p.out, "--per-grade", "0"],
        "per-grade negative": lambda p: ["synth", p.out, "--per-grade", "-3"],
        "per-grade huge": lambda p: ["synth", p.out, "--per-grade", HUGE],
        "per-grade a word": lambda p: ["synth", p.out, "--per-grade", "many"],
        "size tiny": lambda p: ["synth", p.out, "--size", "7"],
        "size huge": lambda p: ["synth", p.out, "--per-grade", "1", "--size", "1000000"],
        "signs nan": lambda p: ["synth", p.out, "--per-grade", "1", "--size", "64", "--signs", NAN],
        "signs negative": lambda p: ["synth", p.out, "--per-grade", "1", "--size", "64", "--signs", "-1"],
        "bilateral negative": lambda p: ["synth", p.out, "--bilateral", "-1"],
        "seed negative": lambda p: ["synth", p.out, "--per-grade", "1", "--size", "64", "--seed", "-1"],
    },
    "data verify": {
        "missing": lambda p: ["data", "verify", p.missing],
        "a non-image": lambda p: ["data", "verify", p.text],
        "manifest missing": lambda p: ["data", "verify", p.data, "--manifest", p.missing],
        "manifest a dir": lambda p: ["data", "verify", p.data, "--manifest", p.adir],
        "unknown action": lambda p: ["data", "check", p.data],
    },
    "data prepare": {
        "missing src": lambda p: ["data", "prepare", p.missing, p.out],
        "out a file": lambda p: ["data", "prepare", p.data, p.afile],
        "out under a file": lambda p: ["data", "prepare", p.data, p.under],
        "unknown clahe": lambda p: ["data", "prepare", p.data, p.out, "--clahe", "maybe"],
        "manifest missing": lambda p: ["data", "prepare", p.data, p.out, "--manifest", p.missing],
    },
    "train": {
        "data missing": lambda p: [*TRAIN(p), "--data", p.missing],
        "data a file": lambda p: [*TRAIN(p), "--data", p.image],
        "out a file": lambda p: [*TRAIN(p, out=p.afile)],
        "out under a file": lambda p: [*TRAIN(p, out=p.under)],
        "unknown arch": lambda p: [*TRAIN(p), "--arch", "resnet7"],
        "unknown scheme": lambda p: [*TRAIN(p), "--scheme", "kl9"],
        "unknown recipe": lambda p: [*TRAIN(p), "--recipe", "fast"],
        "epochs zero": lambda p: [*TRAIN(p), "--epochs", "0"],
        "epochs negative": lambda p: [*TRAIN(p), "--epochs", "-2"],
        "image size tiny": lambda p: [*TRAIN(p), "--image-size", "7"],
        "image size huge": lambda p: [*TRAIN(p), "--image-size", "1000000"],
        "batch size zero": lambda p: [*TRAIN(p), "--batch-size", "0"],
        "lr nan": lambda p: [*TRAIN(p), "--lr", NAN],
        "lr negative": lambda p: [*TRAIN(p), "--lr", "-1"],
        "weight decay nan": lambda p: [*TRAIN(p), "--weight-decay", NAN],
        "limit negative": lambda p: [*TRAIN(p), "--limit", "-1"],
        "weights missing": lambda p: [*TRAIN(p), "--weights", p.missing],
        "weights a non-model": lambda p: [*TRAIN(p), "--weights", p.text],
        "unknown device": lambda p: [*TRAIN(p), "--device", "tpu"],
        "threads zero": lambda p: [*TRAIN(p), "--threads", "0"],
        "workers negative": lambda p: [*TRAIN(p), "--workers", "-1"],
        "epochs a word": lambda p: [*TRAIN(p), "--epochs", "many"],
    },
    "evaluate": {
        "run missing": lambda p: ["evaluate", p.missing, "--data", p.data, "--split", "val"],
        "run a file": lambda p: ["evaluate", p.afile, "--data", p.data, "--split", "val"],
        "run not a run": lambda p: ["evaluate", p.data, "--data", p.data, "--split", "val"],
        "data missing": lambda p: ["evaluate", p.run, "--data", p.missing, "--split", "val"],
        "unknown split": lambda p: ["evaluate", p.run, "--data", p.data, "--split", "foo"],
        "batch size zero": lambda p: ["evaluate", p.run, "--data", p.data, "--split", "val", "--batch-size", "0"],
        "unknown device": lambda p: ["evaluate", p.run, "--data", p.data, "--split", "val", "--device", "tpu"],
        "out a dir": lambda p: ["evaluate", p.run, "--data", p.data, "--split", "val", "--out", p.adir],
        "predictions under a file": lambda p: ["evaluate", p.run, "--data", p.data, "--split", "val",
                                               "--predictions", p.under],
    },
    "predict": {
        "runs missing": lambda p: ["predict", "--runs", p.missing, p.image],
        "model missing": lambda p: ["predict", "--model", p.missing, p.image],
        "model a non-model": lambda p: ["predict", "--model", p.text, p.image],
        "image missing": lambda p: ["predict", "--runs", p.run, "--device", "cpu", p.missing],
        "image a non-image": lambda p: ["predict", "--runs", p.run, "--device", "cpu", p.text],
        "image a dir": lambda p: ["predict", "--runs", p.run, "--device", "cpu", p.adir],
        "heatmaps a file": lambda p: ["predict", "--runs", p.run, p.image, "--device", "cpu", "--heatmaps", p.afile],
        "out under a file": lambda p: ["predict", "--runs", p.run, "--device", "cpu", "--bilateral", p.image,
                                       "--out", p.under],
        "localizer missing": lambda p: ["predict", "--runs", p.run, "--device", "cpu", "--bilateral", p.image,
                                        "--localizer", p.missing, "--out", p.out],
        "unknown device": lambda p: ["predict", "--runs", p.run, p.image, "--device", "tpu"],
        "no images": lambda p: ["predict", "--runs", p.run],
    },
    "localize train": {
        "out a file": lambda p: ["localize", "train", "--out", p.afile, "--n-train", "2", "--epochs", "1"],
        "out under a file": lambda p: ["localize", "train", "--out", p.under, "--n-train", "2", "--epochs", "1"],
        "n-train zero": lambda p: ["localize", "train", "--out", p.out, "--n-train", "0"],
        "n-val negative": lambda p: ["localize", "train", "--out", p.out, "--n-val", "-1"],
        "epochs zero": lambda p: ["localize", "train", "--out", p.out, "--epochs", "0"],
        "n-train huge": lambda p: ["localize", "train", "--out", p.out, "--n-train", HUGE],
        "epochs huge": lambda p: ["localize", "train", "--out", p.out, "--epochs", HUGE],
    },
    "localize evaluate": {
        "model missing": lambda p: ["localize", "evaluate", "--model", p.missing, "--n", "2"],
        "model a non-model": lambda p: ["localize", "evaluate", "--model", p.text, "--n", "2"],
        "model a dir": lambda p: ["localize", "evaluate", "--model", p.adir, "--n", "2"],
        "n zero": lambda p: ["localize", "evaluate", "--model", LOCALIZER, "--n", "0"],
        "n negative": lambda p: ["localize", "evaluate", "--model", LOCALIZER, "--n", "-4"],
        "n huge": lambda p: ["localize", "evaluate", "--model", LOCALIZER, "--n", HUGE],
    },
    "localize locate": {
        "image missing": lambda p: ["localize", "locate", p.missing, "--model", LOCALIZER],
        "image a non-image": lambda p: ["localize", "locate", p.text, "--model", LOCALIZER],
        "image a dir": lambda p: ["localize", "locate", p.adir, "--model", LOCALIZER],
        "model missing": lambda p: ["localize", "locate", p.image, "--model", p.missing],
        "spacing nan": lambda p: ["localize", "locate", p.image, "--model", LOCALIZER, "--spacing", NAN],
        "spacing zero": lambda p: ["localize", "locate", p.image, "--model", LOCALIZER, "--spacing", "0"],
        "unknown action": lambda p: ["localize", "find", p.image],
    },
    "export": {
        "run missing": lambda p: ["export", p.missing, "--out", p.out / "m.onnx"],
        "run not a run": lambda p: ["export", p.adir, "--out", p.out / "m.onnx"],
        "out a dir": lambda p: ["export", p.run, "--out", p.adir],
        "out under a file": lambda p: ["export", p.run, "--out", p.under],
        "unknown format": lambda p: ["export", p.run, "--out", p.out / "m.onnx", "--format", "tflite"],
        "opset negative": lambda p: ["export", p.run, "--out", p.out / "m.onnx", "--opset", "-1"],
    },
    "reproduce": {
        "unknown profile": lambda p: ["reproduce", "--profile", "huge", "--out", p.out],
        "out a file": lambda p: ["reproduce", "--out", p.afile],
        "out under a file": lambda p: ["reproduce", "--out", p.under],
        "data a file": lambda p: ["reproduce", "--out", p.out, "--data", p.afile],
        "data missing": lambda p: ["reproduce", "--out", p.out, "--data", p.missing],
        "unknown arch": lambda p: ["reproduce", "--out", p.out, "--archs", "resnet7"],
        "unknown scheme": lambda p: ["reproduce", "--out", p.out, "--schemes", "oa"],
        "epochs zero": lambda p: ["reproduce", "--out", p.out, "--epochs", "0"],
        "image size tiny": lambda p: ["reproduce", "--out", p.out, "--image-size", "7"],
        "image size huge": lambda p: ["reproduce", "--out", p.out, "--image-size", HUGE],
        "unknown split": lambda p: ["reproduce", "--out", p.out, "--split", "foo"],
        "jobs zero": lambda p: ["reproduce", "--out", p.out, "--jobs", "0"],
        "jobs negative": lambda p: ["reproduce", "--out", p.out, "--jobs", "-2"],
        "seeds a word": lambda p: ["reproduce", "--out", p.out, "--seeds", "x"],
        "unknown device": lambda p: ["reproduce", "--out", p.out, "--device", "tpu"],
        "unknown executor": lambda p: ["reproduce", "--out", p.out, "--executor", "slurm"],
    },
}


def TRAIN(p: P, out: Path | None = None) -> list[object]:  # noqa: N802 - reads as a table entry
    """A tiny valid ``train`` command line (later options override)."""
    return ["train", "--data", p.data, "--arch", "resnet18", "--out", out or p.out, "--epochs", "1",
            "--image-size", "64", "--batch-size", "4", "--device", "cpu", "--quiet"]


def test_every_sub_command_is_fuzzed() -> None:
    """The table covers every command `kneelib --help` lists (and each action of data and localize)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = set()
    for name, command in sub.choices.items():
        nested = [a for a in command._actions if getattr(a, "choices", None) and a.dest.endswith("_command")]
        commands |= {f"{name} {action}" for action in nested[0].choices} if nested else {name}
    assert commands == set(CASES)


@pytest.fixture
def no_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reproduce case that got past the checks would start a sweep: fail it instead."""
    module = importlib.import_module("kneelib.pipeline.reproduce")

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("reproduce started its work")

    monkeypatch.setattr(module, "_sweep", started)


@pytest.mark.parametrize(("command", "case"), [(c, k) for c, cases in CASES.items() for k in cases],
                         ids=lambda v: v.replace(" ", "-"))
def test_bad_input_is_one_error_line(command: str, case: str, paths: P, no_sweep: None,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(a) for a in CASES[command][case](paths)]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: a bad option value or choice
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("kneelib: error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, f"kneelib {' '.join(argv)}\n{err}"
    assert not paths.out.exists(), f"kneelib {' '.join(argv)} wrote {paths.out}"
    assert paths.afile.read_text() == "a,b\n1,2\n" and not any(paths.adir.iterdir())
