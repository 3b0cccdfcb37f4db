"""The synthetic knee generator: layout, patients, determinism, blur, grade signal, bilateral, montage."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from kneelib.synthetic import crops as synthetic
from kneelib.data.layout import discover
from kneelib.errors import KneelibError
from kneelib.synthetic.anatomy import CROP_MM, render_knee
from kneelib.synthetic.bilateral import render_bilateral
from kneelib.synthetic.crops import generate_dataset, plan_dataset
from kneelib.synthetic.montage import grade_examples, synthetic_vs_real_montage

NAME = re.compile(r"^\d{7}[LR]\.png$")
PER_GRADE, SIZE, BLUR = 6, 64, 0.2


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synthetic") / "data"
    info = generate_dataset(out, per_grade=PER_GRADE, size=SIZE, seed=3, bilateral=1, blur_fraction=BLUR,
                            progress=False)
    return out, info


def manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def laplacian_var(path: Path) -> float:
    return float(cv2.Laplacian(cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float64), cv2.CV_64F).var())


def test_layout_and_naming(synth: tuple[Path, dict]) -> None:
    out, info = synth
    files = sorted(p for p in out.glob("*/*/*.png"))
    assert len(files) == 5 * PER_GRADE == info["images"] == len(info["paths"])
    per_grade = defaultdict(int)
    for p in files:
        split, grade = p.parts[-3], p.parts[-2]
        assert split in ("train", "val", "test") and grade in "01234" and NAME.match(p.name), p
        per_grade[grade] += 1
    assert dict(per_grade) == {str(g): PER_GRADE for g in range(5)}  # exactly per_grade per grade
    rows = manifest(out)
    assert [r["path"] for r in rows] == sorted(str(p.relative_to(out)) for p in files)
    for r in rows:
        split, grade, name = r["path"].split("/")
        assert (r["split"], r["grade"], r["patient_id"] + r["side"] + ".png") == (split, grade, name)
        assert 1_000_000 <= int(r["patient_id"]) < 9_000_000  # 7 digits, not an OAI-like 9xxxxxx id
    assert sum(sum(c.values()) for c in info["counts"].values()) == 5 * PER_GRADE
    assert len(discover(out)) == 5 * PER_GRADE  # the project's own reader sees the layout


def test_patients_split_together_and_grades_close(synth: tuple[Path, dict]) -> None:
    patients = defaultdict(list)
    for r in manifest(synth[0]):
        patients[r["patient_id"]].append(r)
    assert len(patients) == 5 * PER_GRADE // 2
    for knees in patients.values():
        assert sorted(k["side"] for k in knees) == ["L", "R"]
        assert len({k["split"] for k in knees}) == 1
        assert abs(int(knees[0]["grade"]) - int(knees[1]["grade"])) <= 1


@pytest.mark.parametrize("per_grade", [1, 7, 40])
def test_plan_exact_counts_and_split_ratios(per_grade: int) -> None:
    jobs = plan_dataset(per_grade, seed=5, ratios=(0.7, 0.1, 0.2), blur_fraction=0.03)
    assert np.bincount([j.grade for j in jobs], minlength=5).tolist() == [per_grade] * 5
    by_patient = defaultdict(list)
    for j in jobs:
        by_patient[j.patient].append(j)
    singles = [p for p, js in by_patient.items() if len(js) == 1]
    assert len(singles) == (5 * per_grade) % 2  # an odd total leaves one single-knee patient
    assert all(len({j.split for j in js}) == 1 and abs(js[0].grade - js[-1].grade) <= 1
               for js in by_patient.values())
    if per_grade == 40:
        share = np.bincount([("train", "val", "test").index(j.split) for j in jobs]) / len(jobs)
        assert np.allclose(share, (0.7, 0.1, 0.2), atol=0.02)
    assert sum(j.blurred for j in jobs) == round(0.03 * len(jobs))


def test_images_are_8bit_grayscale_of_the_requested_size(synth: tuple[Path, dict]) -> None:
    for path in synth[1]["paths"][:10]:
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "L", (SIZE, SIZE))
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert arr.dtype == np.uint8 and arr.ndim == 2 and arr.std() > 20


def test_deterministic_by_seed(tmp_path: Path) -> None:
    def files(out: Path) -> dict[str, bytes]:
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    kw = dict(per_grade=2, size=64, bilateral=1, progress=False)
    a = files(generate_dataset(tmp_path / "a", seed=1, **kw)["out"])
    b = files(generate_dataset(tmp_path / "b", seed=1, **kw)["out"])
    c = files(generate_dataset(tmp_path / "c", seed=2, **kw)["out"])
    assert a == b
    pngs = [k for k in a if k.endswith(".png")]
    assert sum(a[k] != c.get(k) for k in pngs) >= len(pngs) // 2


def test_blurred_share_is_flagged_and_blurrier(synth: tuple[Path, dict]) -> None:
    out, info = synth
    rows = manifest(out)
    blurred = [laplacian_var(out / r["path"]) for r in rows if r["blurred"] == "1"]
    sharp = [laplacian_var(out / r["path"]) for r in rows if r["blurred"] == "0"]
    assert len(blurred) == info["blurred"] == round(BLUR * len(rows))
    assert max(blurred) < 0.3 * float(np.median(sharp))


def test_grade_signal_is_monotone(synth: tuple[Path, dict]) -> None:
    rows = manifest(synth[0])
    sev = [np.mean([float(r["severity"]) for r in rows if r["grade"] == str(g)]) for g in range(5)]
    jsw = [np.mean([float(r["jsw_mm"]) for r in rows if r["grade"] == str(g)]) for g in range(5)]
    assert all(np.diff(sev) > 0.5)
    assert jsw[0] > jsw[2] > jsw[3] > jsw[4]
    # an image statistic: the darkest row of the medial joint region brightens as the joint narrows
    gap = []
    for g in (0, 2, 4):
        vals = []
        for i in range(16):
            im, _ = render_knee(np.random.default_rng([7, g, i]), float(g), size=64)
            vals.append(im[25:48, 35:54].astype(float).mean(axis=1).min())
        gap.append(np.mean(vals))
    assert gap[0] + 5 < gap[1] < gap[2] - 5


def test_bilateral_boxes_inside_and_around_the_joints(synth: tuple[Path, dict]) -> None:
    out, info = synth
    with open(out / "bilateral" / "boxes.csv", newline="") as fh:
        boxes = list(csv.DictReader(fh))
    assert list(boxes[0]) == ["image", "side", "x0", "y0", "x1", "y1", "grade", "spacing_mm"]
    assert [b["side"] for b in boxes] == ["R", "L"] and len(info["bilateral"]) == 1
    img = cv2.imread(str(info["bilateral"][0]), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint8 and img.shape == (832, 1024)
    check_boxes(img, [{k: (v if k in ("image", "side") else float(v)) for k, v in b.items()} for b in boxes])


def check_boxes(img: np.ndarray, boxes: list[dict]) -> None:
    h, w = img.shape
    (r, l) = boxes
    assert (r["x0"] + r["x1"]) / 2 < w / 2 < (l["x0"] + l["x1"]) / 2  # right knee on the image's left
    for b in boxes:
        x0, y0, x1, y1 = (int(b[k]) for k in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and x1 - x0 == y1 - y0
        assert abs((x1 - x0) - CROP_MM / float(b["spacing_mm"])) <= 1.5
        crop = img[y0:y1, x0:x1].astype(float)
        assert crop.mean() > img.mean()  # bone, not air
        n = crop.shape[0]
        rows = crop[:, n // 4: 3 * n // 4].mean(axis=1)
        assert 0.3 * n < int(np.argmin(rows[n // 5: 4 * n // 5])) + n // 5 < 0.75 * n  # the joint space


def test_render_bilateral_api() -> None:
    img, boxes = render_bilateral(np.random.default_rng(0), (1, 3), width=512, height=416)
    assert img.dtype == np.uint8 and img.shape == (416, 512)
    assert [(b["side"], b["grade"]) for b in boxes] == [("R", 1), ("L", 3)]
    check_boxes(img, boxes)


def test_montage_synthetic_only(synth: tuple[Path, dict], tmp_path: Path) -> None:
    fig = synthetic_vs_real_montage(synth[0], per_grade=2, out=tmp_path / "m.png")
    assert len(fig.axes) == 5 * 2 and (tmp_path / "m.png").stat().st_size > 1000
    fig = grade_examples(synth[0], per_grade=3, out=tmp_path / "fig1.png")
    assert len(fig.axes) == 5 * 3 and (tmp_path / "fig1.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig1.png", "m.png"]


def test_montage_with_real(synth: tuple[Path, dict], real_kl224: Path) -> None:
    fig = synthetic_vs_real_montage(synth[0], real_kl224 / "val", per_grade=2, seed=1)
    assert len(fig.axes) == 5 * 2 * 2
    assert [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")] == ["synthetic", "real"]


def test_existing_output_is_an_error_and_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(KneelibError, match="not empty"):
        generate_dataset(out, per_grade=1, size=64, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in out.iterdir()] == ["keep.txt"]


def test_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = synthetic.render_job

    def flaky(job, **kw):
        calls.append(job)
        if len(calls) > 3:
            raise RuntimeError("disk full")
        return real(job, **kw)

    monkeypatch.setattr(synthetic, "render_job", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_dataset(tmp_path / "out", per_grade=2, size=64, progress=False)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder


@pytest.mark.parametrize("kw", [dict(per_grade=0), dict(size=16), dict(ratios=(0.5, 0.5)), dict(seed=-1),
                                dict(blur_fraction=1.5), dict(bilateral=-1)])
def test_bad_arguments(tmp_path: Path, kw: dict) -> None:
    with pytest.raises(KneelibError):
        generate_dataset(tmp_path / "out", progress=False, **{"per_grade": 1, **kw})
    assert not (tmp_path / "out").exists()
