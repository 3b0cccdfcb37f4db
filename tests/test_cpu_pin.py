"""kneelib.cpu_pin: the AVX2 kernel pin overrides the caller's setting and reaches the training processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kneelib import cpu_pin

pinnable = pytest.mark.skipif(not cpu_pin.supported(), reason="the AVX2 pin needs an x86-64 processor with AVX2")


@pinnable
def test_apply_overrides_the_callers_environment() -> None:
    env = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "PATH": "/bin"}
    assert cpu_pin.apply(env) is True
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert all(env[k] == v for k, v in cpu_pin.PIN.items()) and env[cpu_pin.MARKER] == "avx2"
    assert env["PATH"] == "/bin"


def test_nothing_is_pinned_where_the_pin_cannot_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_pin, "native_capability", lambda: "aarch64")
    env = {"ATEN_CPU_CAPABILITY": "default", cpu_pin.MARKER: "avx2"}
    assert cpu_pin.apply(env) is False
    assert env == {"ATEN_CPU_CAPABILITY": "default"}


@pinnable
def test_a_child_process_dispatches_to_avx2_whatever_the_shell_said() -> None:
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", NPY_DISABLE_CPU_FEATURES="")
    cpu_pin.apply(env)
    code = ("import json, torch, numpy as np; from kneelib import cpu_pin; "
            "print(json.dumps({'torch': str(torch.backends.cpu.get_cpu_capability()), "
            "'numpy': [k for k, v in np._core._multiarray_umath.__cpu_features__.items() if v and k == 'X86_V4'], "
            "'pinned': cpu_pin.describe()['pinned']}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch"] == "AVX2" and got["pinned"] is True


@pinnable
@pytest.mark.slow
def test_the_pin_reaches_the_training_notebooks_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``kneelib reproduce`` (smoke) trains in papermill kernels under spawned workers: the run's config.json
    records the pin and AVX2 dispatch even though the caller asked for another capability."""
    from kneelib.pipeline import get_profile
    from kneelib.pipeline.notebooks import train_parameters
    from kneelib.pipeline.profiles import Layout
    from kneelib.pipeline.executors import train_model
    from kneelib.pipeline.reproduce import _prepare_data
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    for key in cpu_pin.PIN:
        monkeypatch.setenv(key, "default" if key == "ATEN_CPU_CAPABILITY" else "")
    monkeypatch.delenv(cpu_pin.MARKER, raising=False)
    profile = get_profile("smoke", archs=["resnet18"], schemes=["kl4"], seeds=[21], epochs=1,
                          synth_per_grade=6, synth_bilateral=0)
    layout = Layout(tmp_path / "out")
    cpu_pin.apply()  # what reproduce does first for a pinned profile (monkeypatch restores the environment)
    data = _prepare_data(profile, layout, None, log=lambda _: None)
    params = train_parameters(profile, layout, data, "resnet18", "kl4", device="cpu")
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        pool.submit(train_model, layout.notebooks / "train" / "t.ipynb", params, 300, "val").result()
    config = json.loads((layout.runs / "resnet18_kl4_s21" / "config.json").read_text())
    assert config["cpu_kernels"]["pinned"] is True
    assert config["cpu_kernels"]["torch_capability"] == "AVX2"
    assert config["cpu_kernels"]["environment"]["ATEN_CPU_CAPABILITY"] == "avx2"
    assert (layout.eval / "resnet18_kl4" / "metrics.json").is_file()  # the worker evaluated the group
