"""Hostile input (issue 29): manifests naming files outside their folder, files that are not images,
decompression bombs, colliding output names, symlink loops and out-of-range settings. Each bad input
gives one ``kneelib: error:`` line (exit 2) and writes nothing, or is reported as what it is."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from kneelib.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code: int, err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("kneelib: error: "), err
    assert "Traceback" not in err and all(w in lines[0] for w in words), err


def knee_png(path: Path, seed: int = 0, size: int = 64) -> Path:
    """A small random grey PNG at ``path`` (folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8))
    return path


# 1. a paper manifest whose file name climbs out of OUT


def test_prepare_manifest_file_outside_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "a" / "b" / "src"
    image = knee_png(src / "train" / "0" / "victim.png")
    data = image.read_bytes()
    manifest = tmp_path / "m.csv"
    manifest.write_text("split,grade,file,bytes,sha256\n"
                        f"train,0,../../../victim.png,{len(data)},{hashlib.sha256(data).hexdigest()}\n")
    victim = tmp_path / "a" / "b" / "victim.png"
    victim.write_bytes(b"precious")
    out = tmp_path / "a" / "b" / "out"
    code, _, err = run(capsys, "data", "verify", src, "--manifest", manifest)
    assert_clean_error(code, err, "m.csv", "line 2", "../../../victim.png")
    code, _, err = run(capsys, "data", "prepare", src, out, "--manifest", manifest, "--link", "copy")
    assert_clean_error(code, err, "m.csv", "line 2", "../../../victim.png")
    assert victim.read_bytes() == b"precious" and not out.exists()
    assert sorted(p.name for p in victim.parent.iterdir()) == ["src", "victim.png"]


# 2. a data manifest naming files outside its folder, or files that are not images


def test_split_manifest_paths_stay_inside_and_are_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    rows = [f"{knee_png(root / 'img' / f'910000{i}L.png', i).relative_to(root)},{i % 5}" for i in range(6)]
    secret = tmp_path / "etc" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    manifest = root / "manifest.csv"
    out = tmp_path / "out"
    for bad, words in [("../etc/secret.png", ("line 8", "../etc/secret.png", "outside")),
                       ("img/../../etc/secret.png", ("line 8", "outside")),
                       ("/etc/passwd", ("line 8", "/etc/passwd", "not an image")),
                       (str(secret), ("secret.png", "not a readable"))]:
        manifest.write_text("path,grade\n" + "\n".join(rows) + f"\n{bad},1\n")
        code, _, err = run(capsys, "split", manifest, out, "--link", "copy")
        assert_clean_error(code, err, *words)
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data", "etc"]
    (root / "img" / "9100009R.png").write_text("not an image")  # inside the folder, an image's name
    manifest.write_text("path,grade\n" + "\n".join(rows) + "\nimg/9100009R.png,1\n")
    code, _, err = run(capsys, "split", manifest, out, "--link", "copy")
    assert_clean_error(code, err, "9100009R.png", "not a readable")
    manifest.write_text("path,grade\n" + "\n".join(rows) + "\nimg/./sub/../9100001L.png,3\n")  # inside: fine
    (root / "img" / "9100009R.png").unlink()
    code, out_text, err = run(capsys, "split", manifest, out, "--link", "copy")
    assert code == 0, err


# 3. decompression bombs and images over the pixel budget


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A 1-bit all-black PNG of ``width`` x ``height``: a few KB to hundreds of KB that decode to width*height bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8)
    body = b"".join(packer.compress(row * 1000) for _ in range(height // 1000))
    body += packer.compress(row * (height % 1000)) + packer.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    return {"huge": bomb_png(root / "huge" / "9300000L.png", 30000, 30000),  # over Pillow's own limit
            "large": bomb_png(root / "large" / "9300001R.png", 13000, 13000)}  # under it: 169 MP decoded


def test_read_image_refuses_images_over_the_pixel_budget(bombs: dict[str, Path]) -> None:
    from kneelib.data.io import image_size, read_image
    from kneelib.data.pixels import ImageReadError

    for key, size in (("huge", "30000x30000 pixels"), ("large", "13000x13000 pixels")):
        for read in (read_image, image_size):
            with pytest.raises(ImageReadError, match=f"{size} is over the 64-megapixel limit") as info:
                read(bombs[key])
            assert info.value.reason == "too-large" and str(bombs[key]) in str(info.value)
    big = bomb_png(bombs["huge"].parent / "fine.png", 7000, 7000)  # 49 MP: a radiograph's size passes
    assert image_size(big) == (7000, 7000)


def test_filter_reports_bombs_as_too_large(bombs: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd

    folder = tmp_path / "data"
    for i in range(6):
        knee_png(folder / str(i % 5) / f"910000{i}L.png", i)
    for key in ("huge", "large"):
        (folder / "2" / bombs[key].name).write_bytes(bombs[key].read_bytes())
    code, out, err = run(capsys, "filter", folder, "--report", tmp_path / "r.csv")
    assert code == 0 and "too-large 2" in out and not err, err
    table = pd.read_csv(tmp_path / "r.csv").set_index("reason")
    assert sorted(table.loc["too-large", "detail"].str.split(" is").str[0]) == ["13000x13000 pixels",
                                                                               "30000x30000 pixels"]


def test_verify_and_prepare_take_a_bomb_as_a_changed_file(bombs: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    (src / "train" / "0").mkdir(parents=True)
    rows = []
    for key in ("huge", "large"):
        (src / "train" / "0" / bombs[key].name).write_bytes(bombs[key].read_bytes())
        rows.append(f"train,0,{bombs[key].name},100,{'0' * 64}")
    manifest = tmp_path / "m.csv"
    manifest.write_text("split,grade,file,bytes,sha256\n" + "\n".join(rows) + "\n")
    code, out, err = run(capsys, "data", "verify", src, "--manifest", manifest)
    assert code == 1 and "changed" in out and not err, err
    code, out, err = run(capsys, "data", "prepare", src, tmp_path / "out", "--manifest", manifest)
    assert code == 0 and "2 unreadable" in out and not err, err


def test_every_command_that_reads_images_refuses_a_bomb(bombs: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from fakes import make_data, make_run

    from kneelib.radiograph.localizer import PACKAGED_LOCALIZER

    data = make_data(make_data(tmp_path / "data", split="val"), split="train")
    (data / "train" / "0" / "1000009L.png").write_bytes(bombs["huge"].read_bytes())
    run_dir = make_run(tmp_path / "runs", "a")
    large = bombs["large"]
    for argv in (["train", "--data", data, "--arch", "resnet18", "--out", tmp_path / "r", "--epochs", 1,
                  "--device", "cpu", "--quiet"],
                 ["evaluate", run_dir, "--data", data, "--split", "train"],
                 ["predict", "--runs", run_dir, large],
                 ["predict", "--runs", run_dir, "--bilateral", large, "--localizer", PACKAGED_LOCALIZER,
                  "--out", tmp_path / "p"],
                 ["localize", "locate", bombs["huge"], "--model", PACKAGED_LOCALIZER]):
        code, _, err = run(capsys, *argv)
        assert_clean_error(code, err, "pixels is over the 64-megapixel limit")
    assert not (tmp_path / "r").exists() and not (tmp_path / "p").exists()


def test_dicom_over_the_budget_or_malformed_is_one_clean_error(tmp_path: Path) -> None:
    import warnings

    from dicom_fixtures import write_dicom

    from kneelib.data.io import image_size, read_radiograph
    from kneelib.data.pixels import ImageReadError

    pixels = np.random.default_rng(0).integers(0, 255, (100, 120), dtype=np.uint8)
    huge = write_dicom(tmp_path / "huge.dcm", pixels, extra={"Rows": 30000, "Columns": 30000})
    for read in (image_size, read_radiograph):
        with pytest.raises(ImageReadError, match="30000x30000 pixels is over"):
            read(huge)
    odd = write_dicom(tmp_path / "odd.dcm", pixels, extra={"Rows": 50})  # pixel data for two frames
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageReadError, match="odd.dcm: cannot decode pixel data"):
            read_radiograph(odd)
    assert not caught, [str(w.message) for w in caught]


# 9. predict's outputs: one per input, whatever the names; nothing written before every input is read


def test_predict_outputs_of_inputs_with_one_name_do_not_overwrite(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from fakes import make_run

    from kneelib.radiograph.localizer import PACKAGED_LOCALIZER
    from kneelib.synthetic.bilateral import render_bilateral

    run_dir = make_run(tmp_path / "runs", "a")
    crops = [knee_png(tmp_path / folder / "knee.png", seed) for seed, folder in enumerate("ab")]
    heat = tmp_path / "heat"
    code, _, err = run(capsys, "predict", "--runs", run_dir, *crops, "--heatmaps", heat, "--device", "cpu")
    assert code == 0, err
    assert sorted(p.name for p in heat.iterdir()) == ["knee__2_gradcam.png", "knee_gradcam.png"]
    radiographs = []
    for seed, folder in enumerate("cd"):
        image, _ = render_bilateral(np.random.default_rng(seed), (1, 3), width=600, height=480)
        radiographs.append(tmp_path / folder / "both.png")
        radiographs[-1].parent.mkdir()
        cv2.imwrite(str(radiographs[-1]), image)
    out = tmp_path / "pred"
    code, text, err = run(capsys, "predict", "--runs", run_dir, "--bilateral", *radiographs, "--localizer",
                          PACKAGED_LOCALIZER, "--out", out, "--device", "cpu")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["both_L.png", "both_R.png", "both__2_L.png", "both__2_R.png",
                                                     "both__2_overview.png", "both_overview.png"]
    assert f"overview: {out / 'both__2_overview.png'}" in text
    junk = tmp_path / "text.png"
    junk.write_text("not an image")
    for argv in (["--bilateral", radiographs[0], junk], [crops[0], "--bilateral", radiographs[0], junk],
                 [crops[0], junk, "--bilateral", radiographs[0]]):
        code, _, err = run(capsys, "predict", "--runs", run_dir, *argv, "--localizer", PACKAGED_LOCALIZER,
                           "--out", tmp_path / "half", "--heatmaps", tmp_path / "half-heat", "--device", "cpu")
        assert_clean_error(code, err, "text.png")
        assert not (tmp_path / "half").exists() and not (tmp_path / "half-heat").exists()


# 10. filter: a symbolic-link loop in the data folder, non-finite thresholds


def test_filter_counts_each_file_once_through_a_symlink_loop(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd

    data = tmp_path / "data"
    for i in range(10):
        knee_png(data / "train" / str(i % 5) / f"910000{i}L.png", i)
    (data / "train" / "0" / "loop").symlink_to("..")  # train/0/loop -> train/
    (tmp_path / "other").mkdir()
    knee_png(tmp_path / "other" / "9200000L.png", 99)
    (data / "train" / "5").symlink_to(tmp_path / "other")  # a linked folder outside: read once
    code, out, err = run(capsys, "filter", data, "--report", tmp_path / "r.csv")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "r.csv")
    assert len(table) == 11 and table["file"].is_unique and "checked 11 images" in out
    for flag, value in (("--blur-threshold", "nan"), ("--blur-threshold", "inf"), ("--blur-threshold", "-1"),
                        ("--blur-fraction", "nan")):
        code, _, err = run(capsys, "filter", data, "--report", tmp_path / "bad.csv", flag, value)
        assert_clean_error(code, err, flag, value)
        assert not (tmp_path / "bad.csv").exists()


# 11. settings that cannot work: no training step, no threads, an opset the exporter cannot write; unfinished runs


def test_train_without_one_full_step_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fakes import make_data

    data = make_data(make_data(tmp_path / "data", split="val"), split="train")
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--data", data, "--arch", "resnet18", "--out", out, "--epochs", 1,
                       "--limit", 1, "--device", "cpu", "--quiet")
    assert_clean_error(code, err, "--limit 1", "1 training image", "batch size", "at least 2")
    assert not (out / "config.json").exists() and not (out / "status.json").exists()


def test_localize_train_needs_a_thread(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "localize", "train", "--out", tmp_path / "loc", "--threads", 0, "--n-train", 2,
                       "--n-val", 1, "--epochs", 1)
    assert_clean_error(code, err, "--threads", "0")
    assert not (tmp_path / "loc" / "localizer.pt").exists()


def test_export_checks_the_opset_and_warns_of_an_unfinished_run(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import onnx

    from fakes import make_run

    run_dir = make_run(tmp_path / "runs", "half")
    for opset in (0, 3, 17, onnx.defs.onnx_opset_version() + 1):
        code, _, err = run(capsys, "export", run_dir, "--out", tmp_path / "m.onnx", "--opset", opset)
        assert_clean_error(code, err, f"--opset {opset}", "18")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    (run_dir / "status.json").write_text(json.dumps({"finished": False, "epoch": 1}))
    code, out, err = run(capsys, "export", run_dir, "--out", tmp_path / "m.pt")
    assert code == 0 and (tmp_path / "m.pt").is_file()
    assert err.strip() == f"kneelib: warning: run half ({run_dir}) has not finished training"
