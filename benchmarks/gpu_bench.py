"""The GPU part of ``benchmarks/bench.py --device cuda``: kneelib's real training loop per architecture
(eager and CUDA graph), the data path (batched on the device, per-image PIL, the reference pipeline) and
the ``paper`` profile's wall time projected from them.

Every function also runs on a CPU (tiny settings), so the tests cover it; the numbers that matter come
from a GPU (``benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from torchvision import datasets

from kneelib.data.batched import DeviceBatches
from kneelib.data.dataset import DecodeCache, KneeDataset
from kneelib.data.layout import discover, select_split
from kneelib.data.schemes import get_scheme
from kneelib.models import build_model
from kneelib.pipeline.profiles import get_profile
from kneelib.train import recipes, runtime
from kneelib.train.config import TrainConfig, limit_samples
from kneelib.train.loop import LIMIT_SEED, _run_epoch
from kneelib.train.steps import make_step

#: bench.py's reference pipeline: (transform for an image size, ImageFolder tree of samples under a folder).
Reference = tuple[Callable[[int], Any], Callable[[Sequence[Any], Path], Path]]
#: The paper's split sizes (train, val): the projection's epoch.
PAPER_TRAIN, PAPER_VAL = 5778, 826


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_split(data: Path, split: str, *, image_size: int, train: bool, limit: int | None = None
               ) -> KneeDataset:
    """A split of a kneeKL224-style folder, decoded once (optionally at most ``limit`` images)."""
    samples = limit_samples(select_split(discover(data), split), limit, seed=LIMIT_SEED)
    return KneeDataset(samples, get_scheme("kl5"), image_size=image_size, train=train, clahe=False,
                       cache=DecodeCache(), seed=0)


def _cycle_batches(data: DeviceBatches, batch_size: int, steps: int, memory_format: torch.memory_format
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` training batches drawn through the device path (new epochs as needed)."""
    n = len(data)
    epochs = itertools.count(1)
    batches = itertools.chain.from_iterable(
        data.batches(torch.randperm(n, generator=torch.Generator().manual_seed(e)).tolist(), batch_size,
                     epoch=e, drop_last=True, memory_format=memory_format) for e in epochs)
    return itertools.islice(batches, steps)


def train_loop_speed(arch: str, data: DeviceBatches, held: DeviceBatches, device: torch.device, *,
                     graphs: bool, batch_size: int = 32, steps: int = 60, warmup: int = 5) -> dict[str, Any]:
    """Images/s of kneelib's training loop (``data``: the train split on the device, augmented;
    ``_run_epoch``) for ``steps`` full batches after ``warmup`` (capture included there), and of its
    evaluation pass over ``held`` (the val split on the device)."""
    config = TrainConfig.from_recipe("scratch", arch=arch, batch_size=batch_size, weights=None)
    fmt = runtime.memory_format(device, arch)
    runtime.seed_everything(0)
    model = build_model(arch, num_classes=5).to(device, memory_format=fmt)
    capturable = graphs and device.type == "cuda"
    optimizer = recipes.make_optimizer(model, config, fused=True, capturable=capturable)
    example = next(iter(data.batches(range(batch_size), batch_size)))[0]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tic = time.perf_counter()
    step = make_step(model, optimizer, device, batch_size=batch_size, example=example, num_classes=5,
                     label_smoothing=config.label_smoothing, graphs=graphs)
    eval_step = make_step(model, None, device, batch_size=batch_size, example=example, num_classes=5,
                          graphs=graphs)
    model.train()

    def run(n: int) -> float:
        _sync(device)
        start = time.perf_counter()
        _run_epoch(model, _cycle_batches(data, batch_size, n, fmt), device, optimizer=optimizer, bar=False,
                   desc="", memory_format=fmt, step=step)
        _sync(device)
        return time.perf_counter() - start

    run(warmup)
    setup = time.perf_counter() - tic
    seconds = run(steps)
    _sync(device)
    start = time.perf_counter()
    _, _, seen = _run_epoch(model, held.batches(range(len(held)), batch_size, memory_format=fmt), device,
                            optimizer=None, bar=False, desc="", memory_format=fmt, step=eval_step)
    _sync(device)
    eval_seconds = time.perf_counter() - start
    return {"images_per_s": round(steps * batch_size / seconds, 1), "path": step.path, "why_eager": step.why,
            "eval_images_per_s": round(seen / eval_seconds, 1), "eval_path": eval_step.path,
            "setup_seconds": round(setup, 2),  # model to device, capture and warm-up steps
            "peak_memory_gib": (round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                                if device.type == "cuda" else None)}


def _epoch_rate(iterate: Callable[[], int]) -> float:
    start = time.perf_counter()
    n = iterate()
    return round(n / (time.perf_counter() - start), 1)


def data_path_speed(train: KneeDataset, batched: DeviceBatches, device: torch.device, *, workers: int,
                    reference: Reference, batch_size: int = 32) -> dict[str, Any]:
    """Images/s of one training epoch's batches without a model: batched on the device, kneelib's
    per-image PIL path in DataLoader workers, and the reference code's (ImageFolder, decoding every epoch).

    ``reference``: ``(transform for an image size, function linking samples into an ImageFolder tree)``,
    bench.py's naive pipeline."""
    naive_transform, symlink_tree = reference
    order = torch.randperm(len(batched), generator=torch.Generator().manual_seed(0)).tolist()

    def device_epoch() -> int:
        n = sum(int(y.shape[0]) for _, y in batched.batches(order, batch_size, epoch=1))
        _sync(device)
        return n

    device_epoch()  # kornia's first call builds its kernels
    train.set_epoch(1)
    pil = DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=workers, pin_memory=device.type == "cuda",
                     persistent_workers=False)

    def loader_epoch(loader: DataLoader) -> int:
        n = 0
        for x, y in loader:
            x.to(device, non_blocking=True)
            n += int(y.shape[0])
        _sync(device)
        return n

    with tempfile.TemporaryDirectory(prefix="kneelib-gpu-bench-") as tmp:
        folder = datasets.ImageFolder(str(symlink_tree(train.samples, Path(tmp))),
                                      transform=naive_transform(train.image_size))
        reference = DataLoader(folder, batch_size=batch_size, shuffle=True, num_workers=workers,
                               pin_memory=device.type == "cuda")
        return {"batched": _epoch_rate(device_epoch), "pil": _epoch_rate(lambda: loader_epoch(pil)),
                "reference": _epoch_rate(lambda: loader_epoch(reference)), "workers": workers,
                "images": len(train)}


def project_paper_profile(train_loop: dict[str, dict[str, Any]], *, mode: str = "graph") -> dict[str, Any]:
    """Minutes of the ``paper`` profile (archs × 2 schemes × 3 seeds × 75 epochs, one run at a time) from
    the measured train and eval rates; each epoch trains on 5,778 crops and validates on 826."""
    profile = get_profile("paper")
    runs = len(profile.schemes) * len(profile.seeds)
    minutes, per_arch = 0.0, {}
    for arch, modes in train_loop.items():
        rates = modes.get(mode) or modes["eager"]
        epoch = PAPER_TRAIN / rates["images_per_s"] + PAPER_VAL / rates["eval_images_per_s"]
        per_arch[arch] = round(epoch * profile.epochs * runs / 60, 1)
        minutes += per_arch[arch]
    return {"minutes": round(minutes, 1), "per_arch_minutes": per_arch, "runs_at_once": 1, "mode": mode}


def gpu_benchmark(data: Path, archs: Sequence[str], device: torch.device, *, reference: Reference,
                  image_size: int = 224,
                  batch_size: int = 32, steps: int = 60, warmup: int = 5, limit: int | None = None,
                  workers: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The report ``bench.py --device cuda --json FILE`` writes."""
    train = load_split(data, "train", image_size=image_size, train=True, limit=limit)
    val = load_split(data, "val", image_size=image_size, train=False, limit=limit)
    on_device = DeviceBatches(train.images, train.targets, device, augment=True)  # once, shared by every run
    held = DeviceBatches(val.images, val.targets, device, augment=False)
    loop: dict[str, dict[str, Any]] = {}
    for arch in archs:
        loop[arch] = {}
        for mode in ("eager", "graph"):
            loop[arch][mode] = train_loop_speed(arch, on_device, held, device, graphs=mode == "graph",
                                                batch_size=batch_size, steps=steps, warmup=warmup)
            log(f"[train loop] {arch} {mode}: {loop[arch][mode]['images_per_s']} img/s "
                f"({loop[arch][mode]['path']}), eval {loop[arch][mode]['eval_images_per_s']} img/s")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    workers = workers if workers is not None else max(1, min(15, (os.cpu_count() or 2) - 1))
    data_path = data_path_speed(train, on_device, device, workers=workers, reference=reference,
                                batch_size=batch_size)
    log(f"[data path] batched {data_path['batched']}, PIL {data_path['pil']}, reference "
        f"{data_path['reference']} img/s ({workers} workers)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    projection = project_paper_profile(loop)
    return {"device": name, "image_size": image_size, "batch_size": batch_size, "steps": steps,
            "train_loop": {a: {m: v["images_per_s"] for m, v in modes.items()} for a, modes in loop.items()},
            "train_loop_detail": loop, "data_path": data_path,
            "paper_profile_minutes": projection["minutes"], "paper_profile": projection,
            "versions": runtime.versions()}


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (the README's performance table is made from it)."""
    loop = report["train_loop_detail"]
    lines = [f"{report['device']}, {report['image_size']} px, batch {report['batch_size']}, kneelib's training "
             f"loop (data on the device, batched augmentation), {report['steps']} timed steps", "",
             "| arch | eager img/s | graph img/s | speed-up | eval img/s (graph) | peak GiB |",
             "| --- | --- | --- | --- | --- | --- |"]
    for arch, modes in loop.items():
        eager, graph = modes["eager"], modes["graph"]
        peak = graph["peak_memory_gib"]
        lines.append(f"| {arch} | {eager['images_per_s']:,.0f} | {graph['images_per_s']:,.0f}"
                     f"{'' if graph['path'] == 'cuda graph' else ' (eager: ' + str(graph['why_eager']) + ')'} | "
                     f"{graph['images_per_s'] / eager['images_per_s']:.2f}x | {graph['eval_images_per_s']:,.0f} | "
                     f"{'-' if peak is None else peak} |")
    d = report["data_path"]
    lines += ["", f"Data path, {d['images']} images, no model: batched on the device {d['batched']:,.0f} img/s; "
              f"per-image PIL {d['pil']:,.0f}; reference (ImageFolder, decode every epoch) {d['reference']:,.0f} "
              f"({d['workers']} workers).", "",
              f"`paper` profile projected (one run at a time): {report['paper_profile_minutes']:,.1f} min."]
    return "\n".join(lines)
