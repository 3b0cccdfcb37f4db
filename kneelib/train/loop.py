"""Fit one model: the paper's training loop, checkpoints after every epoch, exact resume.

``train(config, data_dir=..., out_dir=...)`` writes a run directory (:mod:`kneelib.train.run_dir`):
``config.json``, ``history.csv``, ``best.pt`` (best validation accuracy), ``last.pt`` (everything needed to
resume) and ``status.json``, and returns a :class:`TrainResult`. Each epoch's shuffling and augmentation are
seeded from ``(seed, epoch)``, so a resumed run ends with the same history and weights as an uninterrupted one.

Read top to bottom: :func:`train` takes the run directory's lock, :func:`_fit` sets the run up (data, where
it runs, the :class:`~kneelib.train.build.Learner`) and :func:`_epoch` trains, validates and keeps one epoch.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from kneelib.data.dataset import DecodeCache
from kneelib.data.layout import Sample, discover, select_split
from kneelib.data.schemes import get_scheme
from kneelib.errors import KneelibError
from kneelib.train import checkpoint as ckpt
from kneelib.train import runtime as backend
from kneelib.train.build import Execution, Learner, build_learner, cpu_state, make_lazy_step, place_model, resolve
from kneelib.train.config import Runtime, TrainConfig, data_hash, limit_samples, run_config
from kneelib.train.epoch import Progress, RunData, run_epoch, train_steps
from kneelib.train.run_dir import RunDir, run_status
from kneelib.train.threads import ThreadGovernor

__all__ = ["TrainConfig", "Runtime", "TrainResult", "train", "run_status", "place_model", "make_lazy_step"]

#: Seed of the ``--limit`` subset: the same images for every run seed, so seeds stay comparable.
LIMIT_SEED = 0


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` leaves: the run directory and how far the run got (``os.fspath`` gives the directory)."""

    run_dir: Path
    best_epoch: int | None
    best_val_acc: float | None
    epochs: int  # epochs trained so far
    finished: bool

    @classmethod
    def of(cls, run: RunDir) -> TrainResult:
        """The result recorded in ``run``'s ``status.json``."""
        status = run.status() or {}
        return cls(run.path, status.get("best_epoch"), status.get("best_val_acc"), int(status.get("epoch", 0)),
                   bool(status.get("finished")))

    def __fspath__(self) -> str:
        return os.fspath(self.run_dir)


@dataclass(frozen=True)
class _Options:
    """How one :func:`train` call behaves (not what it trains): see :func:`train`'s arguments."""

    resume: bool
    bar: bool
    stop_after_epoch: int | None
    keep_last: bool
    cache: DecodeCache | None
    say: Callable[[str], None]


def train(config: TrainConfig, *, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
          runtime: Runtime | None = None, resume: bool = False, progress: bool | None = None,
          stop_after_epoch: int | None = None, verbose: bool = True, cache: DecodeCache | None = None,
          log: Callable[[str], None] | None = None, keep_last: bool = True) -> TrainResult:
    """Train ``config.arch`` on the train split of ``data_dir``, select on its val split, on ``runtime``
    (default: :class:`~kneelib.train.config.Runtime`'s, the best device found; ``runtime.threads`` applies to
    this call only).

    ``resume``: continue the unfinished run in ``out_dir`` (start one if there is none; a finished
    run is left alone). ``progress``: tqdm bars (None: only on a terminal). ``stop_after_epoch``:
    return after that epoch as if killed (tests). ``verbose``: one summary line per epoch via
    ``log`` (default: print). ``cache``: decode cache (default: the process-wide one).
    ``keep_last``: False deletes ``last.pt`` (weights, optimizer and RNG state for resuming, about three
    times ``best.pt``) once the run has finished, as a sweep does.
    """
    config, runtime = config.validate(), (runtime or Runtime()).validate()
    say = (log or (lambda line: tqdm.write(line, file=sys.stdout))) if verbose else (lambda line: None)
    options = _Options(resume=resume, bar=sys.stderr.isatty() if progress is None else bool(progress),
                       stop_after_epoch=stop_after_epoch, keep_last=keep_last, cache=cache, say=say)
    threads = torch.get_num_threads()
    if runtime.threads is not None:
        torch.set_num_threads(runtime.threads)
    try:
        with RunDir.locked(out_dir) as run:  # one training process per run directory (a second one stops)
            return _fit(config, runtime, run, Path(data_dir), options)
    finally:
        torch.set_num_threads(threads)


@dataclass
class _Session:
    """One process's training of a run: the run's recipe, directory, data, learner, and what runs its epochs."""

    config: TrainConfig
    run: RunDir
    data: RunData
    learner: Learner
    execution: Execution
    options: _Options
    meta: dict[str, Any]  # config.json, written after the first epoch
    governor: ThreadGovernor | None


@dataclass
class _Record:
    """How far a run got: the last epoch done, the best validation accuracy and its epoch, the history."""

    epoch: int = 0
    best_val_acc: float = -math.inf
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _fit(config: TrainConfig, runtime: Runtime, run: RunDir, data_dir: Path, options: _Options) -> TrainResult:
    """Set the run up (or find it finished), then train the epochs it lacks."""
    if not data_dir.exists():
        raise KneelibError(f"{data_dir}: data directory not found")
    state = run.state(options.resume)
    splits = _splits(config, data_dir)
    execution = resolve(config, runtime)
    meta = _run_meta(config, runtime, execution, splits, data_dir)
    if state != "new":
        run.check_config(meta)
    if state == "finished":
        return _already_finished(run, options)
    run.remove_stale_temps()
    backend.prepare_backends(execution.device)
    data = RunData(config, splits, get_scheme(config.scheme), execution.placement, cache=options.cache,
                   bar=options.bar)
    resuming = state == "resume" and run.has_last()
    backend.seed_everything(config.seed)
    learner = build_learner(config, execution, data, pretrained=not resuming, log=options.say, bar=options.bar)
    # A thread count left open adapts to the other processes on the machine (kneelib.train.threads).
    governor = ThreadGovernor(torch.get_num_threads(), log=options.say) if meta["threads_adaptive"] else None
    session = _Session(config, run, data, learner, execution, options, meta, governor)
    record = _resume(session) if resuming else _start(run)
    start = record.epoch
    for epoch in range(start + 1, config.epochs + 1):
        _epoch(session, epoch, record)
        if options.stop_after_epoch is not None and epoch >= options.stop_after_epoch and epoch < config.epochs:
            return TrainResult.of(run)
    if start >= config.epochs:  # killed after the last checkpoint but before its status.json
        run.write_status(epoch=start, best_epoch=record.best_epoch, best_val_acc=record.best_val_acc, finished=True)
    if not options.keep_last:  # finished: nothing resumes from it
        run.drop_last()
    return TrainResult.of(run)


def _splits(config: TrainConfig, data_dir: Path) -> dict[str, list[Sample]]:
    """The train and val samples (``config.limit``: a stratified subset); KneelibError when one is missing or
    when training would take no optimiser step an epoch."""
    try:
        splits = {name: limit_samples(select_split(discover(data_dir), name), config.limit, seed=LIMIT_SEED)
                  for name in ("train", "val")}
    except KneelibError as exc:
        raise KneelibError(f"{data_dir}: training needs a train and a val split ({exc})") from None
    n = len(splits["train"])
    if train_steps(n, config.batch_size) < 1:
        limit = f"--limit {config.limit}: " if config.limit is not None else ""
        raise KneelibError(f"{data_dir}: {limit}{n} training image(s) give no full training step at batch size "
                           f"{config.batch_size} (a last batch of one image is dropped); training needs at least 2")
    return splits


def _run_meta(config: TrainConfig, runtime: Runtime, execution: Execution, splits: Mapping[str, Sequence[Sample]],
              data_dir: Path) -> dict[str, Any]:
    """``config.json`` as planned before the first epoch (:func:`~kneelib.train.config.run_config`)."""
    device = execution.device
    commit, dirty = backend.git_commit()
    meta = run_config(config, runtime, scheme=get_scheme(config.scheme), data_dir=data_dir,
                      data_hash=data_hash(splits, data_dir), device=str(device), threads=torch.get_num_threads(),
                      workers=execution.placement.workers, versions=backend.versions(), git_commit=commit,
                      git_dirty=dirty, counts={k: len(v) for k, v in splits.items()})
    meta["threads_adaptive"] = runtime.threads is None and device.type == "cpu" and torch.get_num_threads() > 1
    meta["execution"] = execution.record()
    return meta


def _already_finished(run: RunDir, options: _Options) -> TrainResult:
    """A finished run, left as it is (but ``last.pt`` when it is not to be kept)."""
    result = TrainResult.of(run)
    options.say(f"{run.path}: run already finished ({result.epochs} epochs, best val acc "
                f"{result.best_val_acc or 0:.1%} at epoch {result.best_epoch}); nothing to do")
    if not options.keep_last:
        run.drop_last()
    return result


def _start(run: RunDir) -> _Record:
    """A new run: ``status.json`` says epoch 0."""
    run.write_status(epoch=0, best_epoch=None, best_val_acc=None, finished=False)
    return _Record()


def _resume(session: _Session) -> _Record:
    """Load ``last.pt`` into the learner and the RNGs; the record of the epochs it holds."""
    run = session.run
    last = run.load_last()
    try:
        session.learner.load_state(last)
        backend.set_rng_state(last["rng"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise KneelibError(f"{run.file(ckpt.LAST)}: does not fit this run ({exc})") from None
    epoch = int(last["epoch"])
    session.options.say(f"resuming {run.path} after epoch {epoch}/{session.config.epochs}")
    return _Record(epoch, float(last["best_val_acc"]), last["best_epoch"], run.history(epoch))


def _epoch(session: _Session, epoch: int, record: _Record) -> None:
    """Train and validate ``epoch``, then keep it: ``config.json`` after the first, ``best.pt`` when val
    accuracy improved, ``history.csv``, ``last.pt`` and ``status.json``."""
    config, run, learner = session.config, session.run, session.learner
    tic = time.perf_counter()
    lr = learner.lr()
    train_loss, train_acc, rate, val_loss, val_acc = _passes(session, epoch, tic)
    if epoch == 1:  # the path the steps took (a capture may have fallen back) is known now: config.json, once
        _write_config(session)
    learner.end_epoch()
    improved = val_acc > record.best_val_acc
    if improved:
        record.best_val_acc, record.best_epoch = val_acc, epoch
        run.save_best(cpu_state(learner.kept))
    seconds = time.perf_counter() - tic
    record.epoch = epoch
    record.history.append({"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                           "val_loss": val_loss, "val_acc": val_acc, "seconds": round(seconds, 3)})
    run.write_history(record.history)
    finished = epoch == config.epochs
    if session.options.keep_last or not finished:  # nothing resumes a finished run: skip what is deleted
        run.save_last({**learner.state(), "epoch": epoch, "rng": backend.rng_state(),
                       "best_val_acc": record.best_val_acc, "best_epoch": record.best_epoch})
    run.write_status(epoch=epoch, best_epoch=record.best_epoch, best_val_acc=record.best_val_acc,
                     finished=finished)
    session.options.say(f"epoch {epoch}/{config.epochs} lr {lr:.5g} train loss {train_loss:.3f} acc "
                        f"{train_acc:.1%} | val loss {val_loss:.3f} acc {val_acc:.1%} | {seconds:.1f} s, "
                        f"{rate:.0f} img/s{' [best]' if improved else ''}")


def _passes(session: _Session, epoch: int, tic: float) -> tuple[float, float, float, float, float]:
    """``epoch``'s training pass and validation pass: (train loss, train accuracy, training images per second,
    val loss, val accuracy); running out of GPU memory is one KneelibError line."""
    data, learner, bar = session.data, session.learner, session.options.bar
    desc = f"epoch {epoch}/{session.config.epochs}"
    try:
        train_loss, train_acc, n_train = run_epoch(
            learner.model, data.batches("train", epoch), learner.train_step, data.placement,
            hooks=learner.hooks(session.governor), progress=Progress(f"{desc} train", data.steps_per_epoch(), bar))
        rate = n_train / max(time.perf_counter() - tic, 1e-9)
        val_loss, val_acc, _ = run_epoch(learner.kept, data.batches("val", None), learner.val_step, data.placement,
                                         progress=Progress(f"{desc} val", None, bar))
    except torch.cuda.OutOfMemoryError:
        raise KneelibError(f"{session.run.path}: out of GPU memory at batch size {session.config.batch_size} "
                           f"({backend.gpu_memory(data.placement.device)}); lower --batch-size or run fewer runs "
                           f"at once (--resume continues after epoch {epoch - 1})") from None
    return train_loss, train_acc, rate, val_loss, val_acc


def _write_config(session: _Session) -> None:
    """``config.json``; on CUDA with the path the steps took and the first epoch's GPU footprint (graphs, the
    eager last batch, evaluation: what ``RUN_GPU_GIB`` stands for)."""
    meta, execution = session.meta, session.execution
    if execution.device.type == "cuda":
        meta["execution"] = execution.record(session.learner.train_step.step)
        meta["gpu_memory"] = backend.gpu_footprint(execution.device)
    session.run.write_config(meta)
