"""The notebooks of the sweep: their papermill parameters, execution, and the committed copies."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from kneelib.atomic import write_text
from kneelib.errors import KneelibError
from kneelib.train.config import run_name
from kneelib.pipeline.profiles import Layout, Profile

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = ("01_data", "02_se_blocks", "03_train", "04_ensemble", "05_results", "06_predict")


def _portable(path: Path, cwd: Path) -> str:
    """A path as a notebook parameter: relative to ``cwd`` when inside the repository or beside it (e.g.
    ``../shared/data``), so an executed notebook names no folder of the machine that ran it; else absolute."""
    path = Path(os.path.abspath(path))
    beside = REPO_ROOT.parent if REPO_ROOT.parent != Path(REPO_ROOT.anchor) else REPO_ROOT
    try:
        path.relative_to(beside)
        return os.path.relpath(path, cwd)
    except ValueError:
        return str(path)


def notebook_parameters(profile: Profile, layout: Layout, data_dir: Path, *,
                        device: str, real_data_dir: Path | None,
                        source_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """The papermill parameters of every notebook but the training one (see ``train_parameters``).
    ``source_dir``: the folder ``data_dir`` was made from (a held-out manifest's), which ``01_data`` compares
    with the paper's data set."""
    cwd = NOTEBOOK_DIR
    common = {"out_dir": _portable(layout.out, cwd), "data_dir": _portable(data_dir, cwd)}
    featured = {
        "arch": profile.featured_arch, "scheme": profile.featured_scheme,
        "seeds": list(profile.seeds), "device": device, "split": profile.split,
    }
    return {
        "01_data": {**common, "real_data_dir": _portable(real_data_dir, cwd) if real_data_dir else "",
                    "source_dir": _portable(source_dir, cwd) if source_dir and source_dir != data_dir else ""},
        "02_se_blocks": {**common, "image_size": profile.image_size, "run_dir": _se_run(profile, layout, cwd)},
        "04_ensemble": {**common, **featured},
        "05_results": {**common, "archs": list(profile.archs), "schemes": list(profile.schemes),
                       "seeds": list(profile.seeds), "featured_arch": profile.featured_arch,
                       "featured_scheme": profile.featured_scheme, "device": device,
                       "split": profile.split},
        "06_predict": {**common, **featured, **_bilateral_parameters(data_dir, cwd)},
    }


def _se_run(profile: Profile, layout: Layout, cwd: Path) -> str:
    """02_se_blocks' trained SE model: the featured architecture when it has SE blocks, else SE-DenseNet-121 or
    the grid's first SE model (featured scheme, first seed); "" when the grid has none (the notebook says so and
    skips the excitations)."""
    se = [a for a in profile.archs if a.startswith("se_")]
    if not se:
        return ""
    arch = next(a for a in (profile.featured_arch, "se_densenet121", se[0]) if a in se)
    return _portable(layout.runs / run_name(arch, profile.featured_scheme, profile.seeds[0]), cwd)


def _bilateral_parameters(data_dir: Path, cwd: Path) -> dict[str, str]:
    """06_predict's radiographs (``DATA/bilateral`` when the data has them) and the packaged localiser."""
    from kneelib.radiograph.localizer import PACKAGED_LOCALIZER

    folder = data_dir / "bilateral"
    if not folder.is_dir():
        return {"bilateral_dir": "", "localizer": ""}
    return {"bilateral_dir": _portable(folder, cwd), "localizer": _portable(PACKAGED_LOCALIZER, cwd)}


def train_parameters(profile: Profile, layout: Layout, data_dir: Path, arch: str, scheme: str, *,
                     device: str) -> dict[str, Any]:
    """The papermill parameters of one ``03_train`` execution: one model, all the profile's seeds."""
    cwd = NOTEBOOK_DIR
    return {
        "data_dir": _portable(data_dir, cwd), "runs_dir": _portable(layout.runs, cwd),
        "arch": arch, "scheme": scheme, "seeds": list(profile.seeds), "epochs": profile.epochs,
        "image_size": profile.image_size, "batch_size": profile.batch_size, "weights": profile.weights,
        "recipe": profile.recipe, "clahe": profile.clahe, "limit": profile.limit, "device": device,
        "threads": profile.threads, "recipe_changes": dict(profile.recipe_changes),
    }


def train_notebook_name(arch: str, scheme: str) -> str:
    """The executed training notebook of one model: ``OUT/notebooks/train/03_train_<arch>_<scheme>.ipynb``."""
    return f"03_train_{arch}_{scheme}"


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
    timings = strip_volatile_metadata(output)
    # Where a notebook's time goes (the rest of its wall time is kernel start-up and papermill itself).
    write_text(output.parent / "timings" / f"{output.stem}.json", json.dumps(timings, indent=1) + "\n")


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


def strip_volatile_metadata(path: Path) -> list[dict[str, Any]]:
    """Remove papermill timestamps and durations so executed notebooks diff cleanly; return the code cells'
    durations (``[{"cell": index, "source": first line, "seconds": s}]``) before they go."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    timings = [{"cell": i, "source": (cell.source.splitlines() or [""])[0][:80],
                "seconds": round(float(cell.metadata["papermill"].get("duration") or 0.0), 3)}
               for i, cell in enumerate(nb.cells)
               if cell.cell_type == "code" and "papermill" in cell.metadata]
    nb.metadata.get("papermill", {}).clear()
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    write_text(path, nbformat.writes(nb) + "\n")
    return timings


def update_committed_notebooks(layout: Layout, *, featured: tuple[str, str] | None = None) -> list[Path]:
    """Copy the executed notebooks of a sweep over ``notebooks/`` (their outputs become the nbval reference).

    ``featured``: the ``(arch, scheme)`` whose training notebook becomes ``03_train``."""
    copied = []
    for name in NOTEBOOKS:
        if name == "03_train":
            runs = sorted((layout.notebooks / "train").glob("03_train_*.ipynb"))
            chosen = [p for p in runs if featured and p.stem == train_notebook_name(*featured)] or runs[:1]
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
