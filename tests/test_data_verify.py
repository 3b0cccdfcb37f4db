"""``kneelib data verify`` / ``prepare`` and the paper's manifest: a tiny fabricated paper data set (20 crops),
its variants and bad input, plus the real kneeKL224 folder and 299 px raw sample where they are present."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

import kneelib.data.paper.prepare as prepare_module
from kneelib.cli import build_parser, main
from kneelib.data.paper.manifest import PAPER_MANIFEST, build_paper_manifest, load_manifest
from kneelib.data.paper.prepare import prepare
from kneelib.data.paper.verify import verdict_line, verify
from kneelib.data.transforms import preprocess

COUNTS = {"train": 2, "val": 1, "test": 1}  # crops per grade in the fabricated paper data set


@dataclass(frozen=True)
class World:
    """The fabricated paper data set: its 299 px raw pool, the 224 px CLAHE copy and its manifest."""

    raw: Path
    full: Path
    manifest: Path
    names: dict[str, tuple[str, int]]  # file -> (split, grade)


def raw_knee(rng: np.random.Generator, size: int = 299) -> np.ndarray:
    """A smooth, low-contrast grey image (CLAHE changes it a lot), like an unprocessed crop."""
    field = cv2.resize(rng.normal(0, 1, (6, 6)), (size, size), interpolation=cv2.INTER_CUBIC)
    image = (field - field.min()) / (np.ptp(field) + 1e-9) * 110 + 70 + rng.normal(0, 3, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_png(path: Path, image: np.ndarray, level: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image, [] if level is None else [cv2.IMWRITE_PNG_COMPRESSION, level])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("paper")
    rng = np.random.default_rng(7)
    names, rows, pid = {}, [], 9200000
    for split, n in COUNTS.items():
        for grade in range(5):
            for i in range(n):
                name = f"{pid + i // 2}{'LR'[i % 2]}.png"
                raw = raw_knee(rng)
                write_png(root / "raw" / str(grade) / name, raw)
                paper = root / "full" / split / str(grade) / name
                write_png(paper, preprocess(raw, image_size=224, clahe=True))
                data = paper.read_bytes()
                rows.append((split, grade, name, len(data), hashlib.sha256(data).hexdigest()))
                names[name] = (split, grade)
            pid += 1
    source = root / "source.csv"
    with open(source, "w", newline="") as handle:
        csv.writer(handle).writerows([("split", "grade", "file", "bytes", "sha256"), *rows])
    assert build_paper_manifest(source, root / "full", root / "manifest.csv.gz") == len(rows)
    return World(root / "raw", root / "full", root / "manifest.csv.gz", names)


def copy_of(world: World, dest: Path) -> Path:
    return Path(shutil.copytree(world.full, dest))


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` with its size and mtime (to show nothing was written)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def assert_clean_error(code: int, err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("kneelib: error: "), err
    assert all(w in lines[0] for w in words), err


def test_exact_copy(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = copy_of(world, tmp_path / "copy")
    code, out, _ = run(capsys, "data", "verify", copy, "--manifest", world.manifest)
    assert code == 0 and "matches the paper's data set exactly (train 10, val 5, test 5)" in out
    code, out, _ = run(capsys, "data", "verify", copy, "--manifest", world.manifest, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["exact"] and doc["variant"] == ["exact"] and doc["findings"] == []
    assert doc["counts"]["train"]["3"] == {"expected": 2, "match": 2, "missing": 0, "relabelled": 0,
                                           "changed": 0, "extra": 0}
    listing = tmp_path / "list.csv"  # the same files through a manifest CSV: exact with a split column only
    rows = [f"{p.relative_to(copy.parent)},{p.parent.name},{p.parts[-3]}" for p in sorted(copy.rglob("*.png"))]
    listing.write_text("path,grade,split\n" + "\n".join(rows) + "\n")
    assert verify(listing, manifest=world.manifest).exact
    listing.write_text("path,grade\n" + "\n".join(r.rsplit(",", 1)[0] for r in rows) + "\n")
    assert verify(listing, manifest=world.manifest).variant() == ["kneeKL224", "pool"]


def test_moved_truncated_extra_missing_each_named(world: World, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    copy = copy_of(world, tmp_path / "copy")
    moved = next((copy / "train" / "0").iterdir())
    moved.rename(copy / "train" / "1" / moved.name)
    truncated = next((copy / "train" / "2").iterdir())
    truncated.write_bytes(truncated.read_bytes()[:300])
    write_png(copy / "val" / "3" / "9299999R.png", raw_knee(np.random.default_rng(1), 224))
    missing = next((copy / "test" / "4").iterdir())
    missing.unlink()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = snapshot(tmp_path)
    code, out, _ = run(capsys, "data", "verify", copy, "--manifest", world.manifest)
    assert code == 1 and "differs from the paper's data set" in out
    assert "1 relabelled, 1 changed, 1 extra, 1 missing" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()[0] in
             ("relabelled", "changed", "extra", "missing")}
    assert f"train/1/{moved.name}" in lines["relabelled"] and "train/0 -> train/1 (same bytes)" in lines["relabelled"]
    assert f"train/2/{truncated.name}" in lines["changed"] and "unreadable" in lines["changed"]
    assert "val/3/9299999R.png" in lines["extra"] and f"test/4/{missing.name}" in lines["missing"]
    code, out, _ = run(capsys, "data", "verify", copy, "--manifest", world.manifest, "--json")
    findings = {(f["kind"], f["file"]) for f in json.loads(out)["findings"]}
    assert code == 1 and findings == {("relabelled", moved.name), ("changed", truncated.name),
                                      ("extra", "9299999R.png"), ("missing", missing.name)}
    assert snapshot(tmp_path) == before  # nothing written, not even in the working directory


def test_299_pool_is_recognised_with_the_prepare_command(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    report = verify(world.raw, manifest=world.manifest)
    assert report.variant() == ["kneeKL299", "pool"] and report.image_size == (299, 299)
    assert report.clahe.verdict == "unprocessed" and report.clahe.median_with_clahe == 0
    assert report.clahe.median_as_is > 5
    code, out, _ = run(capsys, "data", "verify", world.raw, "--manifest", world.manifest)
    assert code == 1 and "299 px copy" in out
    assert f"`kneelib data prepare {world.raw} OUT` resizes the images to 224 px, applies the paper's CLAHE" in out


@pytest.mark.parametrize(("variant", "verdict"), [("no-clahe", "unprocessed"), ("mirrored", "other"),
                                                   ("re-encoded", "same-picture")])
def test_other_preprocessing_and_whether_clahe_explains_it(world: World, tmp_path: Path, variant: str,
                                                           verdict: str) -> None:
    copy = copy_of(world, tmp_path / "copy")
    for name, (split, grade) in world.names.items():
        image = preprocess(cv2.imread(str(world.raw / str(grade) / name), cv2.IMREAD_GRAYSCALE),
                           image_size=224, clahe=variant != "no-clahe")
        write_png(copy / split / str(grade) / name, image[:, ::-1] if variant == "mirrored" else image, level=9)
    report = verify(copy, manifest=world.manifest)
    assert report.variant() == ["kneeKL224-other-preprocessing"] and report.clahe.verdict == verdict
    assert report.kind_count("changed") == len(world.names) and not report.exact
    assert report.clahe.n_same_pixels == (report.clahe.n_checked if variant == "re-encoded" else 0)
    assert ("OUT` applies the paper's CLAHE" in report.render()) == (variant == "no-clahe")


def test_pool_and_extra_folder(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pool = tmp_path / "pool"
    for name, (split, grade) in world.names.items():
        (pool / str(grade)).mkdir(parents=True, exist_ok=True)
        shutil.copy(world.full / split / str(grade) / name, pool / str(grade) / name)
    report = verify(pool, manifest=world.manifest)
    assert report.variant() == ["kneeKL224", "pool"] and not report.findings and not report.exact
    assert "places every file in the paper's split" in report.render()

    copy = copy_of(world, tmp_path / "kaggle")
    shutil.copytree(copy / "test", copy / "auto_test")
    code, out, _ = run(capsys, "data", "verify", copy, "--manifest", world.manifest, "--json")
    doc = json.loads(out)
    assert code == 1 and doc["variant"] == ["kneeKL224", "extra-folder"] and doc["findings"] == []
    assert doc["extra_folders"] == [{"name": "auto_test/", "images": 5, "paper_names": {"test": 5}, "identical": 5}]
    assert "auto_test/" in doc["verdict"] and any("ignores it" in a for a in doc["advice"])


def test_bad_input(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = ("--manifest", world.manifest)
    assert_clean_error(*run(capsys, "data", "verify", tmp_path / "nope", *m)[::2], "nope", "no such file")
    (tmp_path / "empty").mkdir()
    assert_clean_error(*run(capsys, "data", "verify", tmp_path / "empty", *m)[::2], "empty", "no {train")
    (tmp_path / "blank" / "train" / "0").mkdir(parents=True)
    (tmp_path / "blank" / "train" / "0" / "notes.txt").write_text("x")
    assert_clean_error(*run(capsys, "data", "verify", tmp_path / "blank", *m)[::2], "blank", "no images")
    (tmp_path / "parent").mkdir()
    shutil.copytree(world.raw, tmp_path / "parent" / "kneeKL299")
    assert_clean_error(*run(capsys, "data", "verify", tmp_path / "parent", *m)[::2], "kneeKL299/", "point at")
    for bad, words in ((b"\x1f\x8b not gzip", ("cannot read",)), (b"file,grade\na.png,1\n", ("lacks", "sha256")),
                       (b"split,grade,file,bytes,sha256\ntrain,9,a.png,1,00\n", ("line 2", "bad row"))):
        (tmp_path / "m.csv").write_bytes(bad)
        assert_clean_error(*run(capsys, "data", "verify", world.full, "--manifest", tmp_path / "m.csv")[::2], *words)
    assert_clean_error(*run(capsys, "data", "verify", world.full, "--manifest", tmp_path / "no.csv")[::2], "no.csv")
    assert_clean_error(*run(capsys, "data", "prepare", world.raw, world.raw / "out", *m)[::2], "inside the input")
    assert not (world.raw / "out").exists()
    with pytest.raises(SystemExit) as exc:  # `kneelib data` needs verify or prepare
        build_parser().parse_args(["data"])
    assert exc.value.code == 2


def test_prepare_299_pool_gives_the_paper_files(world: World, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(world.raw)
    out = tmp_path / "prepared"
    code, text, _ = run(capsys, "data", "prepare", world.raw, out, "--manifest", world.manifest)
    assert code == 0 and "train 10, val 5, test 5" in text and "20 converted to 224 px with the paper's CLAHE" in text
    assert snapshot(world.raw) == before
    info = json.loads((out / "prepare.json").read_text())
    assert info["clahe_applied"] and info["converted"] == 20 and info["missing"] == {}
    for name, (split, grade) in world.names.items():
        assert np.array_equal(cv2.imread(str(out / split / str(grade) / name), cv2.IMREAD_GRAYSCALE),
                              cv2.imread(str(world.full / split / str(grade) / name), cv2.IMREAD_GRAYSCALE))
    assert verify(out, manifest=world.manifest).exact  # the same pixels, even the same PNG bytes
    stamp = snapshot(out)
    code, text, _ = run(capsys, "data", "prepare", world.raw, out, "--manifest", world.manifest)
    assert code == 0 and "already prepared" in text and snapshot(out) == stamp
    code, _, err = run(capsys, "data", "prepare", world.raw, out, "--manifest", world.manifest, "--clahe", "off")
    assert_clean_error(code, err, "other options", "--force")
    code, text, _ = run(capsys, "data", "prepare", world.raw, out, "--manifest", world.manifest, "--clahe", "off",
                        "--force")
    assert code == 0 and "without CLAHE" in text


def test_prepare_links_identical_files_puts_relabelled_back_and_skips_extras(world: World, tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    for name, (split, grade) in world.names.items():
        (pool / str(grade)).mkdir(parents=True, exist_ok=True)
        shutil.copy(world.full / split / str(grade) / name, pool / str(grade) / name)
    relabelled = next((pool / "4").iterdir()).rename(pool / "0" / next((pool / "4").iterdir()).name)
    write_png(pool / "2" / "9299999L.png", raw_knee(np.random.default_rng(2), 224))
    result = prepare(pool, tmp_path / "out", manifest=world.manifest)
    assert (result.linked, result.converted, result.relabelled) == (20, 0, 1)
    assert result.skipped == {"not in the paper's data set": ["2/9299999L.png"]}
    split, grade = world.names[relabelled.name]
    placed = tmp_path / "out" / split / str(grade) / relabelled.name
    assert grade == 4 and placed.stat().st_ino == relabelled.stat().st_ino  # a hardlink, at the paper's grade
    assert verify(tmp_path / "out", manifest=world.manifest).exact


def test_prepare_is_atomic(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = prepare_module._write_one

    def failing(*args: object) -> str:
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(*args)

    monkeypatch.setattr(prepare_module, "_write_one", failing)
    with pytest.raises(OSError, match="disk full"):
        prepare(world.raw, tmp_path / "out", manifest=world.manifest, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no OUT, no temporary folder


def test_packaged_manifest() -> None:
    paper = load_manifest()
    assert paper.source == str(PAPER_MANIFEST) and len(paper.entries) == 8260 == len(paper.by_sha256)
    per_split = {s: sum(n for (sp, _), n in paper.counts().items() if sp == s) for s in ("train", "val", "test")}
    assert per_split == {"train": 5778, "val": 826, "test": 1656}
    assert paper.counts()[("val", 4)] == 27
    entry = paper.entries["9003126L"]
    assert (entry.patient_id, entry.side, entry.split) == ("9003126", "L", "train")
    assert all((e.thumb is not None) == (e.split != "test") for e in paper.entries.values())


@pytest.mark.realdata
def test_packaged_manifest_equals_the_shared_csv(real_kl224: Path) -> None:
    with open(real_kl224.parent / "kneeKL224-manifest.csv", newline="") as handle:
        shared = {(r["split"], int(r["grade"]), r["file"], int(r["bytes"]), r["sha256"])
                  for r in csv.DictReader(handle)}
    assert {(e.split, e.grade, e.file, e.bytes, e.sha256) for e in load_manifest().entries.values()} == shared


@pytest.mark.realdata
def test_real_kl224_train_and_val_match_test_missing(real_kl224: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "data", "verify", real_kl224, "--json")
    doc = json.loads(out)
    assert code == 1 and not doc["exact"] and doc["variant"] == ["kneeKL224"]
    totals = {s: sum(row["match"] for row in doc["counts"][s].values()) for s in ("train", "val", "test")}
    missing = {s: sum(row["missing"] for row in doc["counts"][s].values()) for s in ("train", "val", "test")}
    assert totals == {"train": 5778, "val": 826, "test": 0} and missing == {"train": 0, "val": 0, "test": 1656}
    assert {f["kind"] for f in doc["findings"]} == {"missing"}
    line = verdict_line(real_kl224)
    assert line == "matches the paper's data set (train 5,778/5,778, val 826/826; test absent)", line


@pytest.mark.realdata
def test_real_raw_sample_is_the_299_variant_and_prepare_reproduces_kl224(real_raw: Path, real_kl224: Path,
                                                                           tmp_path: Path) -> None:
    report = verify(real_raw)
    assert report.variant() == ["kneeKL299", "pool"] and report.clahe.verdict == "unprocessed"
    assert f"`kneelib data prepare {real_raw} OUT`" in verdict_line(real_raw).splitlines()[1]
    result = prepare(real_raw, tmp_path / "out")
    assert result.written == {"train": 100} and result.converted == 100 and result.clahe
    diffs = []
    for made in sorted((tmp_path / "out").rglob("*.png")):
        reference = real_kl224 / "train" / made.parent.name / made.name
        a, b = (cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(int) for p in (made, reference))
        diffs.append(np.abs(a - b).mean())
    assert len(diffs) == 100 and np.mean(diffs) < 2.3 and max(diffs) < 3.2  # measured: 2.07, worst 2.84
    assert sorted(os.listdir(real_raw)) == list("01234")  # nothing written beside the data
