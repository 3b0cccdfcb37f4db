"""The GPU check's first minute (``benchmarks/gpu_check.sh``): is everything the rest needs there and working?

    python benchmarks/gpu_preflight.py --data DIR [--device cuda] [--json FILE]

On the device: the GPU's name, memory and bf16 support, ``/dev/shm``'s free space, the packages; one
augmented batch of real crops on the device (no host sync: the guard of ``tests/no_sync.py`` is on while it is
made); one ResNet-18 training step and one evaluation step built as ``kneelib train`` builds them (a CUDA
graph captured on that batch) and replayed. Prints one line per check and, on any failure, one line
``PREFLIGHT FAILED: <what>`` and exits 3, so the call stops before it spends its minutes on measurements
that cannot succeed. On a CPU (the rehearsal) the steps run eagerly and that is not a failure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
#: ``/dev/shm`` below this (GiB) is reported: DataLoader workers pass their batches through it.
SMALL_SHM_GIB = 1.0
#: Tensor methods that read a value back to the host (each waits for the GPU).
SYNCS = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__")


class Failed(Exception):
    """A check that failed: its message is the PREFLIGHT FAILED line."""


def _no_host_sync(fn):
    """``fn()`` with every host read of a tensor's value refused (as ``tests/no_sync.py``)."""
    saved = {name: getattr(torch.Tensor, name) for name in SYNCS}

    def refuse(name):
        def method(self, *args, **kwargs):
            raise Failed(f"the augmented batch read a value back to the host (Tensor.{name})")
        return method

    try:
        for name in SYNCS:
            setattr(torch.Tensor, name, refuse(name))
        return fn()
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def preflight(data: Path, device_name: str, *, log=print) -> dict[str, Any]:
    """Run the checks; raises :class:`Failed` at the first that fails. Returns what it found."""
    sys.path.insert(0, str(REPO))
    from kneelib.data.batched import DeviceBatches
    from kneelib.data.dataset import DecodeCache, KneeDataset
    from kneelib.data.layout import discover, select_split
    from kneelib.data.schemes import get_scheme
    from kneelib.models import build_model
    from kneelib.train import runtime
    from kneelib.train.config import TrainConfig, limit_samples
    from kneelib.train.epoch import Placement, TrainHooks, run_epoch
    from kneelib.train.loop import LIMIT_SEED, make_lazy_step, place_model

    found: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    cuda = device_name.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise Failed("torch sees no CUDA device")
    device = runtime.resolve_device(device_name)
    if cuda:
        free, total = torch.cuda.mem_get_info(device)
        found.update(gpu=torch.cuda.get_device_name(device), capability=list(torch.cuda.get_device_capability(device)),
                     gpu_total_gib=round(total / 2**30, 1), gpu_free_gib=round(free / 2**30, 1),
                     bf16=torch.cuda.is_bf16_supported(including_emulation=False))
        log(f"gpu: {found['gpu']}, capability {found['capability']}, {found['gpu_free_gib']} of "
            f"{found['gpu_total_gib']} GiB free, native bf16 {found['bf16']}")
        if free < 10 * 2**30:
            raise Failed(f"only {free / 2**30:.1f} GiB of GPU memory free")
    import shutil

    try:
        shm = round(shutil.disk_usage("/dev/shm").free / 2**30, 2)
    except OSError:
        shm = None
    found["dev_shm_free_gib"] = shm
    log(f"/dev/shm: {'missing' if shm is None else f'{shm} GiB free'}"
        f"{' (small: the benchmark runs its loaders without workers)' if shm is None or shm < SMALL_SHM_GIB else ''}")

    tic = time.perf_counter()
    image_size, batch = (224, 32) if cuda else (64, 8)  # the paper's on a GPU; a CPU rehearsal's
    samples = limit_samples(select_split(discover(data), "train"), 2 * batch, seed=LIMIT_SEED)
    if len(samples) < batch:
        raise Failed(f"{data}: {len(samples)} training crops found, need {batch}")
    dataset = KneeDataset(samples, get_scheme("kl5"), image_size=image_size, train=True, clahe=False,
                          cache=DecodeCache(), seed=0)
    batches = DeviceBatches(dataset.images, dataset.targets, device, augment=True, seed=0)
    config = TrainConfig.from_recipe("scratch", arch="resnet18", weights=None, batch_size=batch,
                                     image_size=image_size)
    runtime.prepare_backends(device)
    model, optimizer, fmt = place_model(build_model("resnet18", num_classes=5), config, device, graphs=cuda)
    order = list(range(len(dataset)))

    def augmented() -> list:
        return list(batches.batches(order, batch, epoch=1, drop_last=True, memory_format=fmt))

    made = _no_host_sync(augmented)
    x, y = made[0]
    if cuda:
        torch.cuda.synchronize(device)
    if tuple(x.shape) != (batch, 3, image_size, image_size) or x.device.type != device.type:
        raise Failed(f"augmented batch {tuple(x.shape)} on {x.device}")
    if not bool(torch.isfinite(x).all()) or not x.is_contiguous(memory_format=fmt):
        raise Failed("augmented batch not finite or not in the training memory format")
    log(f"augmented batch: {tuple(x.shape)} {x.dtype} on {x.device}, no host sync, "
        f"{time.perf_counter() - tic:.1f} s with the decoding")
    if cuda:  # what a batch costs the GPU once the kernels are built
        tic = time.perf_counter()
        for _ in range(10):
            augmented()
        torch.cuda.synchronize(device)
        found["augment_ms_per_batch"] = round((time.perf_counter() - tic) * 1000 / (10 * len(made)), 3)
        log(f"augmentation: {found['augment_ms_per_batch']} ms a batch of {batch}")

    step = make_lazy_step(model, optimizer, device, config, num_classes=5, graphs=cuda)
    eval_step = make_lazy_step(model, None, device, config, num_classes=5, graphs=cuda)
    before = [p.detach().clone() for p in model.parameters()]
    tic = time.perf_counter()
    loss, _, _ = run_epoch(model, made * (3 if cuda else 1), step, Placement(device, fmt), hooks=TrainHooks())
    run_epoch(model, made, eval_step, Placement(device, fmt))
    if cuda:
        torch.cuda.synchronize(device)
    found.update(step=step.step.path, why_eager=step.step.why, eval_step=eval_step.step.path,
                 arithmetic="bf16 autocast" if runtime.autocast_dtype("auto", device) else "fp32",
                 loss=round(loss, 4),
                 step_seconds=round(time.perf_counter() - tic, 2))
    log(f"resnet18 steps: train {found['step']}, eval {found['eval_step']}, {found['arithmetic']}, loss "
        f"{loss:.3f}, {found['step_seconds']} s (capture included)")
    if cuda and (step.step.path != "cuda graph" or eval_step.step.path != "cuda graph"):
        raise Failed(f"no CUDA graph: {step.step.why or eval_step.step.why}")
    if not math.isfinite(loss):
        raise Failed(f"training loss {loss}")
    if all(torch.equal(a, b) for a, b in zip(before, model.parameters())):
        raise Failed("the replayed training step did not change the weights")
    if cuda:
        found["max_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the GPU check's preflight")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    found: dict[str, Any] = {}
    try:
        found = preflight(args.data, args.device)
        found["ok"] = True
    except Exception as exc:  # noqa: BLE001 - any failure stops the call, said in one line
        message = (str(exc).strip().splitlines() or [""])[0][:300]
        found.update(ok=False, error=message if isinstance(exc, Failed) else f"{type(exc).__name__}: {message}")
        print(f"PREFLIGHT FAILED: {found['error']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(found, indent=1) + "\n")
    if found["ok"]:
        print("preflight ok", flush=True)
    return 0 if found["ok"] else 3


if __name__ == "__main__":
    sys.exit(main())
