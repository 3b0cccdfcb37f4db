"""The GPU part of ``benchmarks/bench.py --device cuda``: kneelib's real training loop per architecture
(eager and CUDA graph), the data path (batched on the device, per-image PIL, the reference pipeline) and
the ``paper`` profile's wall time projected from them.

Every function also runs on a CPU (tiny settings), so the tests cover it; the numbers that matter come
from a GPU (``benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
import time
import traceback
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
from kneelib.train import optim, runtime
from kneelib.train.config import TrainConfig, limit_samples
from kneelib.train.epoch import Placement, TrainHooks, run_epoch
from kneelib.train.loop import LIMIT_SEED, make_lazy_step, place_model
from kneelib.train.losses import make_criterion

#: bench.py's reference pipeline: (transform for an image size, ImageFolder tree of samples under a folder).
Reference = tuple[Callable[[int], Any], Callable[[Sequence[Any], Path], Path]]
#: The paper's split sizes (train, val): the projection's epoch.
PAPER_TRAIN, PAPER_VAL = 5778, 826
#: The most DataLoader workers the per-image paths get (each holds prefetched batches in /dev/shm).
MAX_WORKERS = 8
#: ``KNEELIB_BENCH_FAIL=stage[,stage...]`` makes those stages raise (``train_loop:ARCH``, ``data_path``): the
#: rehearsal's check that a failing stage leaves the others' results in the JSON.
FAIL_ENV = "KNEELIB_BENCH_FAIL"


def _forced_failure(stage: str) -> None:
    if stage in os.environ.get(FAIL_ENV, "").split(","):
        raise RuntimeError(f"forced failure of stage {stage} ({FAIL_ENV})")


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
    ``run_epoch``) for ``steps`` full batches after ``warmup`` (capture included there), and of its
    evaluation pass over ``held`` (the val split on the device).

    Set up as ``kneelib train`` sets a run up (:func:`kneelib.train.build.place_model`, ``make_lazy_step``,
    the recipe's per-step schedule, ``runtime.prepare_backends``): the same backend flags, memory format,
    optimizer, and a step captured on the first real batch."""
    _forced_failure(f"train_loop:{arch}")
    config = TrainConfig.from_recipe("scratch", arch=arch, batch_size=batch_size, weights=None)
    runtime.prepare_backends(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    tic = time.perf_counter()
    runtime.seed_everything(0)
    model, optimizer, fmt = place_model(build_model(arch, num_classes=5), config, device,
                                        graphs=graphs and device.type == "cuda")
    steps_per_epoch = len(data) // batch_size
    scheduler, per_step = optim.make_scheduler(optimizer, config, max(1, steps_per_epoch))
    step = make_lazy_step(model, optimizer, device, config, num_classes=5, graphs=graphs,
                          criterion=make_criterion(label_smoothing=config.label_smoothing))
    eval_step = make_lazy_step(model, None, device, config, num_classes=5, graphs=graphs)

    def run(n: int) -> float:
        _sync(device)
        start = time.perf_counter()
        run_epoch(model, _cycle_batches(data, batch_size, n, fmt), step, Placement(device, fmt),
                  hooks=TrainHooks(scheduler if per_step else None))
        _sync(device)
        return time.perf_counter() - start

    run(warmup)
    setup = time.perf_counter() - tic
    seconds = run(steps)
    _sync(device)
    start = time.perf_counter()
    _, _, seen = run_epoch(model, held.batches(range(len(held)), batch_size, memory_format=fmt), eval_step,
                           Placement(device, fmt))
    _sync(device)
    eval_seconds = time.perf_counter() - start
    cuda = device.type == "cuda"
    return {"images_per_s": round(steps * batch_size / seconds, 1), "path": step.step.path,
            "why_eager": step.step.why, "memory_format": str(fmt).removeprefix("torch."),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark) if cuda else None,
            "eval_images_per_s": round(seen / eval_seconds, 1), "eval_path": eval_step.step.path,
            "setup_seconds": round(setup, 2),  # model to device, capture and warm-up steps
            # The allocator's peaks (this process, this measurement); a run's whole footprint (CUDA context,
            # the eager last batch, evaluation) comes from gpu_check.sh's real runs (gpu_memory in config.json).
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None,
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / 2**30, 2) if cuda else None}


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
    _forced_failure("data_path")
    naive_transform, symlink_tree = reference
    order = torch.randperm(len(batched), generator=torch.Generator().manual_seed(0)).tolist()

    def device_epoch() -> int:
        n = sum(int(y.shape[0]) for _, y in batched.batches(order, batch_size, epoch=1))
        _sync(device)
        return n

    device_epoch()  # the first call builds the kernels
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
        rates = modes.get(mode) or modes.get("eager")
        if rates is None:
            continue
        epoch = PAPER_TRAIN / rates["images_per_s"] + PAPER_VAL / rates["eval_images_per_s"]
        per_arch[arch] = round(epoch * profile.epochs * runs / 60, 1)
        minutes += per_arch[arch]
    return {"minutes": round(minutes, 1), "per_arch_minutes": per_arch, "runs_at_once": 1, "mode": mode}


def dev_shm_gib() -> float | None:
    """Free space of ``/dev/shm`` (where DataLoader workers pass batches) in GiB; None where there is none."""
    try:
        return round(shutil.disk_usage("/dev/shm").free / 2**30, 2)
    except OSError:
        return None


def loader_workers(requested: int | None, device: torch.device, *, image_size: int, batch_size: int
                   ) -> tuple[int, str | None]:
    """``(workers, why fewer)``: ``requested`` (default: kneelib's own for the device) capped at
    :data:`MAX_WORKERS`, and 0 where ``/dev/shm`` cannot hold every worker's two prefetched batches twice over."""
    workers = min(MAX_WORKERS, requested if requested is not None else max(1, runtime.default_workers(device)))
    if workers == 0:
        return 0, None
    free = dev_shm_gib()
    need = 2 * workers * 2 * batch_size * 3 * image_size ** 2 * 4 / 2**30
    if free is None or free < need:
        return 0, f"/dev/shm {'missing' if free is None else f'has {free} GiB free'}, {workers} workers need {need:.2f}"
    why = f"capped at {MAX_WORKERS}" if requested is not None and requested > MAX_WORKERS else None
    return workers, why


def gpu_benchmark(data: Path, archs: Sequence[str], device: torch.device, *, reference: Reference,
                  image_size: int = 224, batch_size: int = 32, steps: int = 60, warmup: int = 5,
                  limit: int | None = None, workers: int | None = None, log: Callable[[str], None] = print,
                  save: Callable[[dict[str, Any]], None] | None = None, report: dict[str, Any] | None = None,
                  ) -> dict[str, Any]:
    """The report ``bench.py --device cuda --json FILE`` writes, handed to ``save`` after every stage (each
    architecture's eager and graph loop, the data path, the projection), so a later stage that fails or is
    killed loses nothing finished. A stage that raises is recorded in ``errors`` and the next one runs.
    ``report``: fields to start from (the machine, the settings)."""
    report = dict(report or {})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    report.update({"device": name, "image_size": image_size, "batch_size": batch_size, "steps": steps,
                   "versions": runtime.versions(), "dev_shm_free_gib": dev_shm_gib(), "train_loop": {},
                   "train_loop_detail": {}, "data_path": None, "paper_profile_minutes": None,
                   "paper_profile": None, "errors": {}, "finished": False})
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        report["gpu_memory_gib"] = {"total": round(total / 2**30, 2), "free_at_start": round(free / 2**30, 2)}

    def saved() -> None:
        if save is not None:
            save(report)

    def failed(stage: str, exc: BaseException) -> None:
        report["errors"][stage] = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
        log(f"[{stage}] FAILED: {report['errors'][stage]}")
        log(traceback.format_exc(limit=8))
        if device.type == "cuda":
            with contextlib.suppress(Exception):
                torch.cuda.synchronize(device)
                torch.cuda.empty_cache()
        saved()

    saved()
    try:
        train = load_split(data, "train", image_size=image_size, train=True, limit=limit)
        val = load_split(data, "val", image_size=image_size, train=False, limit=limit)
        on_device = DeviceBatches(train.images, train.targets, device, augment=True)  # once, shared by every run
        held = DeviceBatches(val.images, val.targets, device, augment=False)
    except Exception as exc:  # noqa: BLE001 - recorded; nothing else can run without the data
        failed("data", exc)
        return report
    loop: dict[str, dict[str, Any]] = report["train_loop_detail"]
    for arch in archs:
        for mode in ("eager", "graph"):
            try:
                result = train_loop_speed(arch, on_device, held, device, graphs=mode == "graph",
                                          batch_size=batch_size, steps=steps, warmup=warmup)
            except Exception as exc:  # noqa: BLE001 - recorded; the next measurement runs
                failed(f"train_loop:{arch}:{mode}", exc)
                continue
            loop.setdefault(arch, {})[mode] = result
            report["train_loop"].setdefault(arch, {})[mode] = result["images_per_s"]
            log(f"[train loop] {arch} {mode}: {result['images_per_s']} img/s ({result['path']}), eval "
                f"{result['eval_images_per_s']} img/s, peak reserved {result['peak_reserved_gib']} GiB")
            report["paper_profile"] = project_paper_profile(loop)  # of the architectures measured so far
            report["paper_profile_minutes"] = report["paper_profile"]["minutes"]
            saved()
    used, why = loader_workers(workers, device, image_size=image_size, batch_size=batch_size)
    try:
        data_path = data_path_speed(train, on_device, device, workers=used, reference=reference,
                                    batch_size=batch_size)
        data_path["workers_why"] = why
        report["data_path"] = data_path
        log(f"[data path] batched {data_path['batched']}, PIL {data_path['pil']}, reference "
            f"{data_path['reference']} img/s ({used} workers{', ' + why if why else ''})")
    except Exception as exc:  # noqa: BLE001 - recorded
        failed("data_path", exc)
    report["finished"] = True
    saved()
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (the README's performance table is made from it); stages that did not
    finish are named, with their errors."""
    loop = report["train_loop_detail"]
    lines = [f"{report['device']}, {report['image_size']} px, batch {report['batch_size']}, kneelib's training "
             f"loop (data on the device, batched augmentation), {report['steps']} timed steps", "",
             "| arch | eager img/s | graph img/s | speed-up | eval img/s (graph) | peak reserved GiB |",
             "| --- | --- | --- | --- | --- | --- |"]

    def rate(m: dict[str, Any] | None, key: str = "images_per_s") -> str:
        return "-" if m is None else f"{m[key]:,.0f}"

    for arch, modes in loop.items():
        eager, graph = modes.get("eager"), modes.get("graph")
        eager_note = "" if graph is None or graph["path"] == "cuda graph" else f" (eager: {graph['why_eager']})"
        speedup = f"{graph['images_per_s'] / eager['images_per_s']:.2f}x" if eager and graph else "-"
        peak = (graph or eager)["peak_reserved_gib"]
        lines.append(f"| {arch} | {rate(eager)} | {rate(graph)}{eager_note} | {speedup} | "
                     f"{rate(graph or eager, 'eval_images_per_s')} | {'-' if peak is None else peak} |")
    d = report.get("data_path")
    if d:
        lines += ["", f"Data path, {d['images']} images, no model: batched on the device {d['batched']:,.0f} img/s; "
                  f"per-image PIL {d['pil']:,.0f}; reference (ImageFolder, decode every epoch) "
                  f"{d['reference']:,.0f} ({d['workers']} workers)."]
    if report.get("paper_profile_minutes") is not None:
        lines += ["", f"`paper` profile projected (one run at a time, the architectures above): "
                  f"{report['paper_profile_minutes']:,.1f} min."]
    for stage, error in report.get("errors", {}).items():
        lines.append(f"FAILED {stage}: {error}")
    return "\n".join(lines)
