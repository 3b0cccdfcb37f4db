"""kneelib.evaluate.calibration: ECE, temperature scaling fitted on val, and horizontal-flip TTA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fakes import make_data, make_run

from kneelib.cli import main
from kneelib.evaluate import calibrate_runs, evaluate_runs, expected_calibration_error, fit_temperature
from kneelib.evaluate.ensemble import softmax
from kneelib.serve.predict import Predictor


def test_ece_by_hand() -> None:
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])
    # bins: 0.9 → correct; 0.8 → correct; 0.7 → correct; 0.6 → wrong
    expected = (abs(1 - 0.9) + abs(1 - 0.8) + abs(1 - 0.7) + abs(0 - 0.6)) / 4
    assert expected_calibration_error(y, probs) == pytest.approx(expected)
    assert expected_calibration_error(y, np.eye(2)[y]) == 0.0  # sure and right


def test_fit_temperature_recovers_the_one_that_made_the_labels() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(20000, 5))
    for true_t in (0.5, 2.5):
        p = softmax(logits / true_t)
        y = np.array([rng.choice(5, p=row) for row in p])
        assert fit_temperature(logits, y) == pytest.approx(true_t, rel=0.08)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cal")
    make_data(root / "data", split="val")
    make_data(root / "data", split="test")
    return {"data": root / "data", "a": make_run(root / "runs", "a", seed=1),
            "b": make_run(root / "runs", "b", seed=2)}


def test_calibration_is_fitted_on_val_and_applied_everywhere(runs: dict[str, Path]) -> None:
    before, _ = evaluate_runs([runs["a"]], runs["data"], split="test", device="cpu", progress=False, n_boot=10)
    records = calibrate_runs([runs["a"]], runs["data"], device="cpu", progress=False)
    saved = json.loads((runs["a"] / "calibration.json").read_text())
    assert saved["fitted_on"] == "val" and saved["temperature"] == records["a"]["temperature"]
    assert saved["nll_after"] <= saved["nll_before"] + 1e-12
    after, preds = evaluate_runs([runs["a"]], runs["data"], split="test", device="cpu", progress=False, n_boot=10)
    assert after["temperatures"] == {"a": saved["temperature"]} and saved["temperature"] != 1.0
    assert after["models"]["a"]["accuracy"] == before["models"]["a"]["accuracy"]  # T never moves the argmax
    raw, _ = evaluate_runs([runs["a"]], runs["data"], split="test", device="cpu", progress=False, n_boot=10,
                           calibrated=False)
    assert raw["models"]["a"]["ece"] == before["models"]["a"]["ece"]
    probs = Predictor([runs["a"]], device="cpu").predict([preds["path"].iloc[0]])[0]["probabilities"]
    assert max(probs.values()) == pytest.approx(preds.filter(like="p_").iloc[0].max(), abs=1e-6)
    (runs["a"] / "calibration.json").unlink()


def test_tta_averages_the_mirror(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain, _ = evaluate_runs([runs["b"]], runs["data"], split="test", device="cpu", progress=False, n_boot=10)
    tta, _ = evaluate_runs([runs["b"]], runs["data"], split="test", device="cpu", progress=False, n_boot=10, tta=True)
    assert tta["tta"] is True and plain["tta"] is False
    assert tta["models"]["b"]["ece"] != plain["models"]["b"]["ece"]
    out = tmp_path / "m.json"
    assert main(["evaluate", str(runs["b"]), "--data", str(runs["data"]), "--device", "cpu", "--tta",
                 "--calibrate", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "b: temperature" in text and "fitted on val" in text and " ece" in text
    doc = json.loads(out.read_text())
    assert doc["tta"] is True and doc["temperatures"]["b"] != 1.0
    (runs["b"] / "calibration.json").unlink()
