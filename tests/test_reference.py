"""kneelib.pipeline.reference: trained numbers against the committed reference, exact or within tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kneelib.errors import KneelibError
from kneelib.pipeline import reference
from kneelib.pipeline.profiles import Layout


def fake_sweep(root: Path, *, acc: float = 50.0, pinned: bool = True, vendor: str = "GenuineIntel") -> Layout:
    layout = Layout(root)
    for seed, val in ((21, 0.5), (42, 0.625)):
        run = layout.runs / f"resnet18_kl5_s{seed}"
        run.mkdir(parents=True)
        (run / "status.json").write_text(json.dumps({"finished": True, "best_val_acc": val}))
        (run / "config.json").write_text(json.dumps({"cpu_kernels": {"pinned": pinned, "vendor": vendor}}))
    layout.tables.mkdir(parents=True)
    for table in reference.TABLES:
        frame = pd.DataFrame({"model": ["ResNet-18"], "accuracy": [acc], "qwk": [0.6], "paper_accuracy": [65.24]})
        frame.set_index("model").to_csv(layout.tables / f"{table}.csv")
    return layout


@pytest.fixture
def ref_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(reference, "REFERENCE_DIR", tmp_path / "reference")
    return tmp_path / "reference"


def test_collect_takes_runs_and_tables_but_not_the_papers_numbers(tmp_path: Path) -> None:
    values = reference.collect(fake_sweep(tmp_path / "a"))
    assert values["runs/resnet18_kl5_s42/best_val_acc"] == 62.5
    assert values["table4/ResNet-18/accuracy"] == 50.0 and values["table6/ResNet-18/qwk"] == 0.6
    assert not any("paper" in key for key in values)


def test_exact_under_the_pin_on_both_sides(tmp_path: Path, ref_dir: Path) -> None:
    reference.write_reference(fake_sweep(tmp_path / "ref"), "smoke")
    assert "exactly" in reference.check_sweep(fake_sweep(tmp_path / "same"), "smoke")
    # accuracy x 0.98 (the change CI must catch) fails the exact comparison
    with pytest.raises(KneelibError, match=r"table4/ResNet-18/accuracy: 49\.0000, reference 50\.0000"):
        reference.check_sweep(fake_sweep(tmp_path / "scaled", acc=50.0 * 0.98), "smoke")


def test_tolerance_without_a_common_pin(tmp_path: Path, ref_dir: Path) -> None:
    reference.write_reference(fake_sweep(tmp_path / "ref"), "smoke")
    other = fake_sweep(tmp_path / "arm", acc=58.0, pinned=False)  # another machine's healthy run
    assert "within ±15 points" in reference.check_sweep(other, "smoke")
    collapsed = fake_sweep(tmp_path / "collapsed", acc=20.0, pinned=False)  # a model that stopped learning
    with pytest.raises(KneelibError, match="tolerance comparison"):
        reference.check_sweep(collapsed, "smoke")


def test_another_vendor_is_compared_within_tolerance(tmp_path: Path, ref_dir: Path) -> None:
    """The pin makes one vendor's processors agree, not an Intel and an AMD one: those compare within tolerance."""
    reference.write_reference(fake_sweep(tmp_path / "ref"), "smoke")
    assert json.loads(reference.reference_path("smoke").read_text())["vendor"] == "GenuineIntel"
    amd = fake_sweep(tmp_path / "amd", acc=55.0, vendor="AuthenticAMD")
    assert "made on GenuineIntel, run on AuthenticAMD" in reference.check_sweep(amd, "smoke")
    with pytest.raises(KneelibError, match="exact comparison"):  # the same vendor still compares exactly
        reference.check_sweep(fake_sweep(tmp_path / "intel", acc=55.0), "smoke")


def test_a_missing_number_is_a_difference(tmp_path: Path, ref_dir: Path) -> None:
    reference.write_reference(fake_sweep(tmp_path / "ref"), "smoke")
    partial = fake_sweep(tmp_path / "partial")
    (partial.tables / "table6.csv").unlink()
    with pytest.raises(KneelibError, match="table6/ResNet-18/accuracy: missing"):
        reference.check_sweep(partial, "smoke")
