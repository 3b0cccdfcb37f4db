"""Quality filter and splits (kneelib.data.quality / split / stats)."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from kneelib.data import discover
from kneelib.data.layout import Sample
from kneelib.data.quality import (
    calibrate_blur_threshold,
    filter_images,
    read_report,
    write_report,
)
from kneelib.data.split import (
    exclude,
    grouped_split,
    paper_split,
    parse_ratios,
    patients_across_splits,
    proportions,
    split_samples,
    write_split,
)
from kneelib.data.stats import class_counts, counts_dict
from kneelib.errors import KneelibError


def fake_samples(n_patients: int = 150, seed: int = 0) -> list[Sample]:
    """Patients with one or two knees; grades skewed like KL data (many 0, few 4)."""
    rng = np.random.default_rng(seed)
    samples = []
    for p in range(n_patients):
        pid = f"{9000000 + p}"
        base = rng.choice(5, p=[0.35, 0.2, 0.25, 0.13, 0.07])
        for side in ("L", "R")[: rng.integers(1, 3)]:
            grade = int(np.clip(base + rng.integers(-1, 2) * (rng.random() < 0.3), 0, 4))
            samples.append(Sample(Path(f"/fake/{pid}{side}.png"), grade, pid, side, None))
    return samples


def assert_split_ok(samples: list[Sample], ratios: tuple[float, ...], tol: float = 0.02) -> None:
    """No patient in two splits; each split's share within ``tol`` overall and per grade — per grade
    also allowing 1.5 images, as a grade of 25 images cannot hit 10% ± 2% except exactly."""
    assert not patients_across_splits(samples)
    shares = proportions(samples)
    per_grade = Counter(s.grade for s in samples)
    slack = pd.Series({"all": tol, **{g: max(tol, 1.5 / n) for g, n in per_grade.items()}})
    for split, ratio in zip(("train", "val", "test"), ratios):
        if ratio == 0:
            assert split not in shares.index
        else:
            assert ((shares.loc[split] - ratio).abs() <= slack[shares.columns]).all(), shares


def test_parse_ratios() -> None:
    assert parse_ratios("7:1:2") == pytest.approx((0.7, 0.1, 0.2))
    assert parse_ratios("0.8:0.2:0") == pytest.approx((0.8, 0.2, 0.0))
    for bad in ("7:3", "a:b:c", "0:1:1", "7:-1:2"):
        with pytest.raises(KneelibError, match="--ratios"):
            parse_ratios(bad)


def test_grouped_split_invariants() -> None:
    samples = fake_samples()
    assert 200 < len(samples) < 300
    out = grouped_split(samples, (0.7, 0.1, 0.2), seed=42)
    assert len(out) == len(samples) and {s.path for s in out} == {s.path for s in samples}
    assert_split_ok(out, (0.7, 0.1, 0.2))
    assert out == grouped_split(samples, (0.7, 0.1, 0.2), seed=42)  # deterministic
    assert out != grouped_split(samples, (0.7, 0.1, 0.2), seed=1)
    for seed in range(10):  # not a lucky seed: every seed and data draw stays within ±2%
        assert_split_ok(grouped_split(fake_samples(120, seed), (0.7, 0.1, 0.2), seed), (0.7, 0.1, 0.2))
    two = grouped_split(samples, (0.8, 0.2, 0.0), seed=3)
    assert {s.split for s in two} == {"train", "val"}
    assert_split_ok(two, (0.8, 0.2, 0.0))


def test_paper_split_keeps_test() -> None:
    samples = fake_samples(300)
    samples = [Sample(s.path, s.grade, s.patient_id, s.side, "test" if i % 5 == 0 else "train")
               for i, s in enumerate(samples)]
    out = paper_split(samples, seed=42)
    assert {s for s in out if s.split == "test"} == {s for s in samples if s.split == "test"}
    pool = [s for s in out if s.split != "test"]
    val = [s for s in pool if s.split == "val"]
    assert abs(len(val) / len(pool) - 0.125) < 0.01
    assert (proportions(pool).loc["val"] - 0.125).abs().max() < 0.03  # stratified
    assert patients_across_splits(out)  # not grouped: knees of a patient may straddle


def test_real_grouped_split(real_kl224: Path) -> None:
    pooled = discover(real_kl224)  # train + val, re-split
    out = split_samples(pooled, protocol="grouped", seed=42)
    assert_split_ok(out, (0.7, 0.1, 0.2))
    with pytest.raises(KneelibError, match="unknown split protocol"):
        split_samples(pooled, protocol="random")
    assert len({s.patient_id for s in out}) == 3302


def tiny_dataset(root: Path, n_patients: int = 40) -> list[Sample]:
    ok, data = cv2.imencode(".png", np.full((8, 8), 128, np.uint8))
    for s in fake_samples(n_patients, seed=5):
        dest = root / str(s.grade) / s.path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data.tobytes())
    return discover(root)


def test_write_split_and_roundtrip(tmp_path: Path) -> None:
    samples = tiny_dataset(tmp_path / "pool")
    out = grouped_split(samples, (0.7, 0.1, 0.2), seed=0)
    dest, mode = write_split(out, tmp_path / "out", info={"protocol": "grouped"}, source=tmp_path / "pool")
    assert mode == "symlink" and (dest / "split.json").is_file()
    manifest = pd.read_csv(dest / "manifest.csv", dtype=str)
    assert list(manifest.columns) == ["path", "grade", "patient_id", "side", "split", "source", "protocol"]
    assert len(manifest) == len(samples) and set(manifest["protocol"]) == {"grouped"}
    again = discover(dest)  # folders
    assert [(s.split, s.grade, s.patient_id) for s in again] == [(s.split, s.grade, s.patient_id) for s in out]
    assert len(discover(dest / "manifest.csv")) == len(samples)
    assert counts_dict(class_counts(dest)) == counts_dict(class_counts(out))
    with pytest.raises(KneelibError, match="exists and is not empty"):
        write_split(out, dest, info={})
    with pytest.raises(KneelibError, match="inside the input data"):
        write_split(out, tmp_path / "pool" / "x", info={}, source=tmp_path / "pool")
    with pytest.raises(KneelibError, match="inside the input data"):
        write_split(out, tmp_path / "pool" / "0" / "x", info={})
    assert not (tmp_path / "pool" / "x").exists()


def test_write_split_link_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    samples = grouped_split(tiny_dataset(tmp_path / "pool", 6), (0.7, 0.1, 0.2))

    def refuse(*args: object) -> None:
        raise OSError("links not supported here")

    monkeypatch.setattr(os, "symlink", refuse)
    _, mode = write_split(samples, tmp_path / "hard", info={})
    assert mode == "hardlink"
    monkeypatch.setattr(os, "link", refuse)
    dest, mode = write_split(samples, tmp_path / "copy", info={})
    assert mode == "copy" and not any(p.is_symlink() for p in dest.rglob("*.png"))


def test_write_split_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    samples = grouped_split(tiny_dataset(tmp_path / "pool", 6), (0.7, 0.1, 0.2))
    samples[-1] = Sample(tmp_path / "pool" / "0" / "gone.png", 0, "x", None, "train")
    with pytest.raises(KneelibError, match="gone.png: no such file"):  # checked before anything is written
        write_split(samples, tmp_path / "out", info={}, link="copy")
    cv2.imwrite(str(samples[-1].path), np.zeros((64, 64), np.uint8))
    copy = shutil.copy2

    def copy_fails_last(src: Path, dest: Path) -> object:
        if Path(src).name == "gone.png":
            raise OSError(5, "Input/output error")
        return copy(src, dest)

    monkeypatch.setattr(shutil, "copy2", copy_fails_last)
    with pytest.raises(KneelibError, match="gone.png: cannot link or copy"):
        write_split(samples, tmp_path / "out", info={}, link="copy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool"]


def blurred_and_corrupt(tmp_path: Path, real_kl224: Path) -> tuple[Path, set[str]]:
    """12 sharp real crops, 3 blurred copies (sigma 3) and broken files in one folder."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    reals = sorted((real_kl224 / "val").rglob("*.png"))[::40][:15]
    bad = set()
    for i, src in enumerate(reals):
        img = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE)
        if i % 5 == 0:
            img = cv2.GaussianBlur(img, (0, 0), 3)
            bad.add(f"blur{i}.png")
            cv2.imwrite(str(folder / f"blur{i}.png"), img)
        else:
            cv2.imwrite(str(folder / f"sharp{i}.png"), img)
    data = (folder / "sharp1.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 3])
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.png").write_bytes(b"<html>not an image</html>")
    cv2.imwrite(str(folder / "tiny.png"), np.full((20, 20), 9, np.uint8) + np.eye(20, dtype=np.uint8))
    cv2.imwrite(str(folder / "blank.png"), np.zeros((100, 100), np.uint8))
    colour = np.zeros((100, 100, 3), np.uint8)
    colour[..., 2] = np.arange(100, dtype=np.uint8)[None, :] * 2
    cv2.imwrite(str(folder / "colour.jpg"), colour)
    (folder / "notes.txt").write_text("not checked")
    return folder, bad


def test_filter_flags_corrupt_and_blurred(tmp_path: Path, real_kl224: Path) -> None:
    folder, blurred = blurred_and_corrupt(tmp_path, real_kl224)
    result = filter_images(folder, progress=False)
    reasons = {c.path.name: c.reason for c in result.checks}
    assert "notes.txt" not in reasons and len(reasons) == 21
    assert {n for n, r in reasons.items() if r == "blurred"} == blurred
    assert all(reasons[f"sharp{i}.png"] == "ok" for i in range(15) if i % 5)
    assert (reasons["truncated.png"], reasons["zero.png"], reasons["text.png"]) == ("truncated", "empty", "unreadable")
    assert (reasons["tiny.png"], reasons["blank.png"], reasons["colour.jpg"]) == ("tiny", "blank", "wrong-mode")
    assert 5 < result.threshold.value < 100 and "median" in result.threshold.method

    report, side = write_report(result, tmp_path / "rep" / "r.csv")
    table = pd.read_csv(report)
    assert list(table.columns) == ["file", "reason", "score", "detail"] and len(table) == 21
    meta = json.loads(side.read_text())
    assert meta["blur"]["value"] == pytest.approx(result.threshold.value) and meta["counts"]["blurred"] == 3
    flagged = read_report(report)
    assert len(flagged) == 9 and (folder / "zero.png").resolve() in flagged

    fixed = filter_images(folder, threshold=1e9, progress=False)
    assert Counter(c.reason for c in fixed.checks)["blurred"] == 15


def test_blur_calibration_needs_enough_images() -> None:
    assert calibrate_blur_threshold([100.0, 120.0]).value is None
    assert calibrate_blur_threshold([100.0] * 20).value == pytest.approx(100 / 15)
    assert calibrate_blur_threshold([1.0, 2.0, 300.0, 400.0, 500.0]).value == pytest.approx(20.0)


def test_exclude(tmp_path: Path) -> None:
    samples = tiny_dataset(tmp_path / "pool", 10)
    flagged = {samples[0].path.resolve(), samples[3].path.resolve(), tmp_path / "other.png"}
    kept, dropped = exclude(samples, flagged)
    assert dropped == 2 and len(kept) == len(samples) - 2
    bad = tmp_path / "bad.csv"
    bad.write_text("path,why\n")
    with pytest.raises(KneelibError, match="not a filter report"):
        read_report(bad)


def test_class_counts(tmp_path: Path) -> None:
    samples = tiny_dataset(tmp_path / "pool", 30)
    table = class_counts(samples, "kl4")
    assert list(table.index) == ["all"] and list(table.columns) == ["0-1", "2", "3", "4", "total"]
    assert table.loc["all", "total"] == len(samples)
    split = grouped_split(samples, (0.7, 0.1, 0.2))
    table = class_counts(split, "oa")
    assert list(table.index) == ["train", "val", "test", "total"]
    assert table.loc["total", "total"] == len(samples)
    assert set(counts_dict(table)) == {"train", "val", "test"}
