"""Grad-CAM maps (kneelib.serve.explain) on fabricated runs of every architecture family."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fakes import make_run
from torchvision.models.densenet import DenseNet

from kneelib.errors import KneelibError
from kneelib.evaluate import ensemble_probabilities, forward, load_run
from kneelib.serve import explain

ARCHS = ("resnet18", "se_resnet18", "densenet121", "se_densenet121")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("runs")
    return {arch: load_run(make_run(root, arch, arch=arch, seed=i + 1)) for i, arch in enumerate(ARCHS)}


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A non-square gray 'knee' with structure (resized to the runs' 64 px by preprocess)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:90, 0:80]
    blob = 120 * np.exp(-((xx - 25) ** 2 + (yy - 60) ** 2) / 200.0)
    return np.clip(60 + blob + 40 * rng.random((90, 80)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("arch", ARCHS)
def test_gradcam_map_shape_range_and_contrast(runs: dict, image: np.ndarray, arch: str) -> None:
    cam = explain.gradcam(runs[arch], image)
    assert cam.shape == (64, 64) and cam.dtype == np.float32
    assert np.isfinite(cam).all()
    assert cam.min() >= 0.0 and cam.max() <= 1.0
    assert cam.std() > 1e-3  # not constant (and so not all zeros)
    assert cam.max() == pytest.approx(1.0, abs=1e-5)  # grad-cam scales each map to [0, 1]


def test_target_none_explains_the_predicted_class(runs: dict, image: np.ndarray) -> None:
    run = runs["resnet18"]
    predicted = int(forward([run], [image], progress=False)[0].argmax())
    np.testing.assert_allclose(explain.gradcam(run, image), explain.gradcam(run, image, target=predicted))
    others = [explain.gradcam(run, image, target=k) for k in range(5) if k != predicted]
    assert any(not np.allclose(o, explain.gradcam(run, image)) for o in others)


@pytest.mark.parametrize("target", [-1, 5, 1.5, True])
def test_bad_target_is_a_kneelib_error(runs: dict, image: np.ndarray, target: object) -> None:
    with pytest.raises(KneelibError, match="target class"):
        explain.gradcam(runs["resnet18"], image, target=target)


def test_image_path_equals_array(runs: dict, image: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "knee.png"
    cv2.imwrite(str(path), image)
    run = runs["se_resnet18"]
    np.testing.assert_allclose(explain.gradcam(run, path), explain.gradcam(run, image), atol=1e-6)


def test_target_layers() -> None:
    from kneelib.models.registry import build_model

    for arch, expected in (("resnet18", "layer4.1"), ("se_resnet50", "layer4.2"),
                           ("densenet121", "features.norm5"), ("se_densenet121", "features.se5")):
        model = build_model(arch, num_classes=3)
        names = {m: n for n, m in model.named_modules()}
        assert names[explain.target_layer(model, arch)] == expected
    with pytest.raises(KneelibError, match="no Grad-CAM target layer"):
        explain.target_layer(model, "vgg16")


def _hooked_norm5_output(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(norm5's output tensor as the hook saw it, without copying; the logits)."""
    seen: list[torch.Tensor] = []
    handle = model.features.norm5.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    return seen[0], logits


def test_relu_not_inplace_keeps_hooked_activations_and_restores(runs: dict) -> None:
    model = runs["densenet121"].model
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    plain_act, plain_logits = _hooked_norm5_output(model, x)
    assert plain_act.min() >= 0  # the in-place ReLU overwrote the hooked activations
    with explain.relu_not_inplace(model):
        assert "forward" in model.__dict__
        act, logits = _hooked_norm5_output(model, x)
    assert act.min() < 0  # pre-ReLU values survive
    torch.testing.assert_close(logits, plain_logits)
    assert "forward" not in model.__dict__ and model.forward.__func__ is DenseNet.forward
    with pytest.raises(RuntimeError, match="boom"), explain.relu_not_inplace(model):
        raise RuntimeError("boom")
    assert "forward" not in model.__dict__


def test_gradcam_restores_densenet_and_leaves_no_hooks_or_grads(runs: dict, image: np.ndarray) -> None:
    run = runs["densenet121"]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = run.model(x)
    cam = explain.gradcam(run, image)
    assert np.isfinite(cam).all() and cam.std() > 1e-3
    assert "forward" not in run.model.__dict__ and run.model.forward.__func__ is DenseNet.forward
    assert not run.model.training
    assert all(not m._forward_hooks for m in run.model.modules())
    assert all(p.grad is None for p in run.model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(run.model(x), before)


def test_gradcam_inside_inference_mode(runs: dict, image: np.ndarray) -> None:
    run = runs["resnet18"]
    with torch.inference_mode():
        cam = explain.gradcam(run, image)
    np.testing.assert_allclose(cam, explain.gradcam(run, image), atol=1e-6)


def test_ensemble_map_is_mean_of_member_maps(runs: dict, image: np.ndarray) -> None:
    members = [runs["resnet18"], runs["se_resnet18"], runs["se_densenet121"]]
    cam, probs = explain.ensemble_gradcam(members, image)
    expected_probs = ensemble_probabilities(forward(members, [image], progress=False))[0]
    np.testing.assert_allclose(probs, expected_probs)
    cls = int(expected_probs.argmax())
    singles = [explain.gradcam(r, image, target=cls) for r in members]
    np.testing.assert_allclose(cam, np.mean(singles, axis=0), atol=1e-6)
    assert cam.shape == (64, 64) and 0 <= cam.min() and cam.max() <= 1
    cam2, _ = explain.ensemble_gradcam(members, image, target=(cls + 1) % 5)
    assert not np.allclose(cam, cam2)


def test_ensemble_of_different_sizes_uses_the_largest(tmp_path: Path, runs: dict, image: np.ndarray) -> None:
    big = load_run(make_run(tmp_path, "big", arch="resnet18", image_size=96, seed=7))
    cam, probs = explain.ensemble_gradcam([runs["resnet18"], big], image)
    assert cam.shape == (96, 96) and probs.shape == (5,)
    assert probs.sum() == pytest.approx(1.0)


def test_overlay_and_write_overlays(image: np.ndarray, tmp_path: Path) -> None:
    cam = np.zeros((64, 64), np.float32)
    cam[:32] = 1.0
    over = explain.overlay(image, cam)
    assert over.shape == (*image.shape, 3) and over.dtype == np.uint8
    top, bottom = over[: image.shape[0] // 4], over[-image.shape[0] // 4:]
    assert top[..., 0].mean() > bottom[..., 0].mean()  # red (hot) on top, blue (cold) below
    assert bottom[..., 2].mean() > top[..., 2].mean()
    paths = explain.write_overlays(tmp_path / "out", {"knee_1": over, "knee_2.png": over[:, ::-1]})
    assert [p.name for p in paths] == ["knee_1.png", "knee_2.png"]
    back = cv2.cvtColor(cv2.imread(str(paths[0])), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, over)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["knee_1.png", "knee_2.png"]
    with pytest.raises(KneelibError, match="cannot name"):
        explain.write_overlays(tmp_path / "out", [("../escape", over)])
    with pytest.raises(KneelibError, match="uint8"):
        explain.overlay(image.astype(np.float32), cam)


def test_non_finite_map_is_a_kneelib_error(tmp_path: Path, image: np.ndarray) -> None:
    run = load_run(make_run(tmp_path, "nan", arch="resnet18"))
    with torch.no_grad():
        run.model.layer4[-1].bn2.bias.fill_(float("nan"))
    with pytest.raises(KneelibError, match="not finite"):
        explain.gradcam(run, image)
