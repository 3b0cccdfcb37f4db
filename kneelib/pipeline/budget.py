"""``--hours``: the image size and epochs that make a CPU sweep finish in about the time it is given.

Two inputs decide: how long one epoch of each architecture takes at each candidate size on *this* machine (the
projection's timed steps, :func:`kneelib.pipeline.projection.project_sweep`), and how accuracy grows with image
size and epochs, measured once on the real crops and shipped with kneelib (``assets/budget_curves.json``,
written by ``benchmarks/budget_curves.py --publish``; accuracy on val', the selection split). The curves read are
those of the grid's own architectures where they were measured (an SE model's are its backbone's), else all of them.
Among the sizes measured for each of those, every epoch count from the smallest to the largest measured is a
candidate (accuracy interpolated in log-epochs between measured points, never extrapolated); the choice is the
candidate of highest expected accuracy whose projected time fits, the cheaper one where two are within :data:`TIE`
of each other.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kneelib.errors import KneelibError
from kneelib.pipeline.profiles import Profile, parallel_runs

#: Epoch counts a budget may choose (those inside a size's measured range).
CANDIDATE_EPOCHS = (2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64)
#: Expected accuracies closer than this count as equal: the cheaper candidate wins.
TIE = 0.005


@dataclass(frozen=True)
class Curves:
    """Measured accuracy (val') per architecture, image size and epochs, and the recipe it was measured with."""

    accuracy: Mapping[str, Mapping[int, Mapping[int, float]]]  # arch -> size -> epochs -> accuracy
    recipe_changes: Mapping[str, Any]  # the fields changed from the scratch recipe
    conditions: str

    @property
    def sizes(self) -> list[int]:
        """Image sizes measured for every architecture of the curves."""
        per_arch = [set(by_size) for by_size in self.accuracy.values()]
        return sorted(set.intersection(*per_arch)) if per_arch else []

    @property
    def augment(self) -> float:
        """The augmentation strength the curves were measured with (the data pipeline a budget will run)."""
        return float(self.recipe_changes.get("augment", 1.0))

    def for_archs(self, archs: Sequence[str]) -> Curves:
        """The curves of the architectures ``archs`` train (an SE model reads its plain backbone's), where any of
        them was measured; else every measured architecture's."""
        wanted = {arch.removeprefix("se_") for arch in archs}
        kept = {arch: by_size for arch, by_size in self.accuracy.items() if arch in wanted}
        return dataclasses.replace(self, accuracy=kept) if kept else self

    def expected(self, size: int, epochs: int) -> float | None:
        """Mean over the curves' architectures of the accuracy at ``size`` and ``epochs`` (None outside the
        measured epochs of that size)."""
        values = [_interpolate(by_size.get(size, {}), epochs) for by_size in self.accuracy.values()]
        return None if not values or any(v is None for v in values) else sum(values) / len(values)


def _interpolate(points: Mapping[int, float], epochs: int) -> float | None:
    """Accuracy at ``epochs``, linear in log-epochs between the measured points; None outside them."""
    xs = sorted(points)
    if not xs or not xs[0] <= epochs <= xs[-1]:
        return None
    for lo, hi in zip(xs, xs[1:]):
        if lo <= epochs <= hi:
            t = (math.log(epochs) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return points[lo] + t * (points[hi] - points[lo])
    return points[xs[0]]  # a single measured point


def load_curves(document: Mapping[str, Any] | None = None) -> Curves:
    """The shipped curves (or ``document`` in the same format), checked."""
    if document is None:
        text = resources.files("kneelib.pipeline").joinpath("assets/budget_curves.json").read_text()
        document = json.loads(text)
    try:
        accuracy = {arch: {int(size): {int(e): float(a) for e, a in by_epochs.items()}
                           for size, by_epochs in by_size.items()}
                    for arch, by_size in document["accuracy"].items()}
        return Curves(accuracy, dict(document.get("recipe_changes", {})), str(document.get("conditions", "")))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise KneelibError(f"budget curves: malformed ({exc})") from None


@dataclass(frozen=True)
class Budget:
    """The chosen settings and what they are projected to cost and give."""

    hours: float
    image_size: int
    epochs: int
    seconds: float  # projected training time of the whole grid
    expected_accuracy: float | None
    fits: bool  # False: even the cheapest measured setting is over the hours given
    recipe_changes: Mapping[str, Any]

    def describe(self) -> str:
        """One line: the choice, its projected time against the budget, and what the curves expect of it."""
        expected = (f"; val' accuracy {100 * self.expected_accuracy:.1f}% expected from the measured curves"
                    if self.expected_accuracy is not None else "")
        warning = "" if self.fits else (" (over the budget: the cheapest measured setting; fewer --seeds or --archs "
                                        "would fit more in it)")
        return (f"budget {self.hours:g} h: {self.image_size} px, {self.epochs} epochs, projected "
                f"{self.seconds / 3600:.1f} h{warning}{expected}")


def choose_budget(hours: float, grid_seconds: Callable[[int, int], float], curves: Curves,
                  sizes: Sequence[int] | None = None) -> Budget:
    """The :class:`Budget` for ``hours``: ``grid_seconds(size, epochs)`` projects the whole grid's training time."""
    if not (hours > 0 and math.isfinite(hours)):
        raise KneelibError(f"--hours must be a positive number, got {hours}")
    options = []
    for size in sizes or curves.sizes:
        for epochs in CANDIDATE_EPOCHS:
            expected = curves.expected(size, epochs)
            if expected is not None:
                options.append((expected, size, epochs, grid_seconds(size, epochs)))
    if not options:
        raise KneelibError("budget curves: no measured image size to choose from")
    fitting = [o for o in options if o[3] <= hours * 3600]
    if fitting:
        best = max(o[0] for o in fitting)
        chosen = min((o for o in fitting if o[0] >= best - TIE), key=lambda o: o[3])
    else:
        chosen = min(options, key=lambda o: o[3])
    expected, size, epochs, seconds = chosen
    return Budget(hours, size, epochs, seconds, expected, bool(fitting), curves.recipe_changes)


def grid_timer(profile: Profile, data: str | Path, sizes: Sequence[int], *, device: str = "cpu",
               augment: float = 1.0) -> Callable[[int, int], float]:
    """``grid_seconds(size, epochs)``: the projected training time of ``profile``'s grid on ``data`` at any of
    ``sizes``, from one epoch of every architecture timed at each size on this machine. Reads ``data`` (the held-out
    split in memory where the profile asks for it); writes nothing."""
    from kneelib.data.layout import discover
    from kneelib.data.split import held_out_split
    from kneelib.pipeline.projection import project_sweep, time_data
    from kneelib.train.runtime import resolve_device

    on_gpu = resolve_device(device).type == "cuda"
    samples = discover(Path(data))
    if profile.selection == "held-out" and "test" not in {s.split for s in samples}:
        samples = held_out_split(samples, source=Path(data))
    counts = {name: sum(s.split == name for s in samples) for name in ("train", "val", "test")}
    runs_per_arch = len(profile.schemes) * len(profile.seeds)
    train = [s for s in samples if s.split == "train"]
    per_size = {}
    for size in sizes:
        host = time_data(train, profile.schemes[0], image_size=size, clahe=profile.clahe, augment=augment)
        per_size[size] = project_sweep(profile.archs, counts, epochs=1, image_size=size,
                                       batch_size=profile.batch_size, runs_per_arch=runs_per_arch,
                                       jobs=parallel_runs(profile, profile.jobs, on_gpu=on_gpu),
                                       device=device, data=host)

    def grid_seconds(size: int, epochs: int) -> float:
        return dataclasses.replace(per_size[size], epochs=epochs).total_seconds

    return grid_seconds


#: Where a sweep keeps the budget it was given (``OUT/budget.json``): a rerun with the same hours and grid resumes it.
BUDGET_FILE = "budget.json"


def _grid(profile: Profile, device: str) -> dict[str, Any]:
    return {"archs": list(profile.archs), "schemes": list(profile.schemes), "seeds": list(profile.seeds),
            "device": device}


def record_budget(out: Path, profile: Profile, budget: Budget, *, device: str = "cpu") -> Path:
    """Write ``out/budget.json``: the budget and the grid (and device) it was chosen for."""
    from kneelib.atomic import check_output_dir
    from kneelib.train.checkpoint import write_json

    check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    return write_json(out / BUDGET_FILE, {**dataclasses.asdict(budget), "grid": _grid(profile, device),
                                          "recipe_changes": dict(budget.recipe_changes)})


def recorded_budget(out: Path, profile: Profile, hours: float, *, device: str = "cpu",
                    curves: Curves | None = None) -> Budget | None:
    """The budget ``out/budget.json`` recorded for the same ``hours``, grid and device, else None — also for a file
    that is unreadable or holds anything the shipped curves could not have chosen (the budget is then chosen again)."""
    curves = (curves or load_curves()).for_archs(profile.archs)
    try:
        document = json.loads((out / BUDGET_FILE).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or document.get("grid") != _grid(profile, device):
        return None
    fields = {f.name: document.get(f.name) for f in dataclasses.fields(Budget)}

    def number(value: Any) -> bool:
        return type(value) in (int, float) and math.isfinite(value)

    valid = (number(fields["hours"]) and fields["hours"] == hours
             and type(fields["image_size"]) is int and fields["image_size"] in curves.sizes
             and type(fields["epochs"]) is int and fields["epochs"] in CANDIDATE_EPOCHS
             and number(fields["seconds"]) and fields["seconds"] >= 0
             and (fields["expected_accuracy"] is None or number(fields["expected_accuracy"]))
             and type(fields["fits"]) is bool and fields["recipe_changes"] == dict(curves.recipe_changes))
    return Budget(**fields) if valid else None


def with_budget(profile: Profile, budget: Budget) -> Profile:
    """``profile`` with the budget's image size, epochs and recipe changes."""
    changes = tuple(sorted({**dict(profile.recipe_changes), **dict(budget.recipe_changes)}.items()))
    return dataclasses.replace(profile, image_size=budget.image_size, epochs=budget.epochs, recipe_changes=changes)


def plan(profile: Profile, data: str | Path, hours: float, *, device: str = "cpu",
         curves: Curves | None = None) -> tuple[Profile, Budget]:
    """``profile`` with the image size, epochs and recipe changes that fit ``hours`` on this machine, and the
    :class:`Budget` behind them (:func:`grid_timer` times every architecture at each measured size)."""
    curves = (curves or load_curves()).for_archs(profile.archs)
    budget = choose_budget(hours, grid_timer(profile, data, curves.sizes, device=device, augment=curves.augment),
                           curves)
    return with_budget(profile, budget), budget
