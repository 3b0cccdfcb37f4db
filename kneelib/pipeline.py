"""Profiles and papermill execution: regenerate every table and figure of the paper in one command.

``reproduce(profile)`` executes the notebooks in ``notebooks/`` in order with papermill (the training
notebook once per arch × scheme × seed) and writes ``OUT/{notebooks,tables,figures}``. A finished run is
skipped, a killed run is resumed, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kneelib.errors import KneelibError
from kneelib.sweep import run_name

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
ALL_ARCHS = (
    "resnet18", "resnet34", "resnet50", "densenet121",
    "se_resnet18", "se_resnet34", "se_resnet50", "se_densenet121",
)
NOTEBOOKS = ("01_data", "02_se_blocks", "03_train", "04_ensemble", "05_results", "06_predict")


@dataclass(frozen=True)
class Profile:
    """Everything a sweep needs besides the data: the grid and the training recipe."""

    name: str
    archs: tuple[str, ...] = ALL_ARCHS
    schemes: tuple[str, ...] = ("kl5", "kl4")
    seeds: tuple[int, ...] = (21, 42, 84)
    epochs: int = 75
    image_size: int = 224
    batch_size: int = 32
    weights: str = "imagenet"
    limit: int = 0  # 0 = every image
    clahe: bool = False
    synth_per_grade: int = 0  # > 0: generate synthetic data when no --data is given
    synth_size: int = 224
    synth_signs: float = 1.0  # KL sign strength of the synthetic data (1 = realistic)
    synth_bilateral: int = 0  # synthetic bilateral radiographs for 06_predict's localisation demo
    featured_arch: str = "se_densenet121"  # the ensemble of Table 6 and Figs. 5-7
    featured_scheme: str = "kl4"
    threads: int = 0  # torch threads per run (0 = torch's default)
    jobs: int = 1  # training notebooks executed at once
    cell_timeout: int = 0  # seconds one notebook cell may run (0 = no limit): a hung kernel fails the sweep
    split: str = "test"  # the split the tables are computed on


PROFILES: dict[str, Profile] = {
    # The README's main job: synthetic data, all 48 runs, tiny images, a few epochs, on a laptop CPU.
    # Single-threaded runs, three at a time: on a 2-core machine one run's start-up (kernel, imports)
    # overlaps the others' training. Batch 8 gives the from-scratch models more steps per image seen.
    # At 64 px realistic KL signs are a pixel or two wide: the smoke data draws them 3x stronger.
    "smoke": Profile(
        name="smoke", epochs=3, image_size=64, batch_size=8, weights="none",
        synth_per_grade=45, synth_size=64, synth_signs=3.0, synth_bilateral=3, threads=1, jobs=3,
        cell_timeout=900,
    ),
    # The paper's settings on a real data directory: 224 px, 75 epochs, ImageNet weights, 48 runs (GPU).
    "paper": Profile(name="paper"),
}


def get_profile(name: str, **overrides: Any) -> Profile:
    """A named profile with optional overrides (``None`` values are ignored)."""
    if name not in PROFILES:
        raise KneelibError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(Profile)})
    if unknown:
        raise KneelibError(f"unknown profile setting(s): {', '.join(unknown)}")
    profile = dataclasses.replace(PROFILES[name], **changes)
    # The featured ensemble (Table 6, Figs. 5-7) must be part of the grid: else take the grid's last.
    if profile.featured_arch not in profile.archs:
        profile = dataclasses.replace(profile, featured_arch=profile.archs[-1])
    if profile.featured_scheme not in profile.schemes:
        profile = dataclasses.replace(profile, featured_scheme=profile.schemes[-1])
    return profile


@dataclass(frozen=True)
class Layout:
    """Where a sweep writes: ``OUT/{data,runs,eval,notebooks,tables,figures}``."""

    out: Path

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    @property
    def eval(self) -> Path:
        return self.out / "eval"

    @property
    def notebooks(self) -> Path:
        return self.out / "notebooks"

    @property
    def tables(self) -> Path:
        return self.out / "tables"

    @property
    def figures(self) -> Path:
        return self.out / "figures"


def _portable(path: Path, cwd: Path) -> str:
    """A path as a notebook parameter: relative to ``cwd`` when inside the repository, else absolute."""
    path = Path(os.path.abspath(path))
    try:
        path.relative_to(REPO_ROOT)
        return os.path.relpath(path, cwd)
    except ValueError:
        return str(path)


def notebook_parameters(profile: Profile, layout: Layout, data_dir: Path, *,
                        device: str, real_data_dir: Path | None) -> dict[str, dict[str, Any]]:
    """The papermill parameters of every notebook but the training one (see ``train_parameters``)."""
    cwd = NOTEBOOK_DIR
    common = {"out_dir": _portable(layout.out, cwd), "data_dir": _portable(data_dir, cwd)}
    featured = {
        "arch": profile.featured_arch, "scheme": profile.featured_scheme,
        "seeds": list(profile.seeds), "device": device, "split": profile.split,
    }
    return {
        "01_data": {**common, "real_data_dir": _portable(real_data_dir, cwd) if real_data_dir else ""},
        "02_se_blocks": {**common, "image_size": profile.image_size,
                         "run_dir": _portable(layout.runs / run_name(
                             profile.featured_arch if profile.featured_arch.startswith("se_")
                             else "se_densenet121", profile.featured_scheme, profile.seeds[0]), cwd)},
        "04_ensemble": {**common, **featured},
        "05_results": {**common, "archs": list(profile.archs), "schemes": list(profile.schemes),
                       "seeds": list(profile.seeds), "featured_arch": profile.featured_arch,
                       "featured_scheme": profile.featured_scheme, "device": device,
                       "split": profile.split},
        "06_predict": {**common, **featured, **_bilateral_parameters(data_dir, cwd)},
    }


def _bilateral_parameters(data_dir: Path, cwd: Path) -> dict[str, str]:
    """06_predict's radiographs (``DATA/bilateral`` when the data has them) and the packaged localiser."""
    from kneelib.localize import PACKAGED_LOCALIZER

    folder = data_dir / "bilateral"
    if not folder.is_dir():
        return {"bilateral_dir": "", "localizer": ""}
    return {"bilateral_dir": _portable(folder, cwd), "localizer": _portable(PACKAGED_LOCALIZER, cwd)}


def train_parameters(profile: Profile, layout: Layout, data_dir: Path, arch: str, scheme: str,
                     seed: int, *, device: str) -> dict[str, Any]:
    """The papermill parameters of one ``03_train`` execution."""
    cwd = NOTEBOOK_DIR
    return {
        "data_dir": _portable(data_dir, cwd),
        "run_dir": _portable(layout.runs / run_name(arch, scheme, seed), cwd),
        "arch": arch, "scheme": scheme, "seed": seed, "epochs": profile.epochs,
        "image_size": profile.image_size, "batch_size": profile.batch_size, "weights": profile.weights,
        "clahe": profile.clahe, "limit": profile.limit, "device": device, "threads": profile.threads,
    }


def run_finished(run_dir: Path) -> bool:
    """True when ``run_dir`` holds a training run that completed all its epochs."""
    status = run_dir / "status.json"
    if not status.is_file():
        return False
    try:
        return bool(json.loads(status.read_text()).get("finished"))
    except (OSError, ValueError):
        return False


def execute_notebook(name: str, output: Path, parameters: dict[str, Any], *, timeout: int = 0) -> None:
    """Execute ``notebooks/<name>.ipynb`` with papermill; on failure keep the partial output and name the cell.

    ``timeout``: seconds a cell may run (0: no limit)."""
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError

    source = NOTEBOOK_DIR / f"{name}.ipynb"
    if not source.is_file():
        raise KneelibError(f"{source}: notebook not found")
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(
            str(source), str(output), parameters=parameters, cwd=str(NOTEBOOK_DIR),
            progress_bar=False, kernel_name="python3", execution_timeout=timeout or None,
        )
    except CellTimeoutError:
        raise KneelibError(f"notebook {name}: a cell ran longer than {timeout} s and was stopped; the partial "
                           f"executed notebook is kept at {output}") from None
    except pm.PapermillExecutionError as exc:
        raise KneelibError(
            f"notebook {name} failed in cell {exc.exec_count} ({exc.ename}: {exc.evalue}); "
            f"the partial executed notebook is kept at {output}"
        ) from None
    strip_volatile_metadata(output)


def timed_notebook(name: str, output: Path, parameters: dict[str, Any], timeout: int = 0) -> float:
    """:func:`execute_notebook`, returning its wall time in seconds (a picklable pool task)."""
    t0 = time.time()
    for attempt in range(3):
        try:
            execute_notebook(name, output, parameters, timeout=timeout)
            break
        except RuntimeError as exc:
            # Kernels started in parallel processes can draw the same free TCP port and die at start-up;
            # a fresh start draws new ports (a training run resumes where it was).
            if "Kernel died before replying" not in str(exc) or attempt == 2:
                raise
    return time.time() - t0


def strip_volatile_metadata(path: Path) -> None:
    """Remove papermill timestamps and durations so executed notebooks diff cleanly."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata.get("papermill", {}).clear()
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    from kneelib.atomic import write_text

    write_text(path, nbformat.writes(nb) + "\n")


def reproduce(profile: Profile, *, data: str | Path | None = None, out: str | Path | None = None,
              device: str = "auto", real_data: str | Path | None = None,
              log: Callable[[str], None] = print) -> Layout:
    """Run the whole notebook sweep of ``profile``; returns where everything was written.

    Order: ``01_data``; ``03_train`` once per arch × scheme × seed (``profile.jobs`` at a time);
    then ``02_se_blocks`` (it looks inside a trained SE model), ``04_ensemble``, ``05_results`` and
    ``06_predict``. The first failing notebook stops the sweep (its partial output is kept).
    """
    layout = Layout(Path(out) if out else REPO_ROOT / "runs" / profile.name)
    layout.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    data_dir = _prepare_data(profile, layout, data, log)
    if real_data is None:
        default_real = REPO_ROOT.parent / "shared" / "data" / "kneeKL224"
        real_data = default_real if default_real.is_dir() else None
    params = notebook_parameters(profile, layout, data_dir, device=device,
                                 real_data_dir=Path(real_data) if real_data else None)
    grid = [(a, s, seed) for s in profile.schemes for a in profile.archs for seed in profile.seeds]
    total = len(grid) + len(NOTEBOOKS) - 1
    counter = iter(range(1, total + 1))

    def step(name: str, output: Path, parameters: dict[str, Any]) -> None:
        seconds = timed_notebook(name, output, parameters, profile.cell_timeout)
        log(f"[{next(counter)}/{total}] {output.stem}: done in {seconds:.1f} s")

    step("01_data", layout.notebooks / "01_data.ipynb", params["01_data"])
    todo = []
    for arch, scheme, seed in grid:
        name = run_name(arch, scheme, seed)
        output = layout.notebooks / "train" / f"03_train_{name}.ipynb"
        if run_finished(layout.runs / name) and output.is_file():
            log(f"[{next(counter)}/{total}] {output.stem}: finished earlier, skipped")
            continue
        todo.append((output, train_parameters(profile, layout, data_dir, arch, scheme, seed, device=device)))
    # Processes, not threads: papermill changes the working directory of the process it runs in.
    with ProcessPoolExecutor(max_workers=max(1, profile.jobs), mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(timed_notebook, "03_train", output, parameters, profile.cell_timeout): output
                   for output, parameters in todo}
        try:
            for future in as_completed(futures):
                log(f"[{next(counter)}/{total}] {futures[future].stem}: done in {future.result():.1f} s")
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    for name in ("02_se_blocks", "04_ensemble", "05_results", "06_predict"):
        step(name, layout.notebooks / f"{name}.ipynb", params[name])
    log(f"reproduce ({profile.name}) finished in {(time.time() - started) / 60:.1f} min: "
        f"tables in {layout.tables}, figures in {layout.figures}, notebooks in {layout.notebooks}")
    return layout


def _prepare_data(profile: Profile, layout: Layout, data: str | Path | None,
                  log: Callable[[str], None]) -> Path:
    """The data directory of the sweep: the given one, or synthetic data generated once under OUT/data."""
    if data is not None:
        data = Path(data)
        if not data.is_dir():
            raise KneelibError(f"{data}: data directory not found")
        return data
    if profile.synth_per_grade <= 0:
        raise KneelibError(f"profile {profile.name!r} needs real data: pass --data DIR")
    wanted = {"per_grade": profile.synth_per_grade, "size": profile.synth_size, "signs": profile.synth_signs,
              "bilateral": profile.synth_bilateral}
    if (layout.data / "manifest.csv").is_file():
        made = json.loads((layout.data / "synthetic.json").read_text())
        differs = {k: made.get(k) for k, v in wanted.items() if made.get(k) != v}
        if differs:
            raise KneelibError(f"{layout.data} holds synthetic data made with {differs}, not {wanted}: "
                               f"delete {layout.out} (or pass another --out) to start the sweep afresh")
        log(f"synthetic data: reusing {layout.data}")
        return layout.data
    from kneelib.data.synthetic import generate_dataset

    if layout.data.exists():
        shutil.rmtree(layout.data)  # an incomplete earlier attempt
    log(f"synthetic data: generating {profile.synth_per_grade} crops per grade in {layout.data}")
    generate_dataset(layout.data, per_grade=profile.synth_per_grade, size=profile.synth_size,
                     signs=profile.synth_signs, bilateral=profile.synth_bilateral, seed=0,
                     progress=sys.stderr.isatty())
    return layout.data


def update_committed_notebooks(layout: Layout, *, train_run: str | None = None) -> list[Path]:
    """Copy the executed notebooks of a sweep over ``notebooks/`` (their outputs become the nbval reference)."""
    copied = []
    for name in NOTEBOOKS:
        if name == "03_train":
            runs = sorted((layout.notebooks / "train").glob("03_train_*.ipynb"))
            chosen = [p for p in runs if train_run and p.stem.endswith(train_run)] or runs[:1]
            src = chosen[0] if chosen else None
        else:
            src = layout.notebooks / f"{name}.ipynb"
        if src is not None and src.is_file():
            dst = NOTEBOOK_DIR / f"{name}.ipynb"
            shutil.copyfile(src, dst)
            copied.append(dst)
    return copied


def parameters_cell_names(notebook: Path) -> list[str]:
    """The variable names assigned in a notebook's cell tagged ``parameters`` (for the contract test)."""
    import ast

    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            tree = ast.parse(cell.source)
            return [t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(t, ast.Name)]
    raise KneelibError(f"{notebook}: no cell tagged 'parameters'")
