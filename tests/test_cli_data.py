"""The data sub-commands through ``kneelib.cli.main``: stats, filter, split, synth and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from kneelib.cli import build_parser, main


def make_pool(root: Path, n_patients: int = 60, seed: int = 0) -> Path:
    """A pool ``root/{0..4}/<id><L|R>.png`` of small random (sharp) images, 1-2 knees per patient."""
    rng = np.random.default_rng(seed)
    for p in range(n_patients):
        grade = int(rng.integers(0, 5))
        for side in ("L", "R")[: int(rng.integers(1, 3))]:
            dest = root / str(grade) / f"{9100000 + p}{side}.png"
            dest.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(dest), rng.integers(0, 256, (64, 64), dtype=np.uint8))
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kneelib: error: "), err
    assert "Traceback" not in err and all(w in lines[0] for w in words), err


def test_commands_registered() -> None:
    text = build_parser().format_help()
    for name in ("filter", "split", "stats", "synth"):
        assert name in text


def test_stats_real_json(real_kl224: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "stats", real_kl224, "--json")
    assert code == 0
    assert json.loads(out) == {"train": {"0": 2286, "1": 1046, "2": 1516, "3": 757, "4": 173},
                               "val": {"0": 328, "1": 153, "2": 212, "3": 106, "4": 27}}
    code, out, _ = run(capsys, "stats", real_kl224, "--scheme", "kl4", "--json")
    assert json.loads(out)["val"] == {"0-1": 481, "2": 212, "3": 106, "4": 27}
    code, out, _ = run(capsys, "stats", real_kl224)
    assert "5778" in out and "826" in out and "6604" in out


def test_stats_pool_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pool = make_pool(tmp_path / "pool", 10)
    code, out, _ = run(capsys, "stats", pool, "--scheme", "oa")
    rows = [line.split()[0] for line in out.splitlines()[1:]]
    assert code == 0 and "all" in rows and "train" not in rows and "no OA" in out
    code, out, _ = run(capsys, "stats", pool, "--json")
    assert list(json.loads(out)) == ["all"]


def test_filter_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pool = make_pool(tmp_path / "pool", 8)
    bad = pool / "2" / "9199999L.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "filter", pool)  # default report: ./filter_report.csv
    assert code == 0 and "blur threshold" in out and "unreadable 1" in out
    table = pd.read_csv(tmp_path / "filter_report.csv")
    assert (tmp_path / "filter_report.json").is_file() and len(table) == len(list(pool.rglob("*.png")))
    assert not list(pool.rglob("*.csv"))  # nothing written beside the data

    code, out, _ = run(capsys, "split", pool, tmp_path / "out", "--exclude", tmp_path / "filter_report.csv")
    assert code == 0 and "excluded 1 file" in out
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert "9199999L.png" not in " ".join(manifest["path"]) and len(manifest) == len(table) - 1


def test_split_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pool = make_pool(tmp_path / "pool", 150)
    code, out, _ = run(capsys, "split", pool, tmp_path / "out", "--seed", "3")
    assert code == 0 and "protocol grouped" in out and "no patient in more than one split:" in out
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype={"patient_id": str})
    assert manifest.groupby("patient_id")["split"].nunique().max() == 1
    assert set(manifest["protocol"]) == {"grouped"}
    assert json.loads((tmp_path / "out" / "split.json").read_text())["seed"] == 3
    share = manifest["split"].value_counts(normalize=True)
    assert abs(share["train"] - 0.7) < 0.02 and abs(share["val"] - 0.1) < 0.02
    # re-split an already split folder with the paper protocol
    code, out, _ = run(capsys, "split", tmp_path / "out", tmp_path / "paper", "--protocol", "paper")
    assert code == 0 and "protocol paper" in out and "NOT grouped" in out
    paper = pd.read_csv(tmp_path / "paper" / "manifest.csv")
    test_before = set(manifest.loc[manifest["split"] == "test", "source"])
    assert set(paper.loc[paper["split"] == "test", "source"]) == test_before
    assert set(paper["protocol"]) == {"paper"}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert_clean_error(*run(capsys, "split", tmp_path / "missing", out)[::2], "missing", "no such file")
    (tmp_path / "empty").mkdir()
    assert_clean_error(*run(capsys, "stats", tmp_path / "empty")[::2], "empty")
    assert_clean_error(*run(capsys, "filter", tmp_path / "empty", "--report", tmp_path / "r.csv")[::2], "no images")
    seven = tmp_path / "seven"
    make_pool(seven / "train", 5)
    (seven / "train" / "7").mkdir()
    cv2.imwrite(str(seven / "train" / "7" / "9000000L.png"), np.zeros((64, 64), np.uint8))
    assert_clean_error(*run(capsys, "split", seven, out)[::2], "train/7", "not a KL grade")
    csv = tmp_path / "m.csv"
    csv.write_text("file,grade\nx.png,1\n")
    assert_clean_error(*run(capsys, "split", csv, out)[::2], "m.csv", "lacks column", "path")
    csv.write_text("path,grade\nx.png,1\n")
    assert_clean_error(*run(capsys, "stats", csv)[::2], "m.csv", "not found", "x.png")
    pool = make_pool(tmp_path / "pool", 20)
    assert_clean_error(*run(capsys, "split", pool, out, "--ratios", "7:x:2")[::2], "--ratios")
    assert_clean_error(*run(capsys, "split", pool, out, "--protocol", "paper", "--ratios", "8:1:1")[::2], "paper")
    assert_clean_error(*run(capsys, "split", pool, out, "--exclude", tmp_path / "nope.csv")[::2], "nope.csv")
    assert_clean_error(*run(capsys, "split", pool, pool / "inside")[::2], "inside the input data")
    assert leftovers(tmp_path) == ["empty", "m.csv", "pool", "seven"]  # no OUT, no temp dirs
    assert leftovers(pool) == ["0", "1", "2", "3", "4"]
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert_clean_error(*run(capsys, "split", pool, out)[::2], "not empty")
    assert leftovers(out) == ["keep.txt"]


def test_synth_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synthetic = pytest.importorskip("kneelib.synthetic.crops", reason="the synthetic generator is not there yet")
    if not hasattr(synthetic, "generate_dataset"):
        pytest.skip("kneelib.synthetic.crops.generate_dataset is not there yet")
    code, out, _ = run(capsys, "synth", tmp_path / "syn", "--per-grade", "2", "--size", "64", "--seed", "1")
    assert code == 0 and "wrote synthetic data set" in out
    code, out, _ = run(capsys, "stats", tmp_path / "syn", "--json")
    counts = json.loads(out)
    assert code == 0 and all(set(c) == {"0", "1", "2", "3", "4"} for c in counts.values())
