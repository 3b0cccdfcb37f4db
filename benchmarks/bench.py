"""Benchmark kneelib on this machine: model steps against torchvision, and one training epoch of
kneelib's pipeline against a naive (paper-style) one. See ``benchmarks/README.md``.

    .venv/bin/python benchmarks/bench.py            # full run (several minutes on 2 CPU cores)
    .venv/bin/python benchmarks/bench.py --quick    # seconds: 64 px, 2 archs, 32 images
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from kneelib.atomic import write_text
from kneelib.data.dataset import DecodeCache, KneeDataset
from kneelib.data.layout import Sample, discover, select_split
from kneelib.data.schemes import get_scheme
from kneelib.errors import KneelibError
from kneelib.models import build_model, list_models
from kneelib.train import runtime
from kneelib.train.config import TrainConfig, limit_samples
from kneelib.train.epoch import Placement, TrainHooks, _loader, run_epoch
from kneelib.train.loop import LIMIT_SEED
from kneelib.train.steps import EagerStep

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "kneeKL224"
CPU = torch.device("cpu")
#: The plain torchvision model each kneelib architecture is compared with (SE models: their base).
TORCHVISION_BASE = {name: name.removeprefix("se_") for name in list_models()}
QUICK = dict(image_size=64, batch_size=4, iters=1, warmup=1, threads=1, epoch_images=32,
             epoch_batch_size=8, archs=["resnet18", "se_resnet18"])
MODEL_TARGET = 0.95  # non-SE models: kneelib images/s at least 95% of torchvision's
EPOCH_TARGET = 1.5  # kneelib's steady epoch at least 1.5x the naive pipeline's images/s


def log(line: str) -> None:
    """A progress line on stderr."""
    print(line, file=sys.stderr, flush=True)


def _timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` takes."""
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


# --- models ---------------------------------------------------------------------------------------

def _stepper(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
             train: bool, fmt: torch.memory_format) -> Callable[[], Any]:
    """One kneelib train step (forward, cross-entropy, backward, Adam) or inference batch."""
    config = TrainConfig(arch="resnet18")
    optimizer = (torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
                 if train else None)
    batch = [(images, targets)]
    step = EagerStep(model, optimizer, CPU)
    return lambda: run_epoch(model, batch, step, Placement(CPU, fmt), hooks=TrainHooks() if train else None)


def bench_arch(arch: str, *, image_size: int, batch_size: int, iters: int,
               warmup: int) -> dict[str, Any]:
    """Median images/s of kneelib's ``arch`` and its torchvision base, train step and inference."""
    base = TORCHVISION_BASE[arch]
    fmt = runtime.memory_format(CPU, arch)  # what kneelib.train.loop uses; mirrored for torchvision
    runtime.seed_everything(0)
    models = {"kneelib": build_model(arch, num_classes=5).to(CPU, memory_format=fmt),
              "torchvision": getattr(torchvision.models, base)(num_classes=5).to(CPU, memory_format=fmt)}
    images = torch.randn(batch_size, 3, image_size, image_size).contiguous(memory_format=fmt)
    targets = torch.randint(0, 5, (batch_size,))
    out: dict[str, Any] = {"arch": arch, "torchvision_base": base, "se": arch != base,
                           "params": {k: sum(p.numel() for p in m.parameters())
                                      for k, m in models.items()}}
    for mode in ("train", "inference"):
        steps = {k: _stepper(m, images, targets, mode == "train", fmt) for k, m in models.items()}
        for step in steps.values():
            for _ in range(warmup):
                step()
        times: dict[str, list[float]] = {k: [] for k in steps}
        for i in range(iters):  # interleaved, order alternating (A B, B A, ...): noise hits both
            for side in (("kneelib", "torchvision") if i % 2 == 0 else ("torchvision", "kneelib")):
                times[side].append(_timed(steps[side]))
        ips = {k: batch_size / statistics.median(v) for k, v in times.items()}
        out[mode] = {**{f"{k}_images_per_s": round(v, 2) for k, v in ips.items()},
                     "ratio": round(ips["kneelib"] / ips["torchvision"], 3),
                     "seconds": {k: [round(t, 4) for t in v] for k, v in times.items()}}
    return out


# --- epoch ----------------------------------------------------------------------------------------

def naive_transform(image_size: int) -> transforms.Compose:
    """The paper's code style: PIL augmentation, resize, 3-channel gray, normalise (every epoch)."""
    return transforms.Compose([
        transforms.RandomHorizontalFlip(),
        transforms.RandomAffine(10, scale=(0.9, 1.1)),
        transforms.ColorJitter(0.33, 0.33, 0.33),
        transforms.Resize(image_size),
        transforms.Grayscale(3),
        transforms.ToTensor(),
        transforms.Normalize((0.5,) * 3, (0.5,) * 3),
    ])


def _symlink_tree(samples: Sequence[Sample], root: Path) -> Path:
    """``root/<grade>/<i>_<name>`` symlinks to the samples (an ImageFolder of exactly these files)."""
    for i, s in enumerate(samples):
        folder = root / str(s.grade)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}_{Path(s.path).name}").symlink_to(Path(s.path).resolve())
    return root


def _drain(loader: DataLoader) -> int:
    """Iterate a loader without a model; returns the images seen."""
    return sum(len(targets) for _, targets in loader)


def bench_epoch(data: Path, *, n_images: int, image_size: int, batch_size: int,
                naive_channels_last: bool = False) -> dict[str, Any]:
    """One resnet18 training epoch: naive ImageFolder+PIL pipeline vs kneelib's, on the same images.

    The naive side trains channels-first like the paper's code unless ``naive_channels_last``.
    """
    samples = limit_samples(select_split(discover(data), "train"), n_images, seed=LIMIT_SEED)
    for s in samples:  # warm the OS page cache so neither side pays the first disk read
        Path(s.path).read_bytes()
    config = TrainConfig(arch="resnet18", image_size=image_size, batch_size=batch_size)
    fmt = {"naive": torch.channels_last if naive_channels_last else torch.contiguous_format,
           "kneelib": runtime.memory_format(CPU, config.arch)}
    models, optimizers = {}, {}
    for side in ("naive", "kneelib"):
        runtime.seed_everything(config.seed)
        models[side] = build_model(config.arch, num_classes=5).to(CPU, memory_format=fmt[side])
        optimizers[side] = torch.optim.Adam(models[side].parameters(), lr=config.lr,
                                            weight_decay=config.weight_decay)

    def epoch(side: str, loader: DataLoader, n: int) -> float:
        tic = time.perf_counter()
        seen = run_epoch(models[side], loader, EagerStep(models[side], optimizers[side], CPU),
                         Placement(CPU, fmt[side]), hooks=TrainHooks())[2]
        elapsed = time.perf_counter() - tic
        log(f"[epoch] {side} epoch {n}: {seen} images in {elapsed:.1f} s ({seen / elapsed:.1f} img/s)")
        return elapsed

    with tempfile.TemporaryDirectory(prefix="kneelib-bench-") as tmp:
        folder = datasets.ImageFolder(str(_symlink_tree(samples, Path(tmp))),
                                      transform=naive_transform(image_size))
        naive = DataLoader(folder, batch_size=batch_size, shuffle=True, num_workers=0,
                           generator=torch.Generator().manual_seed(config.seed))
        n = len(folder)
        t_naive1 = epoch("naive", naive, 1)
        tic = time.perf_counter()
        dataset = KneeDataset(samples, get_scheme(config.scheme), image_size=image_size, train=True,
                              clahe=config.clahe, cache=DecodeCache(), seed=config.seed)
        t_decode = time.perf_counter() - tic
        log(f"[epoch] kneelib decode of {n} images: {t_decode:.2f} s")
        loader1 = _loader(dataset, config, epoch=1, workers=0, cuda=False)
        t_kneelib1 = t_decode + epoch("kneelib", loader1, 1)
        t_naive2 = epoch("naive", naive, 2)
        t_kneelib2 = epoch("kneelib", _loader(dataset, config, epoch=2, workers=0, cuda=False), 2)
        d_naive = _timed(lambda: _drain(naive))
        d_kneelib = _timed(lambda: _drain(_loader(dataset, config, epoch=3, workers=0, cuda=False)))

    def ips(seconds: float) -> float:
        return round(n / seconds, 2)

    result = {
        "images": n, "image_size": image_size, "batch_size": batch_size, "arch": config.arch,
        "memory_format": {k: str(v).removeprefix("torch.") for k, v in fmt.items()},
        "naive": {"first_epoch_images_per_s": ips(t_naive1), "steady_epoch_images_per_s": ips(t_naive2),
                  "data_only_seconds": round(d_naive, 3), "data_only_images_per_s": ips(d_naive)},
        "kneelib": {"decode_seconds": round(t_decode, 3),
                    "first_epoch_incl_decode_images_per_s": ips(t_kneelib1),
                    "steady_epoch_images_per_s": ips(t_kneelib2),
                    "data_only_seconds": round(d_kneelib, 3), "data_only_images_per_s": ips(d_kneelib)},
    }
    result["steady_speedup"] = round(t_naive2 / t_kneelib2, 3)
    result["first_epoch_speedup"] = round(t_naive1 / t_kneelib1, 3)
    result["data_only_speedup"] = round(d_naive / d_kneelib, 3)
    return result


# --- report ---------------------------------------------------------------------------------------

def targets(models: list[dict[str, Any]], epoch: dict[str, Any] | None) -> dict[str, Any]:
    """Targets met (True/False; None when that part was not run)."""
    plain = {m["arch"]: m["train"]["ratio"] >= MODEL_TARGET and m["inference"]["ratio"] >= MODEL_TARGET
             for m in models if not m["se"]}
    return {"model_within_5pct_of_torchvision": plain,
            "models_met": all(plain.values()) if plain else None,
            "epoch_speedup_at_least_1_5x": (epoch["steady_speedup"] >= EPOCH_TARGET) if epoch else None}


def markdown(report: dict[str, Any]) -> str:
    """The results as markdown tables."""
    s = report["settings"]
    lines = [f"kneelib benchmark — {report['machine']['cpu_count']} CPUs, {s['threads']} torch threads, "
             f"torch {report['machine']['versions']['torch']}, {s['image_size']} px, "
             f"batch {s['batch_size']}, "
             f"median of {s['iters']} interleaved reps, "
             "the memory format kneelib.train uses for each architecture on both sides", ""]
    if report["models"]:
        lines += ["| arch | vs torchvision | train img/s kneelib | torchvision | ratio "
                  "| infer img/s kneelib | torchvision | ratio | target (≥0.95) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        met = report["targets"]["model_within_5pct_of_torchvision"]
        for m in report["models"]:
            tr, inf = m["train"], m["inference"]
            target = "n/a (SE adds work by design)" if m["se"] else ("yes" if met[m["arch"]] else "NO")
            lines.append(f"| {m['arch']} | {m['torchvision_base']} | {tr['kneelib_images_per_s']:.1f} | "
                         f"{tr['torchvision_images_per_s']:.1f} | {tr['ratio']:.3f} | "
                         f"{inf['kneelib_images_per_s']:.1f} | {inf['torchvision_images_per_s']:.1f} | "
                         f"{inf['ratio']:.3f} | {target} |")
        lines += ["", "ratio = kneelib / torchvision images/s. SE models are compared with their plain "
                  "torchvision base: the SE blocks add work by design, so their ratio is expected below 1.", ""]
    e = report["epoch"]
    if e:
        nv, kl = e["naive"], e["kneelib"]
        lines += [f"Epoch: {e['arch']}, {e['images']} train images, {e['image_size']} px, batch "
                  f"{e['batch_size']} (naive: {e['memory_format']['naive']}, kneelib: "
                  f"{e['memory_format']['kneelib']})", "",
                  "| images/s | naive (ImageFolder + PIL) | kneelib | speed-up |", "|---|---|---|---|",
                  f"| first epoch (kneelib incl. decode {kl['decode_seconds']:.2f} s) | "
                  f"{nv['first_epoch_images_per_s']:.1f} | "
                  f"{kl['first_epoch_incl_decode_images_per_s']:.1f} | {e['first_epoch_speedup']:.2f}× |",
                  f"| steady epoch | {nv['steady_epoch_images_per_s']:.1f} | "
                  f"{kl['steady_epoch_images_per_s']:.1f} | {e['steady_speedup']:.2f}× |",
                  f"| data only (no model) | {nv['data_only_images_per_s']:.1f} | "
                  f"{kl['data_only_images_per_s']:.1f} | {e['data_only_speedup']:.2f}× |", ""]
    t = report["targets"]
    yes = {True: "yes", False: "NO", None: "not run"}
    lines += [f"Targets: non-SE model steps within 5% of torchvision: {yes[t['models_met']]}; "
              f"kneelib steady epoch ≥ {EPOCH_TARGET}× naive: {yes[t['epoch_speedup_at_least_1_5x']]}"]
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Options; ``--quick`` changes the defaults (explicit options still win)."""
    p = argparse.ArgumentParser(description="kneelib speed benchmark (CPU)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16, help="model part")
    p.add_argument("--iters", type=int, default=5, help="timed repetitions per model and mode")
    p.add_argument("--warmup", type=int, default=2, help="untimed repetitions first")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--archs", nargs="+", default=list_models(), choices=list_models())
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="kneeKL224-style folder")
    p.add_argument("--epoch-images", type=int, default=320)
    p.add_argument("--epoch-batch-size", type=int, default=32)
    p.add_argument("--naive-channels-last", action="store_true",
                   help="naive epoch in channels_last too (default: channels-first, as the paper)")
    p.add_argument("--skip-models", action="store_true")
    p.add_argument("--skip-epoch", action="store_true")
    p.add_argument("--out", "--json", dest="out", type=Path, default=None,
                   help="JSON file (default benchmarks/results/bench-<date>.json)")
    p.add_argument("--device", default="cpu", help="cpu (model steps and epochs against the reference), or "
                   "cuda: kneelib's training loop eager and graphed, the data paths, the paper profile's time")
    p.add_argument("--train-loop", action="store_true", help="the cuda benchmark on --device cpu (a check)")
    p.add_argument("--steps", type=int, default=60, help="cuda: timed training steps per architecture and mode")
    p.add_argument("--limit", type=int, default=None, help="cuda: at most this many images per split")
    p.add_argument("--workers", type=int, default=None, help="cuda: DataLoader workers of the per-image paths "
                   "(default kneelib's own, at most 8; 0 where /dev/shm is too small)")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds; for tests)")
    args = p.parse_args(argv)
    if args.quick:
        p.set_defaults(**QUICK)
        args = p.parse_args(argv)
    if args.device != "cpu" and not args.quick:  # the paper's batch, and warm-up steps that include the graph capture
        p.set_defaults(batch_size=32, warmup=5)
        args = p.parse_args(argv)
    if min(args.image_size - 63, args.batch_size - 1, args.iters, args.threads, args.epoch_images,
           args.epoch_batch_size - 1) < 1 or args.warmup < 0:
        p.error("need image size >= 64, batch sizes >= 2, iters/threads/epoch images >= 1, warmup >= 0")
    return args


def gpu_main(args: argparse.Namespace) -> dict[str, Any]:
    """``--device cuda``: the report of :func:`gpu_bench.gpu_benchmark`, written to ``--json`` (atomically)
    after every stage, so whatever finished survives a later stage's failure or a kill."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gpu_bench

    device = runtime.resolve_device(args.device)
    if not args.data.is_dir():
        raise KneelibError(f"{args.data}: data folder not found (pass --data)")
    out = args.out or REPO / "benchmarks" / "results" / f"gpu-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(report: dict[str, Any]) -> None:
        write_text(out, json.dumps(report, indent=2) + "\n")

    start = {"date": datetime.now().isoformat(timespec="seconds"), "git_commit": runtime.git_commit()[0],
             "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"}}
    report = gpu_bench.gpu_benchmark(args.data, args.archs, device, reference=(naive_transform, _symlink_tree),
                                     image_size=args.image_size, batch_size=args.batch_size, steps=args.steps,
                                     warmup=args.warmup, limit=args.limit, workers=args.workers, log=log,
                                     save=save, report=start)
    print(gpu_bench.markdown(report))
    print(f"\nwritten: {out}")
    return report


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write the JSON; returns the report."""
    args = parse_args(argv)
    if args.device != "cpu" or args.train_loop:
        return gpu_main(args)
    if not args.skip_epoch and not args.data.is_dir():
        raise KneelibError(f"{args.data}: data folder not found (pass --data or --skip-epoch)")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or REPO / "benchmarks" / "results" / f"bench-{'quick-' * args.quick}{stamp}.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        models = []
        for i, arch in enumerate([] if args.skip_models else args.archs, 1):
            models.append(bench_arch(arch, image_size=args.image_size, batch_size=args.batch_size,
                                     iters=args.iters, warmup=args.warmup))
            m = models[-1]
            log(f"[models {i}/{len(args.archs)}] {arch} vs {m['torchvision_base']}: train ratio "
                f"{m['train']['ratio']:.3f}, inference ratio {m['inference']['ratio']:.3f}")
        epoch = None if args.skip_epoch else bench_epoch(
            args.data, n_images=args.epoch_images, image_size=args.image_size,
            batch_size=args.epoch_batch_size, naive_channels_last=args.naive_channels_last)
    finally:
        torch.set_num_threads(threads)
    report = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(),
                    "torch_threads": args.threads, "versions": runtime.versions(),
                    "git_commit": runtime.git_commit()[0]},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k != "out"},
        "models": models, "epoch": epoch, "targets": targets(models, epoch),
    }
    text = markdown(report)
    report["table_markdown"] = text
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(report, indent=2) + "\n")
    print(text)
    print(f"\nwritten: {out}")
    return report


if __name__ == "__main__":
    try:
        finished = main()
    except KneelibError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(1 if finished.get("errors") else 0)  # the JSON holds every stage that finished
