"""The knee localiser: box geometry and sides, crops, letterbox/augmentation maths, metrics, a tiny
training run saved and loaded, the CLI and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from kneelib import cli
from kneelib.errors import KneelibError
from kneelib.radiograph import localizer as localize
from kneelib.radiograph.localizer import (
    INPUT_SIZE,
    Frame,
    KneeBox,
    Localizer,
    LocalizerNet,
    crop_knee,
    decode,
    default_localizer_path,
    evaluate_localizer,
    letterbox,
    load_localizer,
    localization_metrics,
    square_box,
)
from kneelib.radiograph.localizer_training import METRICS_FILE, augment, train_localizer
from kneelib.synthetic.anatomy import CROP_MM
from kneelib.synthetic.bilateral import render_bilateral

# ---------------------------------------------------------------- boxes and crops

def test_square_box_geometry_and_as_list() -> None:
    box = square_box("R", 100.0, 50.0, 40.0)
    assert box == KneeBox("R", 80, 30, 120, 70)
    assert box.as_list() == [80, 30, 120, 70]
    assert box.centre == (100.0, 50.0)
    odd = square_box("L", 10.2, 10.7, 5.4)
    assert odd.x1 - odd.x0 == odd.y1 - odd.y0 == 5


def test_decode_labels_image_left_knee_right_and_maps_back() -> None:
    H, W = INPUT_SIZE
    frame = Frame(sx=0.1, sy=0.1, ox=8, oy=4)
    # channel 0 found the image-RIGHT knee: decode still puts the image-left knee first, as "R"
    pred = np.array([0.75, 0.5, 0.25, 0.5, 0.25], np.float32)
    right, left = decode(pred, frame, INPUT_SIZE)
    assert (right.side, left.side) == ("R", "L")
    assert right.centre[0] < left.centre[0]
    assert right.centre == pytest.approx(((0.25 * W - 8) / 0.1, (0.5 * H - 4) / 0.1), abs=1)
    assert right.x1 - right.x0 == round(0.25 * W / 0.1)
    known = decode(pred, frame, INPUT_SIZE, spacing_mm=0.4)
    assert all(b.x1 - b.x0 == b.y1 - b.y0 == round(CROP_MM / 0.4) for b in known)


def test_crop_knee_inside_padded_mirrored() -> None:
    image = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    inside = crop_knee(image, KneeBox("R", 2, 3, 6, 7), mirror=False)
    assert np.array_equal(inside, image[3:7, 2:6]) and inside.dtype == np.uint8
    assert np.array_equal(crop_knee(image, KneeBox("L", 2, 3, 6, 7), mirror=True), image[3:7, 2:6][:, ::-1])

    out = crop_knee(image, KneeBox("R", -2, -1, 3, 4), mirror=False)
    assert out.shape == (5, 5)
    assert np.all(out[:1] == 0) and np.all(out[:, :2] == 0)
    assert np.array_equal(out[1:, 2:], image[0:4, 0:3])
    edge = crop_knee(image, KneeBox("R", 8, 10, 13, 15), mirror=False, pad="edge")
    assert edge.shape == (5, 5)
    assert np.all(edge[:, 2:] == edge[:, 1:2]) and np.all(edge[2:] == edge[1:2])
    assert np.array_equal(edge[:2, :2], image[10:12, 8:10])
    assert np.array_equal(crop_knee(image, KneeBox("R", 20, 20, 24, 23), mirror=True), np.zeros((3, 4)))
    with pytest.raises(KneelibError, match="uint8"):
        crop_knee(image.astype(np.uint16), KneeBox("R", 2, 3, 6, 7), mirror=False)
    with pytest.raises(KneelibError, match="empty box"):
        crop_knee(image, KneeBox("R", 5, 5, 5, 9), mirror=False)


# ---------------------------------------------------------------- letterbox and augmentation

def test_letterbox_keeps_aspect_and_maps_points() -> None:
    image = np.zeros((400, 1000), np.uint8)
    cv2.circle(image, (700, 150), 8, 255, -1)
    canvas, frame = letterbox(image, INPUT_SIZE)
    assert canvas.shape == INPUT_SIZE and frame.sx == pytest.approx(frame.sy, rel=0.02)
    assert frame.ox == 0 and frame.oy > 0 and canvas[:frame.oy].max() == 0
    y, x = np.unravel_index(np.argmax(cv2.GaussianBlur(canvas, (5, 5), 0)), canvas.shape)
    assert (x + 0.5, y + 0.5) == pytest.approx((700.5 * frame.sx + frame.ox, 150.5 * frame.sy + frame.oy), abs=1)


def test_augment_moves_the_targets_with_the_image() -> None:
    H, W = INPUT_SIZE
    image = np.zeros((100, W), np.uint8)
    target = np.array([40.0, 50.0, 120.0, 45.0, 30.0])
    for cx, cy in target[:4].reshape(2, 2):
        cv2.circle(image, (int(cx), int(cy)), 3, 255, -1)  # pixel int(c) has centre c + 0.5 ~ target
    frame = Frame(1.0, 1.0, 0, (H - 100) // 2)
    plain, y0 = augment(image, frame, target, None)
    assert y0 == pytest.approx([40 / W, (50 + frame.oy) / H, 120 / W, (45 + frame.oy) / H, 30 / W])
    rng = np.random.default_rng(3)
    flips = 0
    for _ in range(12):
        x, y = augment(image, frame, target, rng)
        assert x.shape == INPUT_SIZE and x.dtype == np.float32 and abs(float(x.mean())) < 1e-3
        assert y[0] < y[2]  # the image-left knee stays first, also after a flip
        flips += bool(y[1] < y[3])  # flipped: the higher (right) blob is now on the left
        for k, half in ((0, slice(0, W // 2)), (1, slice(W // 2, W))):
            blob = cv2.GaussianBlur(x[:, half], (7, 7), 0)
            py, px = np.unravel_index(np.argmax(blob), blob.shape)
            assert px + half.start + 0.5 == pytest.approx(y[2 * k] * W, abs=2.0)
            assert py + 0.5 == pytest.approx(y[2 * k + 1] * H, abs=2.0)
        assert 0.8 * 30 / W < y[4] < 1.2 * 30 / W
    assert 0 < flips < 12


# ---------------------------------------------------------------- metrics

def test_metrics_perfect_and_known_offset() -> None:
    truth = [[{"side": "R", "x0": 100, "y0": 50, "x1": 200, "y1": 150},
              {"side": "L", "x0": 400, "y0": 50, "x1": 500, "y1": 150}]]
    perfect = [[KneeBox("L", 400, 50, 500, 150), KneeBox("R", 100, 50, 200, 150)]]  # matched by side
    m = localization_metrics(perfect, truth, [0.5])
    assert m["mean_iou"] == pytest.approx(1.0) and m["median_iou"] == pytest.approx(1.0)
    assert m["centre_error_px_mean"] == 0 and m["centre_error_mm_mean"] == 0
    assert m["n_knees"] == 2 and m["iou_over_0.5"] == 1.0

    shifted = [[KneeBox("R", 110, 50, 210, 150), KneeBox("L", 400, 50, 500, 150)]]
    m = localization_metrics(shifted, truth, [0.5])
    assert m["mean_iou"] == pytest.approx((9000 / 11000 + 1) / 2)
    assert m["centre_error_px_mean"] == pytest.approx(5.0) and m["centre_error_px_median"] == pytest.approx(5.0)
    assert m["centre_error_mm_mean"] == pytest.approx(2.5)

    far = [[KneeBox("R", 160, 50, 260, 150)]]  # IoU 40/160 = 0.25, and no L box at all
    m = localization_metrics(far, truth, [0.5])
    assert m["mean_iou"] == pytest.approx(0.25 / 2) and m["iou_over_0.5"] == 0.0
    assert m["centre_error_px_mean"] == pytest.approx(60.0)
    with pytest.raises(ValueError):
        localization_metrics(far, truth * 2)


# ---------------------------------------------------------------- a tiny trained localiser

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("localizer")
    metrics = train_localizer(out, n_train=4, n_val=2, epochs=1, batch_size=2, progress=False,
                              log=lambda line: None)
    return out, metrics


def test_tiny_training_saves_loads_and_locates(tiny_model: tuple[Path, dict]) -> None:
    out, metrics = tiny_model
    saved = json.loads((out / METRICS_FILE).read_text())
    assert saved["val"]["n_knees"] == 4 and saved["best_epoch"] == 1 == metrics["best_epoch"]
    assert not list(out.glob(".*.tmp"))
    localizer = load_localizer(out / "localizer.pt")
    assert isinstance(localizer, Localizer) and localizer.size == INPUT_SIZE
    image, truth = render_bilateral(np.random.default_rng(5), (1, 3), width=700, height=560, spacing_mm=0.5)
    boxes = localizer.locate(image)
    assert [b.side for b in boxes] == ["R", "L"]
    assert boxes[0].centre[0] < boxes[1].centre[0]
    assert all(b.x1 - b.x0 == b.y1 - b.y0 > 0 for b in boxes)
    rgb = localizer.locate(np.dstack([image] * 3), spacing_mm=0.5)
    assert all(b.x1 - b.x0 == 200 for b in rgb)
    same = load_localizer(out / "localizer.pt").locate(image)
    assert same == boxes  # deterministic inference after reload
    with pytest.raises(KneelibError, match="uint8"):
        localizer.locate(image.astype(np.float32))


def test_tiny_training_refuses_to_overwrite(tiny_model: tuple[Path, dict]) -> None:
    out, _ = tiny_model
    with pytest.raises(KneelibError, match="--force"):
        train_localizer(out, n_train=1, n_val=1, epochs=1, progress=False)


def test_evaluate_localizer_keys(tiny_model: tuple[Path, dict]) -> None:
    m = evaluate_localizer(load_localizer(tiny_model[0] / "localizer.pt"), n=2, seed=7)
    assert m["n_knees"] == 4 and 0 <= m["mean_iou"] <= 1 and m["centre_error_px_mean"] >= 0
    assert {"median_iou", "centre_error_px_median", "centre_error_mm_mean", "iou_over_0.5",
            "inference_ms_mean"} <= set(m)


def test_missing_or_foreign_model_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KneelibError, match="kneelib localize train"):
        load_localizer(tmp_path / "nope.pt")
    torch.save({"state_dict": LocalizerNet().state_dict()}, tmp_path / "other.pt")
    with pytest.raises(KneelibError, match="not a kneelib knee-localiser"):
        load_localizer(tmp_path / "other.pt")
    monkeypatch.setenv("KNEELIB_CACHE_DIR", str(tmp_path / "cache"))
    assert default_localizer_path() == tmp_path / "cache" / "localizer" / "localizer.pt"
    assert load_localizer().path == localize.PACKAGED_LOCALIZER  # nothing cached: the shipped one
    monkeypatch.setattr(localize, "PACKAGED_LOCALIZER", tmp_path / "gone.pt")
    with pytest.raises(KneelibError, match="not found"):
        load_localizer()


def test_packaged_localizer_finds_both_knees() -> None:
    """The shipped localiser on a fresh synthetic radiograph: both boxes overlap the truth well."""
    image, truth = render_bilateral(np.random.default_rng([99, 5]), (2, 3), width=900, height=700)
    boxes = load_localizer(localize.PACKAGED_LOCALIZER).locate(image)
    m = localization_metrics([boxes], [truth])
    assert [b.side for b in boxes] == ["R", "L"] and m["mean_iou"] > 0.7


# ---------------------------------------------------------------- CLI

def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    if "localize" not in cli.COMMAND_MODULES:  # until the integrator lists it
        monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "localize"))
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_missing_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(monkeypatch, capsys, "localize", "evaluate", "--model", tmp_path / "x.pt")
    assert code == 2 and err.count("\n") == 1 and "kneelib localize train" in err and "x.pt" in err


def test_cli_evaluate_and_locate(tiny_model: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_model[0] / "localizer.pt"
    code, out, _ = _run(monkeypatch, capsys, "localize", "evaluate", "--model", model, "--n", 1, "--json")
    assert code == 0 and json.loads(out)["n_knees"] == 2
    image, _ = render_bilateral(np.random.default_rng(1), (0, 0), width=600, height=480)
    cv2.imwrite(str(tmp_path / "both.png"), image)
    code, out, _ = _run(monkeypatch, capsys, "localize", "locate", tmp_path / "both.png", "--model", model,
                        "--spacing", 0.5, "--json")
    boxes = json.loads(out)[str(tmp_path / "both.png")]
    assert code == 0 and list(boxes) == ["R", "L"] and boxes["R"][2] - boxes["R"][0] == 200
    code, _, err = _run(monkeypatch, capsys, "localize", "locate", tmp_path / "none.png", "--model", model)
    assert code == 2 and "none.png" in err
