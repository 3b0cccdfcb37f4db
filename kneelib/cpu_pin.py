"""Pin the CPU kernels of every floating-point library to AVX2, so CPU results match across x86-64 machines.

PyTorch (ATen, oneDNN, MKL), NumPy (and its OpenBLAS) and OpenCV (and its IPP) each pick their kernels
by the processor's instruction set at run time: on an AVX-512 machine they run other code than on an
AVX2 one, the float results differ in the last bits, and a few epochs of training turn those bits into
other accuracies. :data:`PIN` caps every one of them at AVX2 (x86-64-v3), which any x86-64 processor
since 2015 (Intel Haswell, AMD Zen) runs. The variables are read when each library loads or first
dispatches, so :func:`apply` must run before NumPy, OpenCV or torch are imported in that process — or in
the environment of a process started afterwards (papermill kernels, spawned workers), which is how
``kneelib reproduce`` and the notebook checks use it. :func:`apply` overrides whatever the caller's shell
set. On other processors (ARM64, x86-64 without AVX2) nothing is pinned and :func:`describe` says so.

This module imports nothing heavy (no NumPy, no torch), so it can run first.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping

#: The environment that pins each library's kernel choice to AVX2.
PIN: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own CPU kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (PyTorch's convolutions on CPU)
    "DNNL_MAX_CPU_ISA": "AVX2",  # the same, under oneDNN's older name
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility (PyTorch's BLAS on x86)
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # NumPy's dispatch: stay on X86_V3 (AVX2)
    "OPENBLAS_CORETYPE": "Haswell",  # NumPy's OpenBLAS: the AVX2 kernels
    "OPENCV_CPU_DISABLE": "AVX512-SKX",  # OpenCV's dispatched kernels: up to AVX2
    "OPENCV_IPP": "AVX2",  # OpenCV's IPP: its AVX2 code path
}
#: Marks a process tree whose pin was applied by kneelib (not merely inherited from a user's shell).
MARKER = "KNEELIB_CPU_PIN"


def native_capability() -> str:
    """The widest SIMD level this processor offers: ``avx512``, ``avx2``, ``default`` (x86-64) or the
    machine name elsewhere (e.g. ``aarch64``). Read from ``/proc/cpuinfo``, without importing torch."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return machine or "unknown"
    flags = _cpu_flags()
    if flags is None:
        return "unknown"
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "default"


def _cpuinfo(field: str) -> str | None:
    """The first value of ``field`` in ``/proc/cpuinfo`` (None where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.split(":", 1)[0].strip() == field:
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def processor_name() -> str:
    """The processor's model name (``unknown`` where it cannot be read)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


def processor_vendor() -> str:
    """``GenuineIntel``, ``AuthenticAMD``, … (``unknown`` where it cannot be read). Under the pin one vendor's
    processors give the same floats, but an Intel and an AMD processor do not (measured on the smoke sweep), so a
    run records its vendor and an exact comparison needs the same one."""
    return _cpuinfo("vendor_id") or "unknown"


def _cpu_flags() -> set[str] | None:
    """The processor's feature flags from ``/proc/cpuinfo`` (None where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return set()


def native_bf16() -> bool:
    """True where the processor computes bf16 natively (AVX512-BF16 or AMX-BF16): bf16 autocast is then
    about twice as fast as fp32 on a CPU; elsewhere it is emulated and slower."""
    return bool({"avx512_bf16", "amx_bf16"} & (_cpu_flags() or set()))


def in_effect() -> bool:
    """True when this process's kernels are capped at AVX2 (kneelib's pin, or oneDNN's cap set by hand)."""
    return os.environ.get(MARKER) == "avx2" or os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2"


def supported() -> bool:
    """True where the pin applies: an x86-64 processor with AVX2 and FMA."""
    return native_capability() in ("avx2", "avx512")


def apply(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set :data:`PIN` in ``environ`` (default ``os.environ``), overriding what was there.

    Returns False (and sets nothing) where the pin does not apply (see :func:`supported`)."""
    env = os.environ if environ is None else environ
    if not supported():
        env.pop(MARKER, None)
        return False
    env.update(PIN)
    env[MARKER] = "avx2"
    return True


def describe() -> dict[str, object]:
    """What a run records in its ``config.json``: the processor's own capability, whether kneelib's pin is
    in effect in this process, the pinned variables as they stand, and what PyTorch actually dispatches to
    (if torch is already imported)."""
    import sys

    torch = sys.modules.get("torch")
    in_effect = None
    if torch is not None:
        try:
            in_effect = str(torch.backends.cpu.get_cpu_capability())
        except Exception:  # pragma: no cover - very old torch
            in_effect = None
    pinned = os.environ.get(MARKER) == "avx2" and all(os.environ.get(k) == v for k, v in PIN.items())
    return {
        "processor": processor_name(),
        "vendor": processor_vendor(),
        "native": native_capability(),
        "native_bf16": native_bf16(),
        "pinned": pinned,
        "torch_capability": in_effect,
        "environment": {k: os.environ.get(k) for k in PIN},
    }
