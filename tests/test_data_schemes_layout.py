"""Label schemes, image reading and data-layout discovery (kneelib.data.schemes / io / layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kneelib.data import (
    SPLITS,
    Sample,
    discover,
    get_scheme,
    parse_knee_name,
    read_image,
    select_split,
)
from kneelib.data.io import is_image_file
from kneelib.data.layout import detect_layout
from kneelib.data.pixels import ImageReadError
from kneelib.data.schemes import SCHEME_NAMES
from kneelib.errors import KneelibError


def gradient(h: int = 70, w: int = 80) -> np.ndarray:
    """A uint8 test pattern with distinct values."""
    return ((np.arange(h)[:, None] * 3 + np.arange(w)[None, :] * 2) % 256).astype(np.uint8)


def png(path: Path, arr: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gradient() if arr is None else arr).save(path)
    return path


# --- schemes ---------------------------------------------------------------------------------------

def test_schemes() -> None:
    assert SCHEME_NAMES == ("kl5", "kl4", "oa")
    kl5, kl4, oa = (get_scheme(n) for n in SCHEME_NAMES)
    assert kl5.class_names == ("0", "1", "2", "3", "4") and kl5.num_classes == 5
    assert [kl5.encode(g) for g in range(5)] == [0, 1, 2, 3, 4]
    assert kl4.class_names == ("0-1", "2", "3", "4") and kl4.num_classes == 4
    assert [kl4.encode(g) for g in range(5)] == [0, 0, 1, 2, 3]
    assert kl4.grades_of(0) == (0, 1) and kl4.class_name(1) == "0-1"
    assert oa.class_names == ("no OA", "OA") and [oa.encode(g) for g in range(5)] == [0, 0, 1, 1, 1]
    assert get_scheme(kl4) is kl4 and get_scheme("KL4") is kl4
    with pytest.raises(KneelibError, match="unknown label scheme 'kl7'"):
        get_scheme("kl7")
    for bad in (5, -1, 2.5):
        with pytest.raises(KneelibError, match="outside 0-4"):
            kl5.encode(bad)


# --- reading images --------------------------------------------------------------------------------

def test_read_8bit_png(tmp_path: Path) -> None:
    img = read_image(png(tmp_path / "a.png"))
    assert img.dtype == np.uint8 and img.shape == (70, 80) and np.array_equal(img, gradient())


def test_read_16bit_png_scaled(tmp_path: Path) -> None:
    wide = gradient().astype(np.uint16) * 257  # 8-bit values expanded to 16 bits
    wide[0, 0], wide[0, 1] = 65535, 0
    path = tmp_path / "w.png"
    Image.fromarray(wide).save(path)
    assert Image.open(path).mode.startswith("I")
    img = read_image(path)
    assert img.dtype == np.uint8 and img[0, 0] == 255 and img[0, 1] == 0
    assert np.array_equal(img[1:], gradient()[1:])


def test_read_rgb_rgba_palette_and_jpeg(tmp_path: Path) -> None:
    gray = gradient()
    rgb = np.stack([gray] * 3, axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(gray).convert("P").save(tmp_path / "pal.png")
    Image.fromarray(rgb).save(tmp_path / "c.JPG", quality=95)
    Image.fromarray(gray).save(tmp_path / "g.jpeg", quality=95)
    for name in ("rgb.png", "rgba.png", "pal.png"):
        assert np.array_equal(read_image(tmp_path / name), gray), name
    for name in ("c.JPG", "g.jpeg"):
        img = read_image(tmp_path / name)
        assert img.shape == gray.shape and np.abs(img.astype(int) - gray).mean() < 3, name
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 1] = 200  # pure green → luma 0.587 * 200
    Image.fromarray(colour).save(tmp_path / "green.png")
    assert abs(int(read_image(tmp_path / "green.png")[0, 0]) - round(0.587 * 200)) <= 1


@pytest.mark.parametrize("kind, reason", [("empty", "empty"), ("garbage", "unreadable"),
                                          ("truncated", "truncated"), ("missing", "missing")])
def test_read_bad_files(tmp_path: Path, kind: str, reason: str) -> None:
    path = tmp_path / f"{kind}.png"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"this is not a png at all" * 10)
    elif kind == "truncated":
        data = png(tmp_path / "ok.png", np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.reason == reason and str(path) in str(info.value)
    assert isinstance(info.value, KneelibError)


def test_is_image_file() -> None:
    assert is_image_file("a.png") and is_image_file("b.JPEG") and is_image_file("x/c.Jpg")
    assert not is_image_file("notes.txt") and not is_image_file(".hidden.png") and is_image_file("a.dcm")


# --- patient ids and layouts -----------------------------------------------------------------------

def test_parse_knee_name() -> None:
    assert parse_knee_name("9003126L") == ("9003126", "L")
    assert parse_knee_name("9003126r") == ("9003126", "R")
    for stem in ("9003126", "903126L", "90031266L", "knee_01", "9003126X", "9003126L_1"):
        assert parse_knee_name(stem) == (None, None), stem


def test_discover_split_layout(tmp_path: Path) -> None:
    for split, grade, name in [("train", 0, "9000001L"), ("train", 0, "9000001R"), ("train", 4, "9000002L"),
                               ("test", 2, "9000003R"), ("test", 1, "knee_a")]:
        png(tmp_path / split / str(grade) / f"{name}.png")
    (tmp_path / "train" / "0" / "notes.txt").write_text("ignored")
    (tmp_path / "train" / "0" / "._9000001L.png").write_bytes(b"mac junk")
    (tmp_path / "train" / ".cache").mkdir()
    (tmp_path / "README.md").write_text("ignored")
    assert detect_layout(tmp_path) == "splits"
    samples = discover(tmp_path)
    assert [(s.split, s.grade, s.path.stem) for s in samples] == [
        ("train", 0, "9000001L"), ("train", 0, "9000001R"), ("train", 4, "9000002L"),
        ("test", 1, "knee_a"), ("test", 2, "9000003R")]
    first = samples[0]
    assert isinstance(first, Sample) and (first.patient_id, first.side) == ("9000001", "L")
    unparsed = samples[3]
    assert unparsed.patient_id == "knee_a" and unparsed.side is None  # stem fallback
    assert len(select_split(samples, "test")) == 2 and len(select_split(samples, None)) == 5
    with pytest.raises(KneelibError, match="no samples in split 'val'"):
        select_split(samples, "val")
    with pytest.raises(KneelibError, match="unknown split"):
        select_split(samples, "dev")
    assert SPLITS == ("train", "val", "test")


def test_discover_pool_and_manifest(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    for grade in range(5):
        png(pool / str(grade) / f"900000{grade}L.jpg")
    assert detect_layout(pool) == "pool"
    samples = discover(pool)
    assert [s.grade for s in samples] == [0, 1, 2, 3, 4] and all(s.split is None for s in samples)

    csv = tmp_path / "m.csv"
    csv.write_text("path,grade,patient_id,split\n"
                   f"pool/3/9000003L.jpg,3,P7,val\n{pool / '0' / '9000000L.jpg'},0,,train\n")
    listed = discover(csv)
    assert [(s.split, s.grade, s.patient_id, s.side) for s in listed] == [
        ("train", 0, "9000000", "L"), ("val", 3, "P7", "L")]
    assert listed[1].path.is_file()
    (tmp_path / "lists").mkdir()  # a relative path may not leave the manifest's folder
    (tmp_path / "lists" / "m.csv").write_text("path,grade\n../pool/3/9000003L.jpg,3\n")
    with pytest.raises(KneelibError, match="line 2: '../pool/3/9000003L.jpg' points outside"):
        discover(tmp_path / "lists" / "m.csv")


@pytest.mark.parametrize("text, message", [
    ("file,grade\na.png,1\n", "lacks column"),
    ("path,grade\nnope.png,1\nnope2.png,2\n", "2 listed file(s) not found: line 2: nope.png"),
    ("path,grade\n../pool/0/9000000L.jpg,7\n", "grade '7' is not a KL grade"),
    ("path,grade,split\n../pool/0/9000000L.jpg,0,dev\n", "split 'dev'"),
])
def test_bad_manifest(tmp_path: Path, text: str, message: str) -> None:
    png(tmp_path / "pool" / "0" / "9000000L.jpg")
    csv = tmp_path / "m" / "manifest.csv"
    csv.parent.mkdir()
    csv.write_text(text)
    with pytest.raises(KneelibError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        discover(csv)
    assert str(csv) in str(info.value)


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(KneelibError, match="no such file"):
        discover(tmp_path / "missing")
    with pytest.raises(KneelibError, match="no .*folders"):
        discover(tmp_path)
    png(tmp_path / "train" / "7" / "9000000L.png")
    with pytest.raises(KneelibError, match=r"train/7: folder '7' is not a KL grade"):
        discover(tmp_path)
    empty = tmp_path / "e"
    (empty / "train" / "0").mkdir(parents=True)
    (empty / "train" / "0" / "a.txt").write_text("x")
    with pytest.raises(KneelibError, match="no images"):
        discover(empty)
    both = tmp_path / "both"
    png(both / "train" / "0" / "a.png")
    png(both / "1" / "b.png")
    with pytest.raises(KneelibError, match="both split folders"):
        discover(both)


def test_manifest_in_folder_fallback(tmp_path: Path) -> None:
    png(tmp_path / "imgs" / "k.png")
    (tmp_path / "manifest.csv").write_text("path,grade\nimgs/k.png,2\n")
    assert detect_layout(tmp_path) == "manifest"
    assert [(s.grade, s.patient_id) for s in discover(tmp_path)] == [(2, "k")]


def test_real_layout(real_kl224: Path) -> None:
    samples = discover(real_kl224)
    assert len(samples) == 5778 + 826
    assert {s.split for s in samples} == {"train", "val"}
    assert all(s.side in ("L", "R") and len(s.patient_id) == 7 for s in samples)
    img = read_image(samples[0].path)
    assert img.shape == (224, 224) and img.dtype == np.uint8
