"""Where and how a run executes: device choice, seeding, RNG state, versions and git commit."""

from __future__ import annotations

import os
import platform
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kneelib.errors import KneelibError

__all__ = ["resolve_device", "seed_everything", "rng_state", "set_rng_state", "versions",
           "git_commit", "default_workers", "derive_seed", "memory_format", "gpu_memory", "autocast_dtype",
           "prepare_backends", "gpu_footprint"]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is a KneelibError."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise KneelibError(f"device {name!r} requested but no CUDA GPU is available (use --device cpu)")
        return torch.device(name)
    raise KneelibError(f"unknown device {name!r} (choose auto, cpu or cuda)")


def prepare_backends(device: torch.device) -> None:
    """The backend settings a training run uses on ``device``: on CUDA, cuDNN picks the fastest convolution
    algorithm for each shape (the shapes repeat every step)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``Runtime.precision`` on ``device``: ``torch.bfloat16``, or None for fp32.

    ``auto`` keeps the bit-exact fp32 path where kneelib's CPU pin is in effect (the smoke profile, the
    notebook checks) and where the processor lacks bf16 instructions (emulated bf16 is slower than fp32).
    On a CPU with AVX512-BF16, bf16 autocast with channels-last took a steady training epoch of ResNet-18 and
    of DenseNet-121 (64 px, batch 32, 2 threads, data pipeline included) 1.6x less time than fp32, at the same
    held-out accuracy within 0.5 points (benchmarks/results/precision_cpu.json).

    On a GPU, ``auto`` is bf16 autocast where the GPU computes in bf16 natively (compute capability 8.0 and
    later: Ampere, Hopper), else fp32. Not fp16 there: fp16 needs a GradScaler, whose check for infinite
    gradients and skipped steps do not fit a step captured in a CUDA graph (every replay must run the same
    kernels), and the GPUs without bf16 are the older, slower ones the ``paper`` profile does not target."""
    from kneelib import cpu_pin
    from kneelib.train.config import PRECISIONS

    if precision not in PRECISIONS:
        raise KneelibError(f"unknown precision {precision!r} (choose {', '.join(PRECISIONS)})")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else None
    return torch.bfloat16 if cpu_pin.native_bf16() and not cpu_pin.in_effect() else None


#: Architectures whose fp32 CPU training step is faster in the default (contiguous) layout: the basic-block
#: ResNets; the bottleneck ResNets and the DenseNets are faster channels-last
#: (benchmarks/README.md#memory-layout-on-the-cpu).
CPU_CONTIGUOUS_ARCHS = frozenset({"resnet18", "resnet34", "se_resnet18", "se_resnet34"})


def memory_format(device: torch.device, arch: str | None = None, *, bf16: bool = False) -> torch.memory_format:
    """Channels-last on CUDA (tensor cores) and under bf16 autocast (oneDNN's bf16 kernels); on CPU in fp32
    channels-last too, except for the architectures in :data:`CPU_CONTIGUOUS_ARCHS`, where the contiguous
    layout measured faster."""
    if device.type != "cuda" and not bf16 and arch in CPU_CONTIGUOUS_ARCHS:
        return torch.contiguous_format
    return torch.channels_last


def gpu_memory(device: torch.device) -> str:
    """``"X GiB free of Y GiB"`` of a CUDA device (for out-of-memory messages)."""
    if device.type != "cuda":
        return "not a GPU"
    try:
        free, total = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return "GPU memory unknown"
    return f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB"


def gpu_footprint(device: torch.device) -> dict[str, float] | None:
    """What this process holds of a CUDA device, in GiB (None elsewhere): the caching allocator's peaks
    (``max_reserved``: what it took from the device, cached blocks included; ``max_allocated``: what tensors
    used), and ``outside_allocator``: the device's used memory (``mem_get_info``) less what the allocator holds
    now, i.e. this process's CUDA context, cuDNN/cuBLAS handles and workspaces, plus any other process's
    memory. Alone on a GPU, one run needs about ``max_reserved + outside_allocator``
    (``kneelib.pipeline.profiles.RUN_GPU_GIB``); ``device_used`` and ``total`` are the device's."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    used, reserved = total - free, torch.cuda.memory_reserved(device)
    return {k: round(v / 2**30, 3) for k, v in {
        "max_reserved": torch.cuda.max_memory_reserved(device),
        "max_allocated": torch.cuda.max_memory_allocated(device),
        "reserved_now": reserved, "outside_allocator": used - reserved,
        "per_run_estimate": torch.cuda.max_memory_reserved(device) + used - reserved,
        "device_used": used, "total": total}.items()}


def default_workers(device: torch.device) -> int:
    """DataLoader workers: none on CPU (the cores train the model), a few on a GPU machine."""
    if device.type != "cuda":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (e.g. the run seed and an epoch), stable across processes."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global RNG state as tensors and primitive containers (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def versions() -> dict[str, str | None]:
    """Versions of the packages that shape a run's numbers."""
    import cv2
    import torchvision

    from kneelib import __version__

    return {
        "kneelib": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
    }


def git_commit() -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git tree holding the kneelib sources; ``(None, None)`` outside git."""
    src = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return commit, (bool(status) if status is not None else None)
