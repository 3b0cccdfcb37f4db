"""Fit one model: the paper's training loop, checkpoints after every epoch, exact resume.

``train(config, data_dir=..., out_dir=...)`` writes a run directory (see :mod:`kneelib.train.checkpoint`):
``config.json``, ``history.csv``, ``best.pt`` (best validation accuracy), ``last.pt`` (everything
needed to resume) and ``status.json``. Each epoch's shuffling and augmentation are seeded from
``(seed, epoch)``, so a resumed run ends with the same history and weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from kneelib.data.batched import BatchedAugmentation, DeviceBatches
from kneelib.data.dataset import DecodeCache, KneeDataset
from kneelib.data.layout import discover, select_split
from kneelib.data.schemes import get_scheme
from kneelib.errors import KneelibError
from kneelib.models.registry import build_model, get_spec
from kneelib.train import checkpoint as ckpt
from kneelib.train import optim, runtime
from kneelib.train.config import (
    TrainConfig,
    config_mismatch,
    data_hash,
    limit_samples,
    run_config,
)
from kneelib.train.lock import run_lock
from kneelib.train.steps import EagerStep, GraphedStep, make_step
from kneelib.train.threads import ThreadGovernor

__all__ = ["TrainConfig", "train", "run_status"]

#: Seed of the ``--limit`` subset: the same images for every run seed, so seeds stay comparable.
LIMIT_SEED = 0


def run_status(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``status.json`` of a run directory, or None when there is none."""
    path = Path(out_dir) / ckpt.STATUS
    return ckpt.read_json(path) if path.is_file() else None


def _check_out_dir(out: Path, resume: bool) -> str:
    """``"fresh"``, ``"resume"`` or ``"finished"``; KneelibError where a run would be clobbered."""
    if not out.exists():
        return "fresh"
    if not out.is_dir():
        raise KneelibError(f"{out}: exists and is not a directory")
    status = run_status(out)
    has_run = (out / ckpt.CONFIG).is_file() or (out / ckpt.LAST).is_file()
    if status and status.get("finished"):
        if not resume:
            raise KneelibError(f"{out}: holds a finished run; choose another --out (or delete it)")
        return "finished"
    if has_run:
        if not resume:
            raise KneelibError(f"{out}: holds an unfinished run; pass --resume to continue it")
        return "resume"
    if any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise KneelibError(f"{out}: not empty and holds no kneelib run; choose an empty --out")
    return "fresh"


def _remove_stale_temps(out: Path) -> None:
    """Delete temporary files a hard-killed process (SIGKILL) left beside the run's files."""
    for name in (ckpt.CONFIG, ckpt.HISTORY, ckpt.BEST, ckpt.LAST, ckpt.STATUS):
        for tmp in out.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def _order(dataset: KneeDataset, config: TrainConfig, epoch: int | None,
           generator: torch.Generator | None = None) -> list[int]:
    """Training order of ``epoch`` (seeded shuffle, or class-balanced draws), file order for validation."""
    n = len(dataset)
    if epoch is None:
        return list(range(n))
    if generator is None:
        generator = torch.Generator().manual_seed(runtime.derive_seed(config.seed, epoch, 1))
    if config.balanced:  # each class drawn equally often, with replacement
        weights = optim.class_balanced_weights(dataset.targets)
        return torch.multinomial(weights, n, replacement=True, generator=generator).tolist()
    return torch.randperm(n, generator=generator).tolist()


def _loader(dataset: KneeDataset, config: TrainConfig, *, epoch: int | None, workers: int,
            cuda: bool) -> DataLoader:
    """Batches in a seeded order for training (``epoch`` given) or in file order for validation."""
    n = len(dataset)
    generator = torch.Generator().manual_seed(runtime.derive_seed(config.seed, epoch or 0, 1))
    order = _order(dataset, config, epoch, generator)
    if epoch is not None:
        dataset.set_epoch(epoch)
    return DataLoader(dataset, batch_size=config.batch_size, sampler=order, num_workers=workers,
                      pin_memory=cuda, drop_last=epoch is not None and _drops_last(n, config.batch_size),
                      generator=generator, worker_init_fn=_worker_init, persistent_workers=False)


def _drops_last(n: int, batch_size: int) -> bool:
    """Training drops a last batch of one image (batch norm cannot train on it)."""
    return n % batch_size == 1


def _train_steps(n: int, batch_size: int) -> int:
    """Optimizer steps per training epoch over ``n`` images (as :func:`_loader` batches them)."""
    return math.ceil(n / batch_size) - _drops_last(n, batch_size)


def _worker_init(worker_id: int) -> None:
    """Workers: one thread each, python/numpy seeded from the worker's torch seed."""
    torch.set_num_threads(1)
    runtime.seed_everything(torch.initial_seed() % 2**63)


class _LazyStep:
    """A step built from the first batch it sees (a CUDA graph is captured on a real batch's shape)."""

    def __init__(self, build: Callable[[torch.Tensor], EagerStep | GraphedStep]) -> None:
        self.build, self.step = build, None

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.step is None:
            self.step = self.build(images)
        return self.step(images, targets)


def place_model(model: nn.Module, config: TrainConfig, device: torch.device, *, graphs: bool
                ) -> tuple[nn.Module, torch.optim.Optimizer, torch.memory_format]:
    """``(model, optimizer, memory format)``: the model on ``device`` in the layout a run trains in, and its
    optimizer (capturable when ``graphs``). ``benchmarks/gpu_bench.py`` measures what this builds."""
    autocast = runtime.autocast_dtype(config.precision, device)
    memory_format = runtime.memory_format(device, config.arch, bf16=autocast is torch.bfloat16)
    model = model.to(device, memory_format=memory_format)
    # The fused kernel does the same update; on a CPU at batch 8 it cuts the step from ~1/3 of the
    # iteration (ResNet-50: 0.20 s -> 0.06 s of 0.61 s) to a tenth.
    optimizer = optim.make_optimizer(model, config, fused=device.type in ("cpu", "cuda"), capturable=graphs)
    return model, optimizer, memory_format


def make_lazy_step(model: nn.Module, optimizer: torch.optim.Optimizer | None, device: torch.device,
                   config: TrainConfig, *, num_classes: int, label_smoothing: float, graphs: bool,
                   log: Callable[[str], None] | None = None) -> _LazyStep:
    """A run's training (``optimizer`` given) or evaluation step, built (a CUDA graph captured) at the first
    batch it sees."""
    return _LazyStep(lambda example: make_step(
        model, optimizer, device, batch_size=config.batch_size, example=example, num_classes=num_classes,
        label_smoothing=label_smoothing, graphs=graphs, log=log, precision=config.precision))


def _run_epoch(model: nn.Module, loader: Iterable, device: torch.device, *,
               optimizer: torch.optim.Optimizer | None, bar: bool, desc: str,
               memory_format: torch.memory_format, label_smoothing: float = 0.0,
               step_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
               ema: nn.Module | None = None,
               step: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
               total: int | None = None, governor: ThreadGovernor | None = None) -> tuple[float, float, int]:
    """One pass; trains when ``optimizer`` is given. Returns (mean loss, accuracy, images seen).

    ``step`` runs a batch (default: an eager :class:`~kneelib.train.steps.EagerStep`). Training steps
    ``step_scheduler`` after every batch (per-step schedules), updates ``ema`` and lets ``governor`` re-size
    the CPU threads to what other processes leave free. Sums stay on the
    device (no host sync per batch on a GPU); the step runs in its precision (bf16 autocast on CUDA).
    """
    cuda = device.type == "cuda"
    training = optimizer is not None
    model.train(training)
    step = step or EagerStep(model, optimizer, device, label_smoothing=label_smoothing)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    grad = contextlib.nullcontext() if training else torch.inference_mode()
    with grad, tqdm(loader, desc=desc, leave=False, disable=not bar, unit="batch", total=total,
                    file=sys.stderr) as batches:
        for i, (images, targets) in enumerate(batches):
            images = images.to(device, non_blocking=cuda, memory_format=memory_format)
            targets = targets.to(device, non_blocking=cuda)
            loss, logits = step(images, targets)
            if training:
                if step_scheduler is not None:
                    step_scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                if governor is not None:
                    governor.step()
            n = targets.numel()
            total_loss += loss.double() * n
            correct += (logits.argmax(1) == targets).sum()
            seen += n
            if bar and i % 10 == 0:
                batches.set_postfix(loss=f"{float(total_loss) / seen:.3f}",
                                    acc=f"{int(correct) / seen:.1%}", refresh=False)
    total_loss, correct = float(total_loss), int(correct)
    return total_loss / max(seen, 1), correct / max(seen, 1), seen


def train(config: TrainConfig, *, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
          resume: bool = False, progress: bool | None = None, stop_after_epoch: int | None = None,
          verbose: bool = True, cache: DecodeCache | None = None,
          log: Callable[[str], None] | None = None, keep_last: bool = True) -> Path:
    """Train ``config.arch`` on the train split of ``data_dir``, select on its val split.

    ``resume``: continue the unfinished run in ``out_dir`` (start one if there is none; a finished
    run is left alone). ``progress``: tqdm bars (None: only on a terminal). ``stop_after_epoch``:
    return after that epoch as if killed (tests). ``verbose``: one summary line per epoch via
    ``log`` (default: print). ``cache``: decode cache (default: the process-wide one).
    ``keep_last``: False deletes ``last.pt`` (weights, optimizer and RNG state for resuming, about three
    times ``best.pt``) once the run has finished, as a sweep does. ``config.threads`` applies to this call
    only. Returns ``out_dir``.
    """
    config = config.validate()
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        with run_lock(out_dir):  # one training process per run directory (a second one stops, naming it)
            return _train(config, data_dir=Path(data_dir), out=Path(out_dir), resume=resume,
                          progress=progress, stop_after_epoch=stop_after_epoch, verbose=verbose,
                          cache=cache, log=log, keep_last=keep_last)
    finally:
        torch.set_num_threads(threads)


def _require_a_step(n: int, config: TrainConfig, data_dir: Path) -> None:
    """KneelibError when ``n`` training images give no optimiser step an epoch (a run that would learn nothing)."""
    if _train_steps(n, config.batch_size) >= 1:
        return
    limit = f"--limit {config.limit}: " if config.limit is not None else ""
    raise KneelibError(f"{data_dir}: {limit}{n} training image(s) give no full training step at batch size "
                       f"{config.batch_size} (a last batch of one image is dropped); training needs at least 2")


def _train(config: TrainConfig, *, data_dir: Path, out: Path, resume: bool, progress: bool | None,
           stop_after_epoch: int | None, verbose: bool, cache: DecodeCache | None,
           log: Callable[[str], None] | None, keep_last: bool) -> Path:
    """:func:`train` with a validated config and the thread count set."""
    say = (log or (lambda line: tqdm.write(line, file=sys.stdout))) if verbose else (lambda line: None)
    bar = sys.stderr.isatty() if progress is None else bool(progress)
    if not data_dir.exists():
        raise KneelibError(f"{data_dir}: data directory not found")
    state = _check_out_dir(out, resume)
    scheme = get_scheme(config.scheme)
    samples = discover(data_dir)
    try:
        splits = {name: limit_samples(select_split(samples, name), config.limit, seed=LIMIT_SEED)
                  for name in ("train", "val")}
    except KneelibError as exc:
        raise KneelibError(f"{data_dir}: training needs a train and a val split ({exc})") from None
    _require_a_step(len(splits["train"]), config, data_dir)
    device = runtime.resolve_device(config.device)
    cuda = device.type == "cuda"
    workers = config.workers if config.workers is not None else runtime.default_workers(device)
    commit, dirty = runtime.git_commit()
    meta = run_config(config, scheme=scheme, data_dir=data_dir, data_hash=data_hash(splits, data_dir),
                      device=str(device), threads=torch.get_num_threads(), workers=workers,
                      versions=runtime.versions(), git_commit=commit, git_dirty=dirty,
                      counts={k: len(v) for k, v in splits.items()})
    meta["threads_adaptive"] = config.threads is None and device.type == "cpu" and torch.get_num_threads() > 1
    if state in ("finished", "resume"):
        saved = ckpt.read_json(out / ckpt.CONFIG)
        diff = config_mismatch(saved, meta)
        if diff:
            raise KneelibError(f"{out}: --resume with a different configuration ({'; '.join(diff)})")
        if state == "finished":
            status = run_status(out) or {}
            say(f"{out}: run already finished ({status.get('epoch')} epochs, best val acc "
                f"{status.get('best_val_acc', 0):.1%} at epoch {status.get('best_epoch')}); nothing to do")
            if not keep_last:
                (out / ckpt.LAST).unlink(missing_ok=True)
            return out

    if out.is_dir():
        _remove_stale_temps(out)
    runtime.prepare_backends(device)
    datasets = {name: KneeDataset(s, scheme, image_size=config.image_size, train=name == "train",
                                  clahe=config.clahe, cache=cache, progress=bar, seed=config.seed,
                                  augment=config.augment)
                for name, s in splits.items()}
    on_device = config.data_on_device if config.data_on_device is not None else cuda
    graphs = cuda and config.cuda_graphs
    device_data = ({name: DeviceBatches(ds.images, ds.targets, device, seed=config.seed,
                                        augment=ds.train and BatchedAugmentation.of_strength(config.augment))
                    for name, ds in datasets.items()} if on_device else None)
    autocast = runtime.autocast_dtype(config.precision, device)
    arithmetic = "bf16 autocast" if autocast is torch.bfloat16 else "fp32"
    meta["execution"] = _execution(on_device, "cuda graph" if graphs else "eager", None if graphs else
                                   ("CUDA graphs switched off" if cuda else "a CPU runs eagerly"), arithmetic)
    resuming = state == "resume" and (out / ckpt.LAST).is_file()
    runtime.seed_everything(config.seed)
    model = build_model(config.arch, num_classes=scheme.num_classes,  # resume: last.pt has weights
                        weights=None if resuming else config.weights, progress=bar)
    if config.prior_bias and not resuming:
        optim.init_head_to_prior(getattr(model, get_spec(config.arch).head), datasets["train"].targets)
    model, optimizer, memory_format = place_model(model, config, device, graphs=graphs)
    steps_per_epoch = _train_steps(len(datasets["train"]), config.batch_size)
    scheduler, per_step = optim.make_scheduler(optimizer, config, steps_per_epoch)
    ema = optim.make_ema(model, config.ema_decay)
    kept = model if ema is None else ema.module  # the weights validated and kept

    def lazy_step(module: nn.Module, opt: torch.optim.Optimizer | None, smoothing: float) -> _LazyStep:
        return make_lazy_step(module, opt, device, config, num_classes=scheme.num_classes,
                              label_smoothing=smoothing, graphs=graphs, log=say)

    def batches(name: str, epoch: int | None) -> Iterable:
        dataset = datasets[name]
        if device_data is None:
            return _loader(dataset, config, epoch=epoch, workers=workers, cuda=cuda)
        drop = epoch is not None and _drops_last(len(dataset), config.batch_size)
        return device_data[name].batches(_order(dataset, config, epoch), config.batch_size, epoch=epoch or 0,
                                         drop_last=drop, memory_format=memory_format)

    train_step, val_step = lazy_step(model, optimizer, config.label_smoothing), lazy_step(kept, None, 0.0)
    # A thread count left open adapts to the other processes on the machine (kneelib.train.threads).
    governor = ThreadGovernor(torch.get_num_threads(), log=say) if meta["threads_adaptive"] else None
    start, best_acc, best_epoch, history = 0, -math.inf, None, []
    if resuming:
        last = ckpt.load_checkpoint(out / ckpt.LAST)
        try:
            model.load_state_dict(last["model"])
            if ema is not None:
                ema.load_state_dict(last["ema"])
            optimizer.load_state_dict(last["optimizer"])
            optim.lr_to_device(optimizer, device)  # a capturable optimizer's lr lives on the GPU
            scheduler.load_state_dict(last["scheduler"])
            runtime.set_rng_state(last["rng"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise KneelibError(f"{out / ckpt.LAST}: does not fit this run ({exc})") from None
        start, best_acc, best_epoch = int(last["epoch"]), float(last["best_val_acc"]), last["best_epoch"]
        history = [row for row in ckpt.read_history(out / ckpt.HISTORY) if row["epoch"] <= start]
        say(f"resuming {out} after epoch {start}/{config.epochs}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.write_json(out / ckpt.CONFIG, meta)
        ckpt.write_json(out / ckpt.STATUS, {"finished": False, "epoch": 0, "best_epoch": None,
                                            "best_val_acc": None})

    for epoch in range(start + 1, config.epochs + 1):
        tic = time.perf_counter()
        lr = float(optimizer.param_groups[0]["lr"])
        try:
            train_loss, train_acc, n_train = _run_epoch(
                model, batches("train", epoch), device, optimizer=optimizer, bar=bar,
                desc=f"epoch {epoch}/{config.epochs} train", memory_format=memory_format,
                label_smoothing=config.label_smoothing, step_scheduler=scheduler if per_step else None,
                ema=ema, step=train_step, total=steps_per_epoch, governor=governor)
            train_seconds = time.perf_counter() - tic
            val_loss, val_acc, _ = _run_epoch(
                kept, batches("val", None), device, optimizer=None, bar=bar,
                desc=f"epoch {epoch}/{config.epochs} val", memory_format=memory_format, step=val_step)
        except torch.cuda.OutOfMemoryError:
            raise KneelibError(f"{out}: out of GPU memory at batch size {config.batch_size} "
                               f"({runtime.gpu_memory(device)}); lower --batch-size or run fewer runs at "
                               f"once (--resume continues after epoch {epoch - 1})") from None
        if epoch == start + 1 and cuda:  # the path the steps took (a capture may have fallen back)
            meta["execution"] = _execution(on_device, train_step.step.path, train_step.step.why, arithmetic)
            # The whole epoch's footprint (graphs, the eager last batch, evaluation): what RUN_GPU_GIB stands for.
            ckpt.write_json(out / ckpt.CONFIG, {**ckpt.read_json(out / ckpt.CONFIG),
                                                "execution": meta["execution"],
                                                "gpu_memory": runtime.gpu_footprint(device)})
        if not per_step:
            scheduler.step()
        improved = val_acc > best_acc
        if improved:
            best_acc, best_epoch = val_acc, epoch
            ckpt.save_checkpoint(_cpu_state(kept), out / ckpt.BEST)
        seconds = time.perf_counter() - tic
        history.append({"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                        "val_loss": val_loss, "val_acc": val_acc, "seconds": round(seconds, 3)})
        ckpt.write_history(out / ckpt.HISTORY, history)
        finished = epoch == config.epochs
        if keep_last or not finished:  # nothing resumes a finished run: skip writing what is deleted below
            ckpt.save_checkpoint({"model": _cpu_state(model), "optimizer": optimizer.state_dict(),
                                  **({"ema": ema.state_dict()} if ema is not None else {}),
                                  "scheduler": scheduler.state_dict(), "epoch": epoch,
                                  "rng": runtime.rng_state(), "best_val_acc": best_acc,
                                  "best_epoch": best_epoch}, out / ckpt.LAST)
        ckpt.write_json(out / ckpt.STATUS, {"finished": finished, "epoch": epoch,
                                            "best_epoch": best_epoch, "best_val_acc": best_acc})
        say(f"epoch {epoch}/{config.epochs} lr {lr:.5g} train loss {train_loss:.3f} acc "
            f"{train_acc:.1%} | val loss {val_loss:.3f} acc {val_acc:.1%} | {seconds:.1f} s, "
            f"{n_train / max(train_seconds, 1e-9):.0f} img/s{' [best]' if improved else ''}")
        if stop_after_epoch is not None and epoch >= stop_after_epoch and not finished:
            return out
    if start >= config.epochs:  # killed after the last checkpoint but before its status.json
        ckpt.write_json(out / ckpt.STATUS, {"finished": True, "epoch": start, "best_epoch": best_epoch,
                                            "best_val_acc": best_acc})
    if not keep_last:  # finished: nothing resumes from it
        (out / ckpt.LAST).unlink(missing_ok=True)
    return out


def _execution(on_device: bool, step: str, why_eager: str | None, arithmetic: str) -> dict[str, str | None]:
    """``config.json``'s record of how the run executed: where the data lived, how steps ran, in which
    arithmetic (``fp32`` or ``bf16 autocast``)."""
    return {"data": "on the device, batched augmentation" if on_device
            else "host, per-image augmentation (PIL) in a DataLoader", "step": step, "why_eager": why_eager,
            "arithmetic": arithmetic}


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict as contiguous CPU tensors (loadable anywhere, channels-first)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
