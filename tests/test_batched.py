"""The GPU fast path on CPU tensors: batched augmentation against the PIL path, device-resident batches,
training with the data on the device, step fallbacks, and the out-of-memory message."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import make_tiny_dataset
from no_sync import HostSync, forbid_host_sync
from PIL import Image

from kneelib.data.batched import BatchedAugmentation, DeviceBatches
from kneelib.data.transforms import paper_augmentation
from kneelib.errors import KneelibError
from kneelib.models.registry import build_model
from kneelib.train import Runtime, TrainConfig, train
from kneelib.train import loop as train_loop
from kneelib.train.steps import EagerStep, _Snapshot, make_step

TINY = dict(arch="resnet18", epochs=2, image_size=64, batch_size=4, seed=5)
ON_DEVICE = Runtime(device="cpu", data_on_device=True)
N_DRAWS = 1500


def _test_image(size: int = 64) -> np.ndarray:
    """A bright left half, a gradient right half, a dark square: flips, warps and jitter all show."""
    image = np.zeros((size, size), np.uint8)
    image[:, : size // 2] = 190
    image[:, size // 2:] = np.linspace(60, 140, size - size // 2, dtype=np.uint8)
    image[size // 4: size // 2, size // 4: size // 2] = 20
    return image


def _summaries(batch: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image statistics of float images in [0, 1], ``N×S×S``."""
    half = batch.shape[-1] // 2
    return {"mean": batch.mean((1, 2)), "std": batch.std((1, 2)),
            "black": (batch < 0.5 / 255).mean((1, 2)),  # zero-filled corners (and nothing else)
            "left_brighter": (batch[:, :, :half].mean((1, 2)) > batch[:, :, half:].mean((1, 2))).astype(float)}


@pytest.fixture(scope="module")
def both_paths() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    image = _test_image()
    augment = paper_augmentation()
    pil = []
    for i in range(N_DRAWS):
        torch.manual_seed(1000 + i)
        pil.append(np.asarray(augment(Image.fromarray(image)), np.float32) / 255.0)
    torch.manual_seed(7)
    batched = BatchedAugmentation()(torch.from_numpy(image)[None, None].repeat(N_DRAWS, 1, 1, 1))
    return _summaries(np.stack(pil)), _summaries(batched[:, 0].numpy())


def _agree(pil: dict[str, np.ndarray], batched: dict[str, np.ndarray], stat: str) -> bool:
    """The mean of the statistic over the draws agrees within 4 standard errors, its spread within 15%."""
    a, b = pil[stat], batched[stat]
    se = np.sqrt(a.var() / len(a) + b.var() / len(b))
    return bool(abs(a.mean() - b.mean()) < 4 * se + 1e-3 and (stat == "left_brighter"
                                                                or b.std() == pytest.approx(a.std(), rel=0.15)))


@pytest.mark.parametrize("stat", ["mean", "std", "black", "left_brighter"])
def test_batched_augmentation_matches_the_pil_path(both_paths, stat: str) -> None:
    pil, batched = both_paths
    assert _agree(pil, batched, stat), (stat, pil[stat].mean(), batched[stat].mean(), pil[stat].std(),
                                        batched[stat].std())


@pytest.mark.parametrize("wrong", [dict(degrees=20.0), dict(scale=(0.8, 1.2)), dict(brightness=0.5, contrast=0.5),
                                   dict(flip=0.0)])
def test_the_comparison_with_the_pil_path_sees_a_wrong_strength(both_paths, wrong: dict) -> None:
    torch.manual_seed(7)
    image = torch.from_numpy(_test_image())[None, None].repeat(N_DRAWS, 1, 1, 1)
    batched = _summaries(BatchedAugmentation(**wrong)(image)[:, 0].numpy())
    assert not all(_agree(both_paths[0], batched, stat) for stat in ("mean", "std", "black", "left_brighter"))


def test_batched_parameters_are_the_papers_and_independent_per_image() -> None:
    augment = BatchedAugmentation()
    p = augment.params(augment.draw(4000, "cpu", torch.Generator().manual_seed(0)))
    angle, scale = p["angle"], p["scale"]
    assert angle.abs().max() <= 10 and angle.std() == pytest.approx(20 / 12 ** 0.5, rel=0.05)
    assert 0.9 <= scale.min() and scale.max() <= 1.1 and scale.std() == pytest.approx(0.2 / 12 ** 0.5, rel=0.05)
    for name in ("brightness", "contrast"):
        assert 0.67 <= p[name].min() and p[name].max() <= 1.33
        assert p[name].std() == pytest.approx(0.66 / 12 ** 0.5, rel=0.05)
    for name in ("flip", "jitter_first", "brightness_first"):
        assert p[name].float().mean() == pytest.approx(0.5, abs=0.03)
    draws = torch.stack([angle, scale, p["brightness"], p["contrast"]])
    corr = torch.corrcoef(draws)
    assert (corr - torch.eye(4)).abs().max() < 0.06  # independent parameters
    torch.manual_seed(0)
    out = augment(torch.full((400, 1, 32, 32), 100, dtype=torch.uint8))
    assert len(torch.unique(out.mean((1, 2, 3)))) > 300  # a draw per image, not one per batch
    assert out.dtype == torch.float32 and out.shape == (400, 1, 32, 32) and 0 <= out.min() and out.max() <= 1


def _draws(**columns: float) -> torch.Tensor:
    """One image's draws with the named columns set (the rest 0.75: no flip, brightness/contrast order 2)."""
    from kneelib.data import batched

    u = torch.full((1, batched.DRAWS), 0.75)
    for name, value in columns.items():
        u[0, getattr(batched, f"_{name.upper()}")] = value
    return u


def test_the_warp_is_torchvisions_affine_nearest_zero_fill() -> None:
    from torchvision.transforms.v2 import functional as TF

    image = torch.from_numpy(_test_image())[None, None]
    image = image + torch.randint(0, 30, image.shape, generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    augment = BatchedAugmentation(brightness=0, contrast=0, flip=0)
    for angle, scale in [(8.0, 1.0), (-8.0, 1.07), (0.0, 0.92), (10.0, 0.9), (-3.0, 1.1)]:
        u = _draws(angle=(angle / 10 + 1) / 2, scale=(scale - 0.9) / 0.2)
        ours = (augment.apply(image, u) * 255).round().to(torch.uint8)
        theirs = TF.affine(image, angle=angle, translate=[0, 0], scale=scale, shear=[0.0, 0.0],
                           interpolation=TF.InterpolationMode.NEAREST, fill=0)
        assert (ours == theirs).float().mean() > 0.995, (angle, scale)


def test_the_jitter_is_torchvisions_brightness_and_contrast() -> None:
    from torchvision.transforms.v2 import functional as TF

    x = torch.from_numpy(_test_image())[None, None]
    f = x.float() / 255
    augment = BatchedAugmentation(degrees=0, scale=(1.0, 1.0), flip=0)
    u = _draws(brightness=1.0, contrast=0.0, brightness_first=0.0)  # 1.33 brightness, 0.67 contrast, brightness first
    expected = TF.adjust_contrast(TF.adjust_brightness(f, 1.33), 0.67)
    assert torch.allclose(augment.apply(x, u), expected, atol=1e-6)
    u = _draws(brightness=1.0, contrast=0.0, brightness_first=0.9)
    expected = TF.adjust_brightness(TF.adjust_contrast(f, 0.67), 1.33)
    assert torch.allclose(augment.apply(x, u), expected, atol=1e-6)


def test_flips_are_exact_and_zero_strength_is_the_identity() -> None:
    images = torch.randint(0, 256, (200, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    plain = images.float() / 255
    off = BatchedAugmentation(degrees=0, scale=(1.0, 1.0), brightness=0, contrast=0, flip=0)
    assert torch.equal(off(images), plain)
    flip_only = BatchedAugmentation(degrees=0, scale=(1.0, 1.0), brightness=0, contrast=0)
    out = flip_only(images, torch.Generator().manual_seed(3))
    same = (out == plain).flatten(1).all(1)
    mirrored = (out == plain.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 70 < int(mirrored.sum()) < 130
    with pytest.raises(ValueError, match="degrees >= 0"):
        BatchedAugmentation(scale=(1.1, 0.9))


def test_draws_repeat_per_seed_and_differ_across_seeds() -> None:
    images = torch.randint(0, 256, (16, 1, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    augment = BatchedAugmentation()

    def run(seed: int) -> torch.Tensor:
        return augment(images, torch.Generator().manual_seed(seed))

    assert torch.equal(run(5), run(5)) and not torch.equal(run(5), run(6))
    assert torch.equal(augment(images, torch.Generator().manual_seed(5)), run(5))  # no hidden state


def test_the_augmentation_and_the_batches_never_read_a_value_back_to_the_host() -> None:
    images = [torch.randint(0, 256, (1, 16, 16), dtype=torch.uint8) for _ in range(10)]
    data = DeviceBatches(images, torch.arange(10) % 5, "cpu", augment=True, seed=3)
    augment = BatchedAugmentation()
    batch = torch.stack(images)
    with forbid_host_sync():
        augment(batch)
        augment(batch, torch.Generator().manual_seed(1))
        for order in (list(range(10)), torch.arange(10).flip(0)):
            for x, y in data.batches(order, 4, epoch=1, memory_format=torch.channels_last):
                assert x.shape[1:] == (3, 16, 16)
    with forbid_host_sync(), pytest.raises(HostSync):  # the guard works
        batch.sum().item()


def test_batched_augmentation_rejects_float_input() -> None:
    with pytest.raises(ValueError, match="uint8 N×1×S×S"):
        BatchedAugmentation()(torch.zeros(2, 1, 8, 8))


def test_device_batches_are_seeded_by_epoch_and_step() -> None:
    images = [torch.randint(0, 256, (1, 16, 16), dtype=torch.uint8) for _ in range(10)]
    targets = torch.arange(10) % 5
    data = DeviceBatches(images, targets, "cpu", augment=True, seed=3)
    order = list(reversed(range(10)))

    def epoch(e: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(data.batches(order, 4, epoch=e, drop_last=True))

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert [x.shape for x, _ in first] == [(4, 3, 16, 16)] * 2  # 10 = 4 + 4 (+ 2 dropped)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], other[0][0])
    assert first[0][1].tolist() == [targets[i].item() for i in order[:4]]
    plain = DeviceBatches(images, targets, "cpu", augment=False)
    x, _ = next(plain.batches(range(10), 10))
    assert torch.allclose(x[:, 0], torch.stack(images)[:, 0].float() / 127.5 - 1)  # normalised, no change


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open(newline="") as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def test_training_with_data_on_the_device_resumes_exactly(data: Path, tmp_path: Path) -> None:
    straight = train(TrainConfig(**TINY), runtime=ON_DEVICE, data_dir=data, out_dir=tmp_path / "a", progress=False,
                     verbose=False).run_dir
    execution = json.loads((straight / "config.json").read_text())["execution"]
    assert execution["data"].startswith("on the device") and execution["step"] == "eager"
    resumed = tmp_path / "b"
    train(TrainConfig(**TINY), runtime=ON_DEVICE, data_dir=data, out_dir=resumed, progress=False, verbose=False,
          stop_after_epoch=1)
    train(TrainConfig(**TINY), runtime=ON_DEVICE, data_dir=data, out_dir=resumed, resume=True, progress=False,
          verbose=False)
    assert _rows(resumed) == _rows(straight)
    host = train(TrainConfig(**TINY), runtime=Runtime(device="cpu", data_on_device=False), data_dir=data,
                 out_dir=tmp_path / "c", progress=False, verbose=False).run_dir
    assert json.loads((host / "config.json").read_text())["execution"]["data"].startswith("host")


def test_steps_fall_back_to_eager_on_a_cpu_and_snapshots_restore() -> None:
    model = build_model("resnet18", num_classes=5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    step = make_step(model, optimizer, torch.device("cpu"), batch_size=4, example=x, num_classes=5)
    assert isinstance(step, EagerStep) and "CUDA device" in step.why
    before = {k: v.clone() for k, v in model.state_dict().items()}
    snapshot = _Snapshot(model, optimizer)
    for _ in range(2):
        step(x, y)
    assert not all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    snapshot.restore()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.count_nonzero(t) == 0 for s in optimizer.state.values() for t in s.values())


def test_out_of_gpu_memory_is_one_line_and_the_run_stays_resumable(data: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real = train_loop.run_epoch
    calls = {"n": 0}

    def run_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 2's training pass
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_loop, "run_epoch", run_epoch)
    out = tmp_path / "oom"
    with pytest.raises(KneelibError) as err:
        train(TrainConfig(**TINY), runtime=ON_DEVICE, data_dir=data, out_dir=out, progress=False, verbose=False)
    message = str(err.value)
    assert "\n" not in message and "out of GPU memory at batch size 4" in message and "--resume" in message
    monkeypatch.setattr(train_loop, "run_epoch", real)
    train(TrainConfig(**TINY), runtime=ON_DEVICE, data_dir=data, out_dir=out, resume=True, progress=False,
          verbose=False)
    assert json.loads((out / "status.json").read_text())["finished"] is True


def test_augmentation_strength_scales_the_batched_draws_as_the_per_image_path() -> None:
    from kneelib.data.batched import BatchedAugmentation

    full, none, half = (BatchedAugmentation.of_strength(s) for s in (1.0, 0.0, 0.5))
    assert (full.degrees, full.scale, full.brightness, full.contrast) == (10.0, (0.9, 1.1), 0.33, 0.33)
    assert (none.degrees, none.scale, none.brightness, none.contrast, none.flip) == (0.0, (1.0, 1.0), 0.0, 0.0, 0.5)
    assert half.degrees == 5.0 and half.scale == pytest.approx((0.95, 1.05))
