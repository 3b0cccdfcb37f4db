"""kneelib.evaluate / kneelib.serve.predict and their CLI on a fabricated tiny data set and fabricated runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import PER_GRADE, make_data, make_run
from PIL import Image

from kneelib.cli import main
from kneelib.errors import KneelibError
from kneelib.evaluate import (
    ENSEMBLE,
    ensemble_probabilities,
    evaluate_runs,
    load_run,
    run_logits,
    softmax,
)
from kneelib.evaluate.metrics import METRIC_KEYS
from kneelib.serve.predict import Predictor, predict_images


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {
        "data": make_data(root / "data"),
        "a": make_run(root / "runs", "a", seed=1),
        "b": make_run(root / "runs", "b", seed=2, clahe=True),
        "c72": make_run(root / "runs", "c72", seed=3, image_size=72),
        "kl4": make_run(root / "runs", "kl4", seed=4, scheme="kl4"),
        "root": root,
    }


def test_ensemble_arithmetic_by_hand() -> None:
    a = np.array([[2.0, 0.0], [1.0, 3.0]])
    b = np.array([[0.0, 0.0], [3.0, 1.0]])
    got = ensemble_probabilities([a, b])
    # mean logits [1, 0] and [2, 2] → softmax
    e = np.e
    assert got == pytest.approx(np.array([[e / (e + 1), 1 / (e + 1)], [0.5, 0.5]]))
    mean_of_softmax = (softmax(a) + softmax(b)) / 2
    assert not np.allclose(got, mean_of_softmax)  # logits are averaged, not probabilities
    assert ensemble_probabilities([a]) == pytest.approx(softmax(a))


def test_load_run(tiny: dict[str, Path]) -> None:
    run = load_run(tiny["a"])
    assert run.name == "a" and run.scheme.name == "kl5" and run.preprocessing == (64, False)
    assert not run.model.training


def test_evaluate_two_runs_with_ensemble(tiny: dict[str, Path], tmp_path: Path) -> None:
    out, preds = tmp_path / "metrics.json", tmp_path / "preds.csv"
    rc = main(["evaluate", str(tiny["a"]), str(tiny["b"]), "--data", str(tiny["data"]), "--split", "val",
               "--out", str(out), "--predictions", str(preds), "--device", "cpu", "--batch-size", "4"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert set(doc["models"]) == {"a", "b"}
    assert doc["split"] == "val" and doc["class_names"] == ["0", "1", "2", "3", "4"]
    for m in [*doc["models"].values(), doc["ensemble"]]:
        assert tuple(m) == METRIC_KEYS and m["n"] == 5 * PER_GRADE
        assert sum(r["support"] for r in m["per_class"].values()) == 5 * PER_GRADE
    frame = pd.read_csv(preds, dtype={"true": str, "pred": str})
    assert list(frame.columns) == ["model", "path", "grade", "true", "pred", *(f"p_{c}" for c in "01234")]
    assert frame["model"].value_counts().to_dict() == {"a": 15, "b": 15, ENSEMBLE: 15}
    # the ensemble rows are softmax(mean of the members' logits)
    runs = [load_run(tiny["a"]), load_run(tiny["b"])]
    paths = frame.loc[frame.model == ENSEMBLE, "path"].tolist()
    want = ensemble_probabilities([run_logits(r, paths) for r in runs])
    got = frame.loc[frame.model == ENSEMBLE, [f"p_{c}" for c in "01234"]].to_numpy()
    assert got == pytest.approx(want, abs=1e-5)
    ens = doc["ensemble"]
    assert ens["accuracy"] == pytest.approx((frame.loc[frame.model == ENSEMBLE, "true"]
                                             == frame.loc[frame.model == ENSEMBLE, "pred"]).mean())


def test_members_with_different_preprocessing(tiny: dict[str, Path]) -> None:
    both, frame = evaluate_runs([tiny["a"], tiny["c72"]], tiny["data"], split="val", device="cpu",
                                batch_size=7, n_boot=50)
    alone, alone_frame = evaluate_runs([tiny["c72"]], tiny["data"], split="val", device="cpu", n_boot=50)
    assert alone["ensemble"] is None and set(alone_frame["model"]) == {"c72"}
    # a member's result does not depend on the other member's image size
    probs = [f"p_{c}" for c in "01234"]
    assert frame.loc[frame.model == "c72", probs].to_numpy() == pytest.approx(
        alone_frame[probs].to_numpy(), abs=1e-5)
    assert both["models"]["c72"]["accuracy"] == alone["models"]["c72"]["accuracy"]
    assert both["ensemble"] is not None


def test_inputs_match_training_dataset(tiny: dict[str, Path]) -> None:
    """Evaluation feeds exactly what KneeDataset(train=False) gave the model during validation."""
    from kneelib.data.dataset import DecodeCache, KneeDataset
    from kneelib.data.layout import discover

    samples = discover(tiny["data"])[:4]
    for key in ("b", "c72"):  # CLAHE at 64 px; plain at 72 px
        run = load_run(tiny[key])
        ds = KneeDataset(samples, run.scheme, image_size=run.image_size, train=False, clahe=run.clahe,
                         cache=DecodeCache())
        with torch.inference_mode():
            want = run.model(torch.stack([ds[i][0] for i in range(len(ds))])).numpy()
        assert run_logits(run, samples) == pytest.approx(want, abs=1e-5)


def test_duplicate_names_are_disambiguated(tiny: dict[str, Path], tmp_path: Path) -> None:
    other = make_run(tmp_path / "elsewhere", "a", seed=5)
    doc, _ = evaluate_runs([tiny["a"], other], tiny["data"], split="val", device="cpu", n_boot=20)
    assert set(doc["models"]) == {"runs/a", "elsewhere/a"}


def test_unfinished_run_warns(tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = make_run(tmp_path, "half", seed=6)
    (run / "status.json").write_text(json.dumps({"finished": False, "epoch": 3}))
    assert main(["evaluate", str(run), "--data", str(tiny["data"]), "--split", "val", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "has not finished training" in captured.err and "half" in captured.out


def test_mismatched_schemes(tiny: dict[str, Path]) -> None:
    with pytest.raises(KneelibError, match="scheme"):
        evaluate_runs([tiny["a"], tiny["kl4"]], tiny["data"], split="val", device="cpu")


def test_missing_split_names_split_and_present(tiny: dict[str, Path]) -> None:
    with pytest.raises(KneelibError, match=r"'test'.*val"):
        evaluate_runs([tiny["a"]], tiny["data"], split="test", device="cpu")


def test_real_data_has_no_test_split(real_kl224: Path, tiny: dict[str, Path]) -> None:
    with pytest.raises(KneelibError, match=r"'test'.*train, val"):
        evaluate_runs([tiny["a"]], real_kl224, split="test", device="cpu")


def test_predict_library_matches_evaluate(tiny: dict[str, Path]) -> None:
    _, frame = evaluate_runs([tiny["a"], tiny["b"]], tiny["data"], split="val", device="cpu", n_boot=20)
    ens = frame[frame.model == ENSEMBLE].head(3)
    results = predict_images([tiny["a"], tiny["b"]], ens["path"].tolist(), device="cpu")
    for r, (_, row) in zip(results, ens.iterrows()):
        assert r["image"] == row["path"] and r["grade"] == str(row["pred"])
        assert sum(r["probabilities"].values()) == pytest.approx(1.0)
        assert [r["probabilities"][c] for c in "01234"] == pytest.approx(
            [row[f"p_{c}"] for c in "01234"], abs=1e-5)
    # arrays work too (the hook for bilateral crops)
    pred = Predictor([tiny["a"]], device="cpu")
    gray = np.asarray(Image.open(ens["path"].iloc[0]))
    assert pred.probabilities([gray]) == pytest.approx(pred.probabilities([ens["path"].iloc[0]]))


def _image(tiny: dict[str, Path]) -> str:
    return str(next((tiny["data"] / "val" / "2").glob("*.png")))


def test_predict_cli_table_and_json(tiny: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    img = _image(tiny)
    assert main(["predict", "--runs", str(tiny["a"]), str(tiny["b"]), img, img, "--device", "cpu"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["image", "grade"] and "p(4)" in table[0]
    assert len(table) == 3 and table[1].startswith(img)
    assert main(["predict", "--json", "--runs", str(tiny["kl4"]), "--", img]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc) == 1 and doc[0]["image"] == img
    assert set(doc[0]["probabilities"]) == {"0-1", "2", "3", "4"}
    assert doc[0]["grade"] in doc[0]["probabilities"]


def _error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kneelib: error: "), err
    return lines[0]


def test_cli_errors(tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    img = _image(tiny)
    missing = tmp_path / "no_such_run"
    assert str(missing) in _error(["predict", "--runs", str(missing), img, "--device", "cpu"], capsys)
    assert str(missing) in _error(["evaluate", str(missing), "--data", str(tiny["data"])], capsys)

    bad = make_run(tmp_path, "bad", seed=0, num_classes=4)  # kl5 config, 4-class weights
    line = _error(["predict", "--runs", str(bad), img, "--device", "cpu"], capsys)
    assert "best.pt" in line and "fc.weight" in line and "resnet18" in line

    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    assert str(junk) in _error(["predict", "--runs", str(tiny["a"]), str(junk), "--device", "cpu"], capsys)
    nothere = str(tmp_path / "nothere.png")
    assert nothere in _error(["predict", "--runs", str(tiny["a"]), nothere], capsys)

    line = _error(["evaluate", str(tiny["a"]), str(tiny["kl4"]), "--data", str(tiny["data"]),
                   "--split", "val", "--device", "cpu"], capsys)
    assert "kl4" in line and "kl5" in line
    assert "'test'" in _error(["evaluate", str(tiny["a"]), "--data", str(tiny["data"]), "--device", "cpu"],
                              capsys)


def test_load_run_errors(tiny: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KneelibError, match="config.json"):
        load_run(empty)
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    (no_ckpt / "config.json").write_text((tiny["a"] / "config.json").read_text())
    with pytest.raises(KneelibError, match="best.pt"):
        load_run(no_ckpt)
    (no_ckpt / "best.pt").write_bytes(b"garbage")
    with pytest.raises(KneelibError, match="cannot read checkpoint"):
        load_run(no_ckpt)
    wrong_arch = tmp_path / "wrong_arch"
    wrong_arch.mkdir()
    cfg = json.loads((tiny["a"] / "config.json").read_text()) | {"arch": "resnet34"}
    (wrong_arch / "config.json").write_text(json.dumps(cfg))
    (wrong_arch / "best.pt").write_bytes((tiny["a"] / "best.pt").read_bytes())
    with pytest.raises(KneelibError, match="missing keys"):
        load_run(wrong_arch)
