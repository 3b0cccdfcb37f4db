"""From a bilateral radiograph (16-bit MONOCHROME1 DICOM) to two graded knees: library and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from dicom_fixtures import write_bilateral_dicom
from fakes import make_run

from kneelib.cli import main
from kneelib.data.transforms import clahe
from kneelib.radiograph.bilateral import (
    grade_bilateral,
    grading_crop,
    overview_image,
    write_outputs,
)
from kneelib.radiograph.localizer import KneeBox, crop_knee
from kneelib.radiograph.localizer_training import train_localizer
from kneelib.serve.predict import Predictor


class TrueBoxes:
    """A stand-in localiser that returns given boxes (to check the cropping, not the localising)."""

    def __init__(self, boxes: list[dict]) -> None:
        self.boxes = [KneeBox(b["side"], b["x0"], b["y0"], b["x1"], b["y1"]) for b in boxes]
        self.spacing: list[float | None] = []

    def locate(self, image: np.ndarray, spacing_mm: float | None = None) -> list[KneeBox]:
        self.spacing.append(spacing_mm)
        return self.boxes


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("bilateral")
    dcm = root / "knees.dcm"
    boxes = write_bilateral_dicom(dcm, rng_seed=3, width=512, height=416, grades=(0, 4))
    run = make_run(root / "runs", "r18", image_size=64)
    localizer_dir = root / "localizer"
    train_localizer(localizer_dir, n_train=4, n_val=2, epochs=1, batch_size=2, progress=False, log=lambda s: None)
    return {"root": root, "dcm": dcm, "boxes": boxes, "run": run, "localizer": localizer_dir / "localizer.pt"}


def test_grading_crop_is_unmirrored_resized_and_clahe(scene: dict) -> None:
    image = np.tile(np.arange(200, dtype=np.uint8), (120, 1))
    box = KneeBox("L", 20, 10, 120, 110)
    crop = grading_crop(image, box, image_size=64)
    expected = clahe(cv2.resize(crop_knee(image, box, mirror=False), (64, 64), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(crop, expected)
    raw = grading_crop(image, box, image_size=64, apply_clahe=False)
    assert raw[0, 0] < raw[0, -1]  # left stays left: the data set does not mirror left knees


def test_grade_bilateral_with_true_boxes_reads_spacing_and_grades_both(scene: dict) -> None:
    predictor = Predictor([scene["run"]], device="cpu")
    stub = TrueBoxes(scene["boxes"])
    result = grade_bilateral(scene["dcm"], predictor, stub, heatmaps=True)
    assert stub.spacing == [pytest.approx(scene["boxes"][0]["spacing_mm"], abs=1e-3)]
    assert [k.side for k in result.knees] == ["R", "L"]
    for knee, box in zip(result.knees, scene["boxes"]):
        assert knee.box.as_list() == [box["x0"], box["y0"], box["x1"], box["y1"]]
        assert knee.crop.shape == (64, 64) and knee.crop.dtype == np.uint8
        assert knee.grade in predictor.class_names
        assert sum(knee.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert knee.heatmap.shape == (64, 64) and np.isfinite(knee.heatmap).all()
    # the crop graded is the one the predictor would grade on its own
    direct = predictor.probabilities([result.knees[0].crop])[0]
    assert list(result.knees[0].probabilities.values()) == pytest.approx(direct.tolist(), abs=1e-6)
    doc = result.as_json()
    assert set(doc) >= {"image", "knees"} and doc["knees"][1]["side"] == "L"
    over = overview_image(result)
    assert over.shape == (416, 512, 3)
    written = write_outputs(result, scene["root"] / "out")
    assert sorted(written) == ["L", "R", "overview"] and all(p.is_file() for p in written.values())


def test_cli_predict_bilateral_dicom_json(scene: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, heat = tmp_path / "pred", tmp_path / "heat"
    code = main(["predict", "--runs", str(scene["run"]), "--bilateral", str(scene["dcm"]), "--localizer",
                 str(scene["localizer"]), "--out", str(out), "--heatmaps", str(heat), "--json", "--device", "cpu"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["image"] == str(scene["dcm"])
    assert [k["side"] for k in doc["knees"]] == ["R", "L"]
    for knee in doc["knees"]:
        x0, y0, x1, y1 = knee["box"]
        assert x1 > x0 and y1 > y0
        assert knee["grade"] in knee["probabilities"] and len(knee["probabilities"]) == 5
    assert Path(doc["overview"]).is_file() and doc["overview"] == str(out / "knees_overview.png")
    assert sorted(p.name for p in heat.iterdir()) == ["knees_L_gradcam.png", "knees_R_gradcam.png"]


def test_cli_predict_table_and_errors(scene: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", "--runs", str(scene["run"]), "--bilateral", str(scene["dcm"]), "--localizer",
                 str(scene["localizer"]), "--out", str(tmp_path), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "R knee" in text and "L knee" in text and "overview:" in text
    missing = tmp_path / "nope.pt"
    assert main(["predict", "--runs", str(scene["run"]), "--bilateral", str(scene["dcm"]),
                 "--localizer", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    junk = tmp_path / "junk.dcm"
    junk.write_text("not a dicom")
    assert main(["predict", "--runs", str(scene["run"]), "--bilateral", str(junk), "--localizer",
                 str(scene["localizer"]), "--out", str(tmp_path / "x"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert str(junk) in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # nothing half-written
    assert main(["predict", "--model", str(missing), "--heatmaps", str(tmp_path), str(scene["dcm"])]) == 2
    assert "--heatmaps needs --runs" in capsys.readouterr().err


def test_cli_predict_bilateral_with_an_exported_model(scene: dict, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    """--model FILE grades both knees like the runs it was exported from."""
    from kneelib.serve.export import export_runs

    onnx = tmp_path / "r18.onnx"
    export_runs([scene["run"]], fmt="onnx", out=onnx)
    args = ["--bilateral", str(scene["dcm"]), "--localizer", str(scene["localizer"]), "--json"]
    assert main(["predict", "--model", str(onnx), "--out", str(tmp_path / "a"), *args]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert main(["predict", "--runs", str(scene["run"]), "--out", str(tmp_path / "b"), "--device", "cpu", *args]) == 0
    reference = json.loads(capsys.readouterr().out)
    for a, b in zip(exported["knees"], reference["knees"]):
        assert a["box"] == b["box"] and a["grade"] == b["grade"]
        assert list(a["probabilities"].values()) == pytest.approx(list(b["probabilities"].values()), abs=1e-4)
