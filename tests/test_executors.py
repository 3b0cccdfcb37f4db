"""kneelib.pipeline.executors: the sweep on a real local Ray instance (no mocks) gives the local executor's
numbers; a Ray task whose worker is killed mid-run is retried, resumes and ends with the same history; bad
input (no Ray, unknown executor, unreachable head, missing GPUs, --out not shared) is one error line."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from kneelib import cpu_pin
from kneelib.cli import main
from kneelib.errors import KneelibError
from kneelib.pipeline import RayExecutor, get_profile, reproduce
from kneelib.pipeline import executors, profiles
from kneelib.pipeline.notebooks import train_parameters
from kneelib.pipeline.profiles import Layout

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed: pip install -e '.[ray]'")
#: The tiny grid: 2 architectures × 1 scheme × 2 seeds at smoke size, a few seconds per run.
TINY = dict(archs=["resnet18", "se_resnet18"], schemes=["kl4"], seeds=[21, 42], epochs=2,
            synth_per_grade=8, synth_bilateral=0)
TRAIN_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc"]  # all but `seconds`


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("kneelib: error: ")
    return err[0]


def test_bad_executor_and_missing_ray_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = str(tmp_path / "o")
    assert main(["reproduce", "--executor", "dask", "--out", out]) == 2
    assert "unknown executor 'dask'" in one_error_line(capsys)
    assert main(["reproduce", "--ray-address", "10.0.0.1:6379", "--out", out]) == 2
    assert "--ray-address needs --executor ray" in one_error_line(capsys)
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # `import ray` fails as if not installed
    assert main(["reproduce", "--executor", "ray", "--out", out]) == 2
    assert "pip install -e '.[ray]'" in one_error_line(capsys)
    assert not (tmp_path / "o").exists()  # nothing ran


@needs_ray
def test_an_unreachable_head_is_one_line_within_seconds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    assert main(["reproduce", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}",
                 "--out", str(tmp_path / "o")]) == 2
    assert f"--ray-address 127.0.0.1:{port}: no Ray head answers there" in one_error_line(capsys)
    assert time.time() - t0 < 5
    assert main(["reproduce", "--executor", "ray", "--ray-address", "nonsense", "--out", str(tmp_path)]) == 2
    assert "expected HOST:PORT" in one_error_line(capsys)


@needs_ray
@pytest.mark.slow
def test_missing_gpus_and_unshared_out_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked on a real local instance before any notebook runs."""
    smoke = profiles.PROFILES["smoke"]
    monkeypatch.setitem(profiles.PROFILES, "smoke", dataclasses.replace(smoke, ray_num_gpus=64))
    assert main(["reproduce", "--executor", "ray", "--out", str(tmp_path / "a")]) == 2
    assert "each run asks for 64 (the profile's ray_num_gpus)" in one_error_line(capsys)
    monkeypatch.setitem(profiles.PROFILES, "smoke", smoke)
    # A node that mounts another folder at --out: its probe task looks elsewhere and misses the marker.
    monkeypatch.setattr(executors, "_probe_path", lambda marker: str(tmp_path / "elsewhere" / marker.name))
    assert main(["reproduce", "--executor", "ray", "--out", str(tmp_path / "b")]) == 2
    line = one_error_line(capsys)
    assert f"--out {tmp_path / 'b'} is not shared storage" in line and socket.gethostname() in line
    assert not (tmp_path / "b").exists()  # no data, no notebook, no marker, nor the folder this call made
    assert not (tmp_path / "a").exists()


def test_a_training_task_leaves_the_working_directory_where_it_was(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker runs several tasks: the evaluation's change of directory must not move the next task's
    (relative) output, which once landed under notebooks/ instead of --out."""
    from kneelib.evaluate import sweep_groups

    seen = []
    monkeypatch.setattr(executors, "timed_notebook", lambda *args, **kwargs: seen.append(os.getcwd()) or 0.0)
    monkeypatch.setattr(sweep_groups, "evaluate_group", lambda *args, **kwargs: seen.append(os.getcwd()))
    monkeypatch.chdir(tmp_path)
    parameters = {"threads": 0, "runs_dir": "../runs/x/runs", "data_dir": "d", "arch": "resnet18", "scheme": "kl4",
                  "seeds": [21], "device": "cpu"}
    executors.train_model(Path("out.ipynb"), parameters, 0, "test")
    assert seen == [str(tmp_path), str(executors.NOTEBOOK_DIR)] and os.getcwd() == str(tmp_path)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Layout, list[str]]:
    """The tiny grid through the local executor (the reference)."""
    lines: list[str] = []
    layout = reproduce(get_profile("smoke", **TINY), out=tmp_path_factory.mktemp("local") / "out",
                       log=lines.append)
    return layout, lines


def progress(lines: list[str]) -> list[str]:
    """The sweep's progress lines without their times and counters, sorted (runs finish in any order)."""
    return sorted(f"[{line.split('/', 1)[1].split(': done in')[0]}" for line in lines if line.startswith("["))


def histories(layout: Layout) -> dict[str, pd.DataFrame]:
    return {run.name: pd.read_csv(run / "history.csv")[TRAIN_COLUMNS] for run in sorted(layout.runs.iterdir())}


@needs_ray
@pytest.mark.slow
def test_ray_sweep_matches_the_local_sweep(local_sweep: tuple[Layout, list[str]], tmp_path: Path) -> None:
    local, local_lines = local_sweep
    lines: list[str] = []
    shutil.copytree(local.data, tmp_path / "out" / "data")  # the same synthetic data, not made twice
    layout = reproduce(get_profile("smoke", **TINY), out=tmp_path / "out", log=lines.append, executor="ray")
    assert progress(lines) == progress(local_lines)
    assert progress(lines)[:3] == ["[7] 01_data", "[7] 02_se_blocks", "[7] 03_train_resnet18_kl4"]
    assert lines[0].startswith("ray: a local instance, 1 node(s)")
    assert pd.read_csv(layout.tables / "table5.csv").equals(pd.read_csv(local.tables / "table5.csv"))
    mine, theirs = histories(layout), histories(local)
    assert sorted(mine) == ["resnet18_kl4_s21", "resnet18_kl4_s42", "se_resnet18_kl4_s21", "se_resnet18_kl4_s42"]
    for run in theirs:
        pd.testing.assert_frame_equal(mine[run], theirs[run], check_exact=True)
    config = json.loads((layout.runs / "resnet18_kl4_s21" / "config.json").read_text())
    assert config["cpu_kernels"]["pinned"] is (cpu_pin.supported())  # the pin reached the Ray tasks' kernels


def ray_task_process(name: str) -> "psutil.Process | None":  # noqa: F821
    """The Ray worker process executing the task ``name`` (Ray titles it ``ray::<name>``)."""
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        if f"ray::{name}" in " ".join(proc.info["cmdline"] or []):
            return proc
    return None


@needs_ray
@pytest.mark.slow
def test_a_killed_ray_task_is_retried_and_resumes(local_sweep: tuple[Layout, list[str]], tmp_path: Path) -> None:
    """SIGKILL the worker of a training task after a run's first epoch: Ray runs the task again on a new
    worker, which resumes the unfinished run from last.pt (not from scratch) and ends with the uninterrupted
    run's history; the finished runs are not retrained."""
    import psutil

    local, _ = local_sweep
    profile = get_profile("smoke", **{**TINY, "archs": ["resnet18"]})
    layout = Layout(tmp_path / "out")
    layout.out.mkdir()
    params = train_parameters(profile, layout, local.data, "resnet18", "kl4", device="auto")
    output = layout.notebooks / "train" / "03_train_resnet18_kl4.ipynb"
    killed: dict[str, object] = {}

    def kill_mid_run() -> None:
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            for seed in profile.seeds:
                try:
                    status = json.loads((layout.runs / f"resnet18_kl4_s{seed}" / "status.json").read_text())
                except (OSError, ValueError):
                    continue
                worker = ray_task_process(output.stem)
                if status["epoch"] >= 1 and not status["finished"] and worker is not None:
                    kernels = [p for p in worker.children(recursive=True) if "ipykernel" in " ".join(p.cmdline())]
                    # Everything on the "lost node" dies at once: the worker and the notebook kernel it
                    # started. (A kernel left alone exits about a second after its parent, and on a loaded
                    # machine may finish the run's last epoch first; the retry then rightly finds it done.)
                    for process in (worker, *kernels):
                        os.kill(process.pid, signal.SIGKILL)
                    killed.update(pid=worker.pid, seed=seed, epoch=status["epoch"], kernels=kernels)
                    break
            time.sleep(0.02)

    env: dict[str, str] = {}
    cpu_pin.apply(env)
    with RayExecutor(None, 1, 0, out=layout.out, local_cpus=1, env=env) as ray_executor:
        killer = threading.Thread(target=kill_mid_run, daemon=True)
        killer.start()
        done = list(ray_executor.run([(output, params)], timeout=300, split=profile.split))
        killer.join()
        # A notebook that fails in a Ray task stops the sweep with its own one-line error, not retried.
        broken = {**params, "arch": "resnet7"}
        with pytest.raises(KneelibError, match=r"^notebook 03_train failed in cell \d+ \(KneelibError: .*resnet7"):
            list(ray_executor.run([(layout.notebooks / "broken.ipynb", broken)], timeout=300, split=profile.split))
    assert killed, "the run finished before it could be killed"
    assert [path for path, _ in done] == [output]
    assert not any(k.is_running() and k.status() != psutil.STATUS_ZOMBIE for k in killed["kernels"])
    executed = output.read_text()  # the retry's notebook: the killed run resumed after its last epoch
    resumed = layout.runs / f"resnet18_kl4_s{killed['seed']}"
    assert f"resuming {resumed} after epoch" in executed
    if killed["seed"] == 42:
        assert "resnet18_kl4_s21: run already finished" in executed
    for seed in profile.seeds:
        run = f"resnet18_kl4_s{seed}"
        assert json.loads((layout.runs / run / "status.json").read_text())["finished"]
        mine = pd.read_csv(layout.runs / run / "history.csv")[TRAIN_COLUMNS]
        pd.testing.assert_frame_equal(mine, histories(local)[run], check_exact=True)
    assert (layout.eval / "resnet18_kl4" / "metrics.json").is_file()
