"""``reproduce(profile)``: regenerate every table and figure of the paper in one command.

The notebooks in ``notebooks/`` run in order with papermill — the training notebook once per
architecture × scheme, training the profile's seeds in turn — and write ``OUT/{notebooks,tables,figures}``.
A finished run is skipped, a killed run is resumed, so an interrupted sweep continues where it stopped.
Each training notebook's seed group is evaluated by the worker that trained it, while the others still
train, so the result notebooks find the evaluation cached; the workers are local processes or Ray tasks
(:mod:`~kneelib.pipeline.executors`). Profiles that pin the CPU kernels
(:mod:`kneelib.cpu_pin`) set the pin before any process that computes is started.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from kneelib import cpu_pin
from kneelib.atomic import check_output_dir
from kneelib.data.layout import MANIFEST_NAME, Sample, discover
from kneelib.data.split import held_out_split, write_manifest
from kneelib.errors import KneelibError
from kneelib.pipeline.executors import LocalExecutor, RayExecutor, make_executor
from kneelib.pipeline.notebooks import (
    NOTEBOOKS,
    REPO_ROOT,
    notebook_parameters,
    timed_notebook,
    train_notebook_name,
    train_parameters,
)
from kneelib.pipeline.profiles import (
    PROFILES,
    Layout,
    Profile,
    check_device,
    check_profile,
    parallel_runs,
    resolve_jobs,
)
from kneelib.pipeline.projection import (
    Projection,
    SweepProgress,
    project_sweep,
    read_status,
    time_data,
    trained_so_far,
)
from kneelib.pipeline.reference import check_sweep, load_reference
from kneelib.train.config import run_name

#: Relative CPU time of one model's training notebook (the smoke profile on a 2-core machine, three
#: single-threaded notebooks at a time, measured): the sweep starts the longest first, so the last
#: notebooks to finish are short ones.
TRAIN_COST = {
    "resnet18": 1.0, "se_resnet18": 1.1, "resnet34": 1.9, "se_resnet34": 2.0,
    "densenet121": 1.9, "se_densenet121": 2.3, "resnet50": 3.0, "se_resnet50": 3.2,
}


def output_dir(profile: Profile, out: str | Path | None) -> Path:
    """Where ``reproduce`` writes: ``out``, else ``runs/<profile>`` in the repository (absolute)."""
    return (Path(out) if out else REPO_ROOT / "runs" / profile.name).resolve()


def run_finished(run_dir: Path) -> bool:
    """True when ``run_dir`` holds a training run that completed all its epochs."""
    return bool((read_status(run_dir) or {}).get("finished"))


def reproduce(profile: Profile, *, data: str | Path | None = None, out: str | Path | None = None,
              device: str = "auto", real_data: str | Path | None = None,
              log: Callable[[str], None] = print, executor: str = "local",
              ray_address: str | None = None) -> Layout:
    """Run the whole notebook sweep of ``profile``; returns where everything was written.

    Order: ``03_train`` once per arch × scheme (``profile.jobs`` at a time, the costliest first), each
    followed by its group's evaluation, with ``01_data`` beside them; then ``02_se_blocks`` (it looks inside a
    trained SE model), ``04_ensemble``, ``05_results`` and ``06_predict``. A failing notebook
    stops the sweep (its partial output is kept; a failed ``01_data`` once the training notebook running
    beside it is done). ``executor``: ``local`` (worker processes here) or ``ray`` (Ray tasks on a
    local instance, or on the cluster at ``ray_address``; checked before anything runs).
    """
    check_profile(profile)  # the whole grid and its settings, before any work
    check_device(device)
    if data is not None and not Path(data).is_dir():
        raise KneelibError(f"{data}: " + ("not a directory; --data takes a data directory ({train,val,test}/{0..4})"
                                          if Path(data).exists() else "data directory not found"))
    if profile.pin_cpu:
        cpu_pin.apply()  # inherited by every kernel and worker started from here on
    # Absolute: papermill and the workers change their working directory, a relative --out would move with it.
    layout = Layout(output_dir(profile, out))
    check_output_dir(layout.out)  # before any work: a file or a read-only folder there stops it with one line
    if profile.jobs <= 0:
        profile = dataclasses.replace(profile, jobs=resolve_jobs(profile, device))
        if executor == "local":  # a Ray instance describes its own slots
            log(f"{profile.jobs} training notebook(s) at once")
    chosen = make_executor(executor, profile, layout.out, ray_address=ray_address)  # bad names: nothing made
    created = not layout.out.exists()
    layout.out.mkdir(parents=True, exist_ok=True)
    try:
        with chosen as runner:
            if executor == "ray":
                log(runner.describe())
            return _sweep(profile, layout, runner, data=data, device=device, real_data=real_data, log=log)
    except KneelibError:
        if created and not any(layout.out.iterdir()):  # stopped before writing anything: leave no trace
            layout.out.rmdir()
        raise


def _sweep(profile: Profile, layout: Layout, runner: LocalExecutor | RayExecutor, *, data: str | Path | None,
           device: str, real_data: str | Path | None, log: Callable[[str], None]) -> Layout:
    """:func:`reproduce` once its executor is ready."""
    started = time.time()
    data_dir = _prepare_data(profile, layout, data, log)
    weights = {arch: TRAIN_COST.get(arch, 1.0) for arch in profile.archs}  # relative epoch cost per arch
    if profile.project:
        projection = _projection(profile, layout, data_dir, device, log)
        weights = {arch: projection.epoch_seconds(arch) for arch in profile.archs}
    if real_data is None and data is None:  # synthetic data: show it beside the real crops when they are here
        default_real = REPO_ROOT.parent / "shared" / "data" / "kneeKL224"
        real_data = default_real if default_real.is_dir() else None
    params = notebook_parameters(profile, layout, data_dir, device=device,
                                 real_data_dir=Path(real_data) if real_data else None,
                                 source_dir=Path(data) if data is not None else None)
    grid = sorted(((a, s) for s in profile.schemes for a in profile.archs),
                  key=lambda model: -TRAIN_COST.get(model[0], 1.0))
    total = len(grid) + len(NOTEBOOKS) - 1
    counter = iter(range(2, total + 1))  # [1/total] is 01_data's, whenever it finishes

    def done(number: int, output: Path, seconds: float) -> str:
        return f"[{number}/{total}] {output.stem}: done in {seconds:.1f} s"

    # 01_data runs beside the training (nothing there needs it; it reads images, no torch), in a spawned process:
    # papermill changes the working directory of the process it runs in. The notebooks that read the trained
    # runs follow one at a time: two at once measured slower (each kernel's threads spin against the other's).
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as side:
        first = side.submit(timed_notebook, "01_data", layout.notebooks / "01_data.ipynb", params["01_data"],
                            profile.cell_timeout)
        todo = []
        for arch, scheme in grid:
            output = layout.notebooks / "train" / f"{train_notebook_name(arch, scheme)}.ipynb"
            runs = [layout.runs / run_name(arch, scheme, seed) for seed in profile.seeds]
            if all(run_finished(r) for r in runs) and output.is_file():
                log(f"[{next(counter)}/{total}] {output.stem}: finished earlier, skipped")
                continue
            todo.append((output, train_parameters(profile, layout, data_dir, arch, scheme, device=device)))
        runs = {layout.runs / run_name(a, s, seed): weights[a] for a, s in grid for seed in profile.seeds}
        with SweepProgress(runs, profile.epochs) as progress:
            for output, seconds in runner.run(todo, timeout=profile.cell_timeout, split=profile.split):
                progress.write(done(next(counter), output, seconds), log)
                if first.done() and first.exception() is not None:
                    break  # 01_data failed: stop here, its error is raised below
        log(done(1, layout.notebooks / "01_data.ipynb", first.result()))
    for name in ("02_se_blocks", "04_ensemble", "05_results", "06_predict"):
        output = layout.notebooks / f"{name}.ipynb"
        log(done(next(counter), output, timed_notebook(name, output, params[name], profile.cell_timeout)))
    log(f"reproduce ({profile.name}) finished in {(time.time() - started) / 60:.1f} min: "
        f"tables in {layout.tables}, figures in {layout.figures}, notebooks in {layout.notebooks}")
    if data is None and load_reference(profile.name) is not None and not _reference_grid(profile):
        log(f"trained numbers: not compared with the {profile.name} reference (another grid or settings)")
    elif data is None and load_reference(profile.name) is not None:
        try:
            log(f"trained numbers: {check_sweep(layout, profile.name)}")
        except KneelibError as exc:
            log(f"warning: {exc}")
    return layout


def _reference_grid(profile: Profile) -> bool:
    """Whether ``profile`` trains the grid and sizes of its named profile (what its committed reference holds)."""
    named = PROFILES.get(profile.name)
    fields = ("archs", "schemes", "seeds", "epochs", "image_size", "batch_size", "synth_per_grade", "synth_size")
    return named is not None and all(getattr(profile, f) == getattr(named, f) for f in fields)


def _say_verdict(data: Path, log: Callable[[str], None]) -> None:
    """Print how ``data`` compares with the paper's data set (``kneelib data verify``): a warning, not a stop."""
    from kneelib.data.paper.verify import verdict_line

    try:
        log(f"{data}: {verdict_line(data)}")
    except KneelibError as exc:
        log(f"warning: cannot compare {data} with the paper's data set ({exc})")


def _held_out_data(data: Path, chosen: list[Sample] | None, layout: Layout, log: Callable[[str], None]) -> Path:
    """The sweep's data for ``selection="held-out"``: ``data`` itself when it has a test split (``chosen`` is
    None), else ``OUT/data/manifest.csv`` with ``chosen``: train', val' and the official val split as ``test``."""
    if chosen is None:
        log(f"{data}: has a test split; training on train, selecting on val, reporting on test")
        return data
    n = {name: sum(s.split == name for s in chosen) for name in ("train", "val", "test")}
    log(f"{data}: no test split; training on train' ({n['train']:,}), selecting on val' ({n['val']:,}, a "
        f"patient-grouped eighth of train), reporting on the official val split ({n['test']:,}, held out)")
    write_manifest(chosen, layout.data / MANIFEST_NAME, protocol="held-out")
    return layout.data


def _projection(profile: Profile, layout: Layout, data_dir: Path, device: str,
                log: Callable[[str], None]) -> Projection:
    """Time a few steps per architecture and print the projected time of what is left of the sweep (runs that
    finished earlier, and the epochs a killed run trained, are not counted)."""
    samples = discover(data_dir)
    counts = {name: sum(s.split == name for s in samples) for name in ("train", "val", "test")}
    if profile.limit:
        counts = {k: min(v, profile.limit) for k, v in counts.items()}
    runs_per_arch = len(profile.schemes) * len(profile.seeds)
    import torch

    from kneelib.train import runtime

    threads = torch.get_num_threads()
    torch.set_num_threads(profile.threads or threads)  # as each training notebook will
    try:
        # On a CPU the images are decoded and augmented on the host, by the same cores: time that too.
        host = runtime.resolve_device(device).type != "cuda"
        augment = float(dict(profile.recipe_changes).get("augment", 1.0))  # a budget's recipe, where it changed it
        data = (time_data([s for s in samples if s.split == "train"], profile.schemes[0], image_size=profile.image_size,
                          clahe=profile.clahe, augment=augment) if host else (0.0, 0.0, 0.0))
        done = {arch: trained_so_far([layout.runs / run_name(arch, scheme, seed) for scheme in profile.schemes
                                      for seed in profile.seeds], profile.epochs) for arch in profile.archs}
        projection = project_sweep(profile.archs, counts, epochs=profile.epochs, image_size=profile.image_size,
                                   batch_size=profile.batch_size, runs_per_arch=runs_per_arch,
                                   jobs=parallel_runs(profile, profile.jobs, on_gpu=not host), device=device,
                                   data=data, done=done)
    finally:
        torch.set_num_threads(threads)
    log(projection.describe())
    return projection


def _prepare_data(profile: Profile, layout: Layout, data: str | Path | None,
                  log: Callable[[str], None]) -> Path:
    """The data directory of the sweep: the given one, or synthetic data generated once under OUT/data."""
    if data is not None:
        data = Path(data)
        if not data.is_dir():
            raise KneelibError(f"{data}: data directory not found")
        samples = discover(data)  # a folder kneelib cannot use stops here, before anything is printed or written
        held_out = profile.selection == "held-out"
        chosen = (held_out_split(samples, source=data)
                  if held_out and "test" not in {s.split for s in samples} else None)
        _say_verdict(data, log)
        return _held_out_data(data, chosen, layout, log) if held_out else data
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
    from kneelib.synthetic.crops import generate_dataset

    if layout.data.exists():
        shutil.rmtree(layout.data)  # an incomplete earlier attempt
    log(f"synthetic data: generating {profile.synth_per_grade} crops per grade in {layout.data}")
    # In a fresh process: NumPy and OpenCV read the CPU pin when they load, and they are loaded here.
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        pool.submit(generate_dataset, layout.data, per_grade=profile.synth_per_grade, size=profile.synth_size,
                    signs=profile.synth_signs, bilateral=profile.synth_bilateral, seed=0,
                    progress=sys.stderr.isatty()).result()
    return layout.data


