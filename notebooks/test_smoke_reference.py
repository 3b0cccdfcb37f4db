"""The smoke sweep's trained numbers against the committed reference (run by ``make test`` after the sweep).

nbval compares the notebooks' deterministic cells exactly; the numbers that come out of training are
compared here, exactly under kneelib's AVX2 pin and within a stated tolerance elsewhere
(:mod:`kneelib.pipeline.reference`).
"""

from __future__ import annotations

import pytest

from kneelib.errors import KneelibError
from kneelib.pipeline import REPO_ROOT, Layout
from kneelib.pipeline.reference import check_sweep, load_reference


def test_smoke_sweep_matches_the_committed_reference() -> None:
    layout = Layout(REPO_ROOT / "runs" / "smoke")
    assert load_reference("smoke") is not None, "notebooks/reference/smoke.json is missing"
    if not (layout.tables / "table6.csv").is_file():
        pytest.fail(f"{layout.out}: no finished smoke sweep; run `kneelib reproduce --profile smoke` first")
    try:
        print(check_sweep(layout, "smoke"))
    except KneelibError as exc:
        pytest.fail(str(exc))
