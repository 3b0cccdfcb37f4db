"""Shared test fixtures: the real data beside the checkout, and tiny synthetic data sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from kneelib import cpu_pin

cpu_pin.apply()  # before torch, NumPy or OpenCV load: the tests' numbers are the pinned ones on any x86-64

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data"
REAL_KL224 = REAL_DATA / "kneeKL224"
REAL_RAW = REAL_DATA / "kneeKL299-raw-sample"


@pytest.fixture(scope="session", autouse=True)
def _few_threads() -> None:
    """Keep tests light on the 2-core machine and deterministic."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def real_kl224() -> Path:
    """The real kneeKL224 folder (../shared/data); skips the test when it is absent."""
    if not REAL_KL224.is_dir():
        pytest.skip(f"real data not found at {REAL_KL224}")
    return REAL_KL224


@pytest.fixture(scope="session")
def real_raw() -> Path:
    """The real kneeKL299 raw sample (../shared/data); skips the test when it is absent."""
    if not REAL_RAW.is_dir():
        pytest.skip(f"real data not found at {REAL_RAW}")
    return REAL_RAW
