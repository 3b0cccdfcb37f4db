"""Preprocessing (resize + CLAHE), tensor conversion, paper augmentation and the decode-once dataset."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fakes import make_tiny_dataset

from kneelib.data import io as image_io
from kneelib.data.dataset import DecodeCache, KneeDataset
from kneelib.data.layout import discover, select_split
from kneelib.data.transforms import (
    NORMALIZE,
    clahe,
    paper_augmentation,
    preprocess,
    to_tensor,
)
from kneelib.errors import KneelibError


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    return make_tiny_dataset(tmp_path / "data")


# --- preprocess -----------------------------------------------------------------------------------

def test_preprocess_resizes_to_uint8_square() -> None:
    gray = (np.arange(299 * 250) % 251).astype(np.uint8).reshape(299, 250)
    out = preprocess(gray, image_size=224, clahe=False)
    assert out.shape == (224, 224) and out.dtype == np.uint8
    up = preprocess(np.full((50, 60), 7, np.uint8), image_size=64, clahe=False)
    assert up.shape == (64, 64) and (up == 7).all()
    same = preprocess(gray[:224, :224], image_size=224, clahe=False)
    assert np.array_equal(same, gray[:224, :224])  # right size already: untouched


def test_preprocess_clahe_is_opencv_clahe_on_the_resized_image() -> None:
    gray = np.random.default_rng(1).integers(0, 120, (100, 100), dtype=np.uint8)
    resized = cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA)
    expected = cv2.createCLAHE(clipLimit=5.0, tileGridSize=(8, 8)).apply(resized)
    assert np.array_equal(preprocess(gray, image_size=64, clahe=True), expected)
    assert np.array_equal(clahe(resized), expected)


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.float32), np.zeros((4, 4, 3), np.uint8),
                                 np.zeros((0, 5), np.uint8)])
def test_preprocess_rejects_non_gray_uint8(bad: np.ndarray) -> None:
    with pytest.raises(KneelibError):
        preprocess(bad, image_size=64, clahe=False)


@pytest.mark.realdata
def test_clahe_reproduces_kneeKL224_from_raw_sample(real_raw: Path, real_kl224: Path) -> None:
    """Resize 299 → 224 (INTER_AREA) + CLAHE gives the kneeKL224 file within 3 grey levels (MAD)."""
    raw_files = sorted(real_raw.glob("*/*.png"))
    assert len(raw_files) == 100
    mads = []
    for path in raw_files:
        ours = preprocess(image_io.read_image(path), image_size=224, clahe=True)
        ref = image_io.read_image(real_kl224 / "train" / path.parent.name / path.name)
        mads.append(np.abs(ours.astype(int) - ref.astype(int)).mean())
    assert max(mads) < 3.0, f"worst file MAD {max(mads):.2f}"
    assert np.mean(mads) < 2.5, f"mean MAD {np.mean(mads):.2f}"


# --- to_tensor / augmentation ---------------------------------------------------------------------

def test_to_tensor_normalises_and_replicates_gray() -> None:
    u8 = np.array([[0, 255], [51, 204]], np.uint8)
    x = to_tensor(u8)
    assert x.shape == (3, 2, 2) and x.dtype == torch.float32
    mean, std = NORMALIZE
    assert torch.allclose(x[0], (torch.tensor([[0, 255], [51, 204]]) / 255 - mean) / std)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert to_tensor(torch.zeros(4, 1, 8, 8, dtype=torch.uint8)).shape == (4, 3, 8, 8)
    assert to_tensor(torch.zeros(4, 8, 8, dtype=torch.uint8)).shape == (4, 3, 8, 8)
    assert to_tensor(torch.zeros(1, 8, 8, dtype=torch.uint8)).shape == (3, 8, 8)
    with pytest.raises(KneelibError):
        to_tensor(np.zeros((2, 2), np.float32))


def test_paper_augmentation_on_uint8_gray_tensor() -> None:
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 64, 64), dtype=np.uint8))
    aug = paper_augmentation()
    torch.manual_seed(3)
    a = aug(image)
    torch.manual_seed(3)
    b = aug(image)
    assert a.shape == (1, 64, 64) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    outs = {aug(image).numpy().tobytes() for _ in range(4)}
    assert len(outs) > 1  # random


def test_saturation_jitter_is_a_no_op_on_gray() -> None:
    from torchvision.transforms import v2

    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 32, 32), dtype=np.uint8))
    jitter = v2.ColorJitter(saturation=0.33)
    assert all(torch.equal(jitter(image), image) for _ in range(5))


# --- dataset and cache ----------------------------------------------------------------------------

def _counting_read(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = image_io.read_image

    def counting(path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(image_io, "read_image", counting)
    return calls


def test_dataset_items_and_labels(tiny: Path) -> None:
    samples = select_split(discover(tiny), "val")
    ds = KneeDataset(samples, "kl4", image_size=64, train=False, clahe=True, cache=DecodeCache())
    assert len(ds) == 5
    x, y = ds[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and isinstance(y, int)
    assert [ds[i][1] for i in range(5)] == [0, 0, 1, 2, 3]  # kl4 merges KL0 and KL1
    expected = to_tensor(preprocess(image_io.read_image(samples[3].path), image_size=64, clahe=True))
    assert torch.equal(ds[3][0], expected)  # no augmentation outside the train split
    assert ds.class_counts() == [2, 1, 1, 1]


def test_train_augmentation_is_seeded_per_epoch_and_sample(tiny: Path) -> None:
    samples = select_split(discover(tiny), "train")
    ds = KneeDataset(samples, "kl5", image_size=64, train=True, clahe=False, cache=DecodeCache(), seed=5)
    ds.set_epoch(1)
    a = ds[2][0]
    b = ds[2][0]
    ds.set_epoch(2)
    c = ds[2][0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    other = KneeDataset(samples, "kl5", image_size=64, train=True, clahe=False, cache=DecodeCache(), seed=6)
    other.set_epoch(1)
    assert not torch.equal(other[2][0], a)
    # __getitem__ leaves the global torch RNG alone
    torch.manual_seed(0)
    ds[1]
    drawn = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), drawn)


def test_no_decoding_after_first_pass(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting_read(monkeypatch)
    samples = select_split(discover(tiny), "train")
    cache = DecodeCache()
    ds = KneeDataset(samples, "kl5", image_size=64, train=True, clahe=True, cache=cache)
    assert len(calls) == len(samples) == cache.decodes
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            ds[i]
    again = KneeDataset(samples, "kl5", image_size=64, train=False, clahe=True, cache=cache)
    again[0]
    assert len(calls) == len(samples)  # nothing decoded after the first pass
    KneeDataset(samples, "kl5", image_size=96, train=False, clahe=True, cache=cache)
    assert len(calls) == 2 * len(samples)  # other preprocessing parameters: a new entry


def test_disk_cache_survives_the_process(tiny: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    samples = select_split(discover(tiny), "val")
    disk = tmp_path / "cache"
    first = KneeDataset(samples, "kl5", image_size=64, train=False, clahe=True, cache=DecodeCache(disk))
    files = sorted(disk.rglob("*.npy"))
    assert len(files) == len(samples)
    assert not [p for p in disk.rglob("*") if p.name.startswith(".")]  # no temp files left
    calls = _counting_read(monkeypatch)
    second = KneeDataset(samples, "kl5", image_size=64, train=False, clahe=True, cache=DecodeCache(disk))
    assert calls == []
    assert all(torch.equal(first[i][0], second[i][0]) for i in range(len(samples)))
    files[0].write_bytes(b"garbage")  # a damaged entry is rebuilt, not fatal
    third = KneeDataset(samples, "kl5", image_size=64, train=False, clahe=True, cache=DecodeCache(disk))
    assert len(calls) == 1
    assert all(torch.equal(first[i][0], third[i][0]) for i in range(len(samples)))


def test_unreadable_file_is_a_kneelib_error(tiny: Path) -> None:
    samples = select_split(discover(tiny), "val")
    samples[0].path.write_bytes(b"not an image")
    with pytest.raises(KneelibError, match=samples[0].path.name):
        KneeDataset(samples, "kl5", image_size=64, train=False, clahe=False, cache=DecodeCache())


def test_augmentation_strength() -> None:
    from torchvision.transforms import v2

    from kneelib.data.transforms import paper_augmentation
    from kneelib.errors import KneelibError
    from kneelib.train import TrainConfig

    assert isinstance(paper_augmentation(0.0), v2.RandomHorizontalFlip)  # the flip alone
    paper, half = paper_augmentation(), paper_augmentation(0.5)
    affine = [t for t in half.transforms if isinstance(t, v2.RandomAffine)][0]
    assert list(affine.degrees) == [-5.0, 5.0] and affine.scale == (0.95, 1.05)
    assert [type(t) for t in paper.transforms] == [type(t) for t in half.transforms]
    assert TrainConfig.from_recipe("scratch", arch="resnet18", augment=0.0).validate().augment == 0.0
    with pytest.raises(KneelibError, match="augmentation strength"):
        TrainConfig(arch="resnet18", augment=-1.0).validate()
