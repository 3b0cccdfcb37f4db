"""``reproduce(profile)``: regenerate every table and figure of the paper in one command.

The notebooks in ``notebooks/`` run in order with papermill (the training notebook once per
arch × scheme × seed) and write ``OUT/{notebooks,tables,figures}``. A finished run is skipped, a killed
run is resumed, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from kneelib.errors import KneelibError
from kneelib.evaluate.sweep import run_name
from kneelib.pipeline.notebooks import (
    NOTEBOOKS,
    REPO_ROOT,
    notebook_parameters,
    timed_notebook,
    train_parameters,
)
from kneelib.pipeline.profiles import Layout, Profile


def run_finished(run_dir: Path) -> bool:
    """True when ``run_dir`` holds a training run that completed all its epochs."""
    status = run_dir / "status.json"
    if not status.is_file():
        return False
    try:
        return bool(json.loads(status.read_text()).get("finished"))
    except (OSError, ValueError):
        return False


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
    from kneelib.synthetic.crops import generate_dataset

    if layout.data.exists():
        shutil.rmtree(layout.data)  # an incomplete earlier attempt
    log(f"synthetic data: generating {profile.synth_per_grade} crops per grade in {layout.data}")
    generate_dataset(layout.data, per_grade=profile.synth_per_grade, size=profile.synth_size,
                     signs=profile.synth_signs, bilateral=profile.synth_bilateral, seed=0,
                     progress=sys.stderr.isatty())
    return layout.data


