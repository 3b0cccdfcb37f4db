"""The papermill sweep: profiles, parameters contract with the notebooks, resume/skip logic."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from kneelib.cli import main
from kneelib.errors import KneelibError
from kneelib.pipeline import NOTEBOOK_DIR, NOTEBOOKS, Layout, get_profile, parameters_cell_names, run_finished
from kneelib.pipeline.notebooks import notebook_parameters, strip_volatile_metadata, train_parameters


def test_every_notebook_declares_exactly_the_parameters_reproduce_passes(tmp_path: Path) -> None:
    profile = get_profile("smoke")
    layout = Layout(tmp_path / "out")
    passed = notebook_parameters(profile, layout, tmp_path / "data", device="cpu", real_data_dir=None)
    passed["03_train"] = train_parameters(profile, layout, tmp_path / "data", "resnet18", "kl5", device="cpu")
    assert passed["03_train"]["seeds"] == [21, 42, 84]  # one notebook per model trains every seed
    assert set(passed) == set(NOTEBOOKS)
    for name in NOTEBOOKS:
        declared = parameters_cell_names(NOTEBOOK_DIR / f"{name}.ipynb")
        assert sorted(declared) == sorted(passed[name]), name


def test_parameters_cells_hold_the_paper_defaults() -> None:
    """The notebooks' own defaults are the paper's full-size recipe (papermill injects the smoke ones)."""
    nb = nbformat.read(NOTEBOOK_DIR / "03_train.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    ns: dict = {}
    exec(cell.source, ns)  # noqa: S102 - our own notebook's parameter assignments
    assert (ns["epochs"], ns["image_size"], ns["batch_size"], ns["weights"]) == (75, 224, 32, "imagenet")


def test_profiles_and_overrides() -> None:
    smoke = get_profile("smoke")
    assert len(smoke.archs) * len(smoke.schemes) * len(smoke.seeds) == 48
    paper = get_profile("paper")
    assert (paper.epochs, paper.image_size, paper.batch_size, paper.weights) == (75, 224, 32, "imagenet")
    assert get_profile("smoke", archs=["resnet18"], seeds=None).archs == ("resnet18",)
    with pytest.raises(KneelibError, match="unknown profile"):
        get_profile("huge")


def test_jobs_are_sized_from_free_gpu_memory_and_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from kneelib.pipeline.profiles import RUN_GPU_GIB, resolve_jobs

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    paper = get_profile("paper")
    assert paper.jobs == 0 and get_profile("smoke").jobs == 0
    assert resolve_jobs(get_profile("smoke", jobs=3), "cuda", free_gpu_bytes=10**12) == 3  # a set value wins
    # single-threaded CPU runs (smoke): one more than the cores, at most one per model
    assert resolve_jobs(get_profile("smoke"), "cpu") == 16
    assert resolve_jobs(get_profile("smoke", archs=["resnet18"]), "cpu") == 2
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert resolve_jobs(get_profile("smoke"), "cpu") == 3  # the 2-core machine: as before
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert resolve_jobs(paper, "cpu", free_gpu_bytes=0) == 1  # no GPU: one run at a time
    gib = 2**30
    assert resolve_jobs(paper, "cuda", free_gpu_bytes=int(3.5 * RUN_GPU_GIB * gib)) == 3  # memory-bound
    assert resolve_jobs(paper, "cuda", free_gpu_bytes=int(0.5 * RUN_GPU_GIB * gib)) == 1  # at least one
    assert resolve_jobs(paper, "cuda", free_gpu_bytes=140 * gib) == 8  # 16 cores: 8 processes
    assert resolve_jobs(get_profile("paper", archs=["resnet18"], schemes=["kl5"]), "cuda",
                        free_gpu_bytes=140 * gib) == 1  # never more than the models


def test_run_finished_reads_status(tmp_path: Path) -> None:
    assert not run_finished(tmp_path)
    (tmp_path / "status.json").write_text(json.dumps({"finished": False, "epoch": 1}))
    assert not run_finished(tmp_path)
    (tmp_path / "status.json").write_text(json.dumps({"finished": True, "epoch": 3}))
    assert run_finished(tmp_path)


def test_strip_volatile_metadata(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"start_time": "2026-01-01", "duration": 3.2}
    cell = nbformat.v4.new_code_cell("1 + 1")
    cell.metadata["papermill"] = {"duration": 0.1}
    cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01"}
    nb.cells.append(cell)
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    strip_volatile_metadata(path)
    text = path.read_text()
    assert "2026-01-01" not in text and "duration" not in text


def test_reproduce_paper_profile_needs_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["reproduce", "--profile", "paper", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs real data" in err[0]
    assert main(["reproduce", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "data directory not found" in capsys.readouterr().err


def test_training_notebooks_can_run_in_worker_processes() -> None:
    """The sweep runs 03_train in spawned processes: the task and its error must cross the boundary."""
    import pickle

    from kneelib.pipeline import timed_notebook
    from kneelib.pipeline.executors import train_model

    assert pickle.loads(pickle.dumps(timed_notebook)) is timed_notebook
    assert pickle.loads(pickle.dumps(train_model)) is train_model
    err = pickle.loads(pickle.dumps(KneelibError("notebook 03_train failed in cell 4")))
    assert isinstance(err, KneelibError) and str(err) == "notebook 03_train failed in cell 4"


@pytest.mark.slow
def test_a_hung_cell_stops_the_notebook_with_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a cell timeout, a cell that never returns fails the sweep (naming the notebook), not hangs it."""
    import nbformat

    from kneelib.pipeline import notebooks

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import time\ntime.sleep(60)")]
    nbformat.write(nb, tmp_path / "hang.ipynb")
    monkeypatch.setattr(notebooks, "NOTEBOOK_DIR", tmp_path)
    with pytest.raises(KneelibError, match="notebook hang: a cell ran longer than 3 s"):
        notebooks.execute_notebook("hang", tmp_path / "out" / "hang.ipynb", {"x": 2}, timeout=3)
    assert (tmp_path / "out" / "hang.ipynb").is_file()  # the partial notebook is kept


def test_committed_notebooks_name_no_folder_of_the_machine_that_ran_them() -> None:
    """Injected parameters are relative to the repository (or empty): e.g. no /home/... or /work/... paths."""
    import ast

    import nbformat

    from kneelib.pipeline.notebooks import NOTEBOOK_DIR

    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if "injected-parameters" in cell.metadata.get("tags", []):
                for node in ast.parse(cell.source).body:
                    value = ast.literal_eval(node.value)
                    if isinstance(value, str):
                        assert not Path(value).is_absolute(), f"{path.name}: {ast.unparse(node)}"


def test_parameters_outside_the_repository_stay_relative_when_beside_it(tmp_path: Path) -> None:
    from kneelib.pipeline.notebooks import NOTEBOOK_DIR, REPO_ROOT, _portable

    assert _portable(REPO_ROOT.parent / "shared" / "data", NOTEBOOK_DIR) == "../../shared/data"
    assert _portable(REPO_ROOT / "runs" / "smoke", NOTEBOOK_DIR) == "../runs/smoke"
    if REPO_ROOT.parent != Path("/"):  # a folder elsewhere on the machine stays absolute
        assert _portable(Path("/kneelib-nowhere"), NOTEBOOK_DIR) == "/kneelib-nowhere"
