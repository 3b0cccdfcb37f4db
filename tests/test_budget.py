"""``reproduce --hours``: choosing the image size and epochs from the measured curves and the timed steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from kneelib.cli import main
from kneelib.errors import KneelibError
from kneelib.pipeline import get_profile
from kneelib.pipeline.budget import Curves, choose_budget, load_curves, plan

CURVES = Curves(
    accuracy={"resnet18": {64: {4: 0.50, 16: 0.58}, 128: {4: 0.48, 8: 0.60}},
              "densenet121": {64: {4: 0.48, 16: 0.56}, 128: {4: 0.46, 8: 0.58}}},
    recipe_changes={"augment": 0.0}, conditions="test")


def seconds(size: int, epochs: int) -> float:
    """A grid whose 128 px epoch costs 2.3x a 64 px one: 100 s per 64 px epoch."""
    return epochs * 100.0 * (2.3 if size == 128 else 1.0)


def test_expected_accuracy_interpolates_in_log_epochs_and_never_extrapolates() -> None:
    assert CURVES.expected(64, 4) == pytest.approx(0.49)
    assert CURVES.expected(64, 8) == pytest.approx((0.54 + 0.52) / 2)  # halfway in log2 between 4 and 16
    assert CURVES.expected(64, 32) is None and CURVES.expected(64, 2) is None
    assert CURVES.expected(96, 8) is None  # a size not measured
    assert CURVES.sizes == [64, 128]


def test_a_grid_reads_the_curves_of_its_own_architectures() -> None:
    dense = CURVES.for_archs(["densenet121", "se_densenet121"])  # an SE model reads its backbone's curve
    assert list(dense.accuracy) == ["densenet121"] and dense.expected(64, 4) == pytest.approx(0.48)
    assert CURVES.for_archs(["resnet18", "se_densenet121"]).expected(64, 4) == pytest.approx(0.49)
    assert CURVES.for_archs(["resnet50"]) == CURVES  # nothing of its own measured: every curve


def test_the_budget_picks_the_best_setting_that_fits() -> None:
    tight = choose_budget(400 / 3600, seconds, CURVES)  # only 64 px x 4 fits
    assert (tight.image_size, tight.epochs, tight.fits) == (64, 4, True)
    roomy = choose_budget(1900 / 3600, seconds, CURVES)  # 128 px x 8 (1,840 s) beats 64 px x 16 (1,600 s)
    assert (roomy.image_size, roomy.epochs) == (128, 8)
    assert roomy.seconds <= 1900 and roomy.recipe_changes == {"augment": 0.0}
    middle = choose_budget(1700 / 3600, seconds, CURVES)
    assert (middle.image_size, middle.epochs) == (64, 16)
    assert "64 px, 16 epochs" in middle.describe()


def test_a_budget_below_every_measured_setting_says_so() -> None:
    budget = choose_budget(60 / 3600, seconds, CURVES)
    assert not budget.fits and (budget.image_size, budget.epochs) == (64, 4)
    assert "over the budget" in budget.describe()
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(KneelibError, match="--hours"):
            choose_budget(bad, seconds, CURVES)


def test_the_shipped_curves_load_and_malformed_ones_are_refused() -> None:
    shipped = load_curves()
    assert shipped.sizes and all(0 < a < 1 for by_size in shipped.accuracy.values()
                                 for by_e in by_size.values() for a in by_e.values())
    with pytest.raises(KneelibError, match="malformed"):
        load_curves({"accuracy": {"resnet18": {"sixty-four": {"4": 0.5}}}})


def test_plan_times_every_size_and_returns_the_profile_to_run(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from kneelib.pipeline import projection
    from kneelib.synthetic.crops import generate_dataset

    data = tmp_path / "data"
    generate_dataset(data, per_grade=4, size=64, seed=0, progress=False)
    before = sorted(data.rglob("*"))

    timed = []

    def fake_steps(arch: str, *, image_size: int, **_: object) -> tuple[float, float]:
        timed.append((arch, image_size))
        return (1e-3 * (image_size / 64) ** 2, 1e-4)

    monkeypatch.setattr(projection, "time_steps", fake_steps)
    profile = get_profile("cpu", archs=["resnet18", "densenet121"], seeds=[21])
    chosen, budget = plan(profile, data, 1.0, curves=CURVES)
    assert {size for _, size in timed} == {64, 128}
    assert (chosen.image_size, chosen.epochs) == (budget.image_size, budget.epochs)
    assert dict(chosen.recipe_changes) == {"augment": 0.0} and budget.fits
    assert sorted(data.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("argv, message", [
    (["reproduce", "--dry-run"], "--dry-run goes with --hours"),
    (["reproduce", "--profile", "smoke", "--hours", "1"], "not the smoke profile"),
    (["reproduce", "--profile", "cpu", "--hours", "1"], "--hours needs --data"),
    (["reproduce", "--profile", "cpu", "--hours", "1", "--epochs", "3", "--data", "x"], "leave out --epochs"),
])
def test_hours_on_bad_input_is_one_error_line(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("kneelib: error:")


def test_the_chosen_recipe_changes_reach_the_training_notebook(tmp_path: Path) -> None:
    from kneelib.pipeline.notebooks import train_parameters
    from kneelib.pipeline.profiles import Layout

    profile = get_profile("cpu", recipe_changes=(("augment", 0.0), ("warmup_epochs", 0)))
    params = train_parameters(profile, Layout(tmp_path), tmp_path, "resnet18", "kl5", device="cpu")
    assert params["recipe_changes"] == {"augment": 0.0, "warmup_epochs": 0}
    assert get_profile("cpu").recipe_changes == ()


def test_a_rerun_resumes_the_budget_it_was_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    from kneelib.pipeline import budget as budget_module
    from kneelib.pipeline.budget import BUDGET_FILE, record_budget, recorded_budget

    profile = get_profile("cpu", archs=["densenet121", "se_densenet121"], seeds=[21, 42])
    chosen = choose_budget(1700 / 3600, seconds, CURVES)
    out = tmp_path / "sweep"
    record_budget(out, profile, chosen)
    assert recorded_budget(out, profile, chosen.hours, curves=CURVES) == chosen
    assert recorded_budget(out, profile, 2 * chosen.hours, curves=CURVES) is None  # other hours: chosen again
    assert recorded_budget(out, get_profile("cpu", archs=["densenet121"], seeds=[21, 42]), chosen.hours,
                           curves=CURVES) is None
    assert recorded_budget(out, profile, chosen.hours, device="cuda", curves=CURVES) is None
    good = json.loads((out / BUDGET_FILE).read_text())
    for bad in ({"seconds": "x"}, {"image_size": True}, {"image_size": 96}, {"epochs": 5}, {"fits": 1},
                {"expected_accuracy": "abc"}, {"recipe_changes": {"augment": 0.0, "weights": "/etc/passwd"}},
                {"hours": True}):
        (out / BUDGET_FILE).write_text(json.dumps({**good, **bad}))
        assert recorded_budget(out, profile, chosen.hours, curves=CURVES) is None, bad
    (out / BUDGET_FILE).write_text("[" * 100_000 + "]" * 100_000)
    assert recorded_budget(out, profile, chosen.hours, curves=CURVES) is None
    (out / BUDGET_FILE).write_text(json.dumps(good))

    def no_timing(*_: object, **__: object) -> None:
        raise AssertionError("a recorded budget is not timed again")

    monkeypatch.setattr(budget_module, "plan", no_timing)
    monkeypatch.setattr(budget_module, "load_curves", lambda: CURVES)
    argv = ["reproduce", "--profile", "cpu", "--data", str(tmp_path), "--out", str(out), "--archs", "densenet121",
            "se_densenet121", "--seeds", "21", "42", "--hours", str(chosen.hours), "--dry-run", "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "64 px, 16 epochs" in printed and "chosen before" in printed
    (out / BUDGET_FILE).write_text('{"hours": "eight"')  # unreadable: chosen again (here: timed, which fails)
    with pytest.raises(AssertionError, match="not timed again"):
        main(argv)


def test_runs_that_share_every_core_are_projected_one_at_a_time() -> None:
    from kneelib.pipeline.profiles import parallel_runs

    cpu = get_profile("cpu", jobs=2)  # governed threads: two side by side take ~1.8x one alone
    assert parallel_runs(cpu, 2) == 1 and parallel_runs(cpu, 2, on_gpu=True) == 2
    assert parallel_runs(get_profile("smoke"), 3) == 3  # single-threaded runs: one per job
