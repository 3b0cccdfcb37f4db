"""How long a sweep will take, and how far it has got: the projection printed before training starts and
the one progress bar of the whole sweep.

:func:`project_sweep` times a few training and evaluation steps of every architecture on random tensors
(the batch, image size, threads and arithmetic the runs will use) and scales them by the images each run
sees. :class:`SweepProgress` follows the runs' ``status.json`` files from the process that started the
sweep, so the training notebooks need not report anything: runs done, epochs done, and the time left,
estimated from the work done so far (epochs weighted by their projected cost).
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

#: Timed steps per architecture and round (after one untimed warm-up step), and rounds over the architectures:
#: each architecture keeps its faster round, so a minute in which the shared machine is slow does not inflate
#: the architectures timed in it (one round of 6 steps once projected the plain ResNets 3-4x too slow).
TIMED_STEPS = 3
TIMED_ROUNDS = 2


@dataclass(frozen=True)
class Projection:
    """Projected seconds of a sweep: per architecture the seconds per image of a training step and of an
    evaluation batch, and how many images each run trains on, validates on and is finally scored on."""

    train_seconds: Mapping[str, float]  # arch -> seconds per training image
    eval_seconds: Mapping[str, float]  # arch -> seconds per evaluated image
    counts: Mapping[str, int]  # images: train, val (selection, every epoch), test (scored once)
    epochs: int
    runs_per_arch: int  # schemes x seeds
    jobs: int = 1
    data: tuple[float, float, float] = (0.0, 0.0, 0.0)  # seconds per image: decode, train augmentation, eval input
    # arch -> (runs finished earlier, epochs trained in its unfinished runs): a resumed sweep projects what is left
    done: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def epoch_seconds(self, arch: str) -> float:
        """One epoch of ``arch``: a pass over the train images and one over the selection images."""
        _, augment, prepare = self.data
        return (self.counts["train"] * (self.train_seconds[arch] + augment)
                + self.counts["val"] * (self.eval_seconds[arch] + prepare))

    def run_seconds(self, arch: str) -> float:
        """One run of ``arch``: decoding its images once, its epochs, and its final evaluation."""
        decode, _, prepare = self.data
        return (sum(self.counts.values()) * decode + self.epochs * self.epoch_seconds(arch)
                + self.counts["test"] * (self.eval_seconds[arch] + prepare))

    def left_seconds(self, arch: str) -> float:
        """What is left of ``arch``'s runs: the unfinished ones, less the epochs they trained already."""
        finished, epochs = self.done.get(arch, (0, 0))
        return (self.runs_per_arch - finished) * self.run_seconds(arch) - epochs * self.epoch_seconds(arch)

    @property
    def total_seconds(self) -> float:
        """What is left of the sweep, ``jobs`` runs at a time (training arithmetic only: no start-up, no
        notebooks)."""
        return sum(self.left_seconds(a) for a in self.train_seconds) / max(1, self.jobs)

    def describe(self) -> str:
        """One line: the total (of what is left) and the cost of each architecture's run."""
        per_run = ", ".join(f"{a} {self.run_seconds(a) / 60:.1f}" for a, t in self.train_seconds.items() if t) or "none"
        runs = len(self.train_seconds) * self.runs_per_arch
        finished = sum(f for f, _ in self.done.values())
        started = sum(e for _, e in self.done.values())
        earlier = (f"; {finished} finished earlier" if finished else "") + \
            (f"; {started} epochs of unfinished runs done" if started else "")
        return (f"projected training time: {self.total_seconds / 60:.{0 if self.total_seconds >= 600 else 1}f} min for "
                f"{runs - finished} runs of {self.epochs} epochs over {self.counts['train']:,} images ({runs} in the "
                f"sweep{earlier}; minutes per run: {per_run}; from {TIMED_ROUNDS} rounds of "
                f"{TIMED_STEPS} timed steps per architecture"
                f"{' and the data pipeline on a sample' if any(self.data) else ''})")


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """A run's ``status.json`` (epoch, finished, best so far), or None where there is none or it is unreadable."""
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def trained_so_far(run_dirs: Sequence[Path], epochs: int) -> tuple[int, int]:
    """``(finished runs, epochs trained in the unfinished ones)`` of ``run_dirs``, from their ``status.json``."""
    finished = trained = 0
    for run in run_dirs:
        status = read_status(run)
        if status is None:
            continue
        if status.get("finished"):
            finished += 1
        else:
            trained += min(int(status.get("epoch") or 0), epochs)
    return finished, trained


def time_data(samples: Sequence[Any], scheme: str, *, image_size: int, clahe: bool = False,
              sample: int = 48, augment: float = 1.0) -> tuple[float, float, float]:
    """``(decode, augment, prepare)`` seconds per image of the training loop's data pipeline, timed on the first
    ``sample`` of ``samples`` (a fresh decode cache): decoding a file once, a training item (augmentation of
    strength ``augment``), an evaluation item."""
    from kneelib.data.dataset import DecodeCache, KneeDataset

    chosen, cache = list(samples)[:sample], DecodeCache()
    if not chosen:
        return (0.0, 0.0, 0.0)
    tic = time.perf_counter()
    train = KneeDataset(chosen, scheme, image_size=image_size, train=True, clahe=clahe, cache=cache,
                        augment=augment)
    decode = (time.perf_counter() - tic) / len(chosen)
    evaluate = KneeDataset(chosen, scheme, image_size=image_size, train=False, clahe=clahe, cache=cache)
    seconds = []
    for dataset in (train, evaluate):
        tic = time.perf_counter()
        for index in range(len(dataset)):
            dataset[index]
        seconds.append((time.perf_counter() - tic) / len(chosen))
    return (decode, seconds[0], seconds[1])


def time_steps(arch: str, *, image_size: int, batch_size: int, num_classes: int = 5, precision: str = "auto",
               device: str = "cpu", steps: int = TIMED_STEPS) -> tuple[float, float]:
    """``(train, eval)`` seconds per image of ``arch``: the median of ``steps`` timed training steps and
    evaluation batches on random tensors, after one untimed of each, in the layout and arithmetic of
    :mod:`kneelib.train.loop`."""
    import torch

    from kneelib.models.registry import build_model
    from kneelib.train import runtime
    from kneelib.train.config import TrainConfig
    from kneelib.train.optim import make_optimizer
    from kneelib.train.steps import EagerStep

    dev = runtime.resolve_device(device)
    bf16 = runtime.autocast_dtype(precision, dev) is torch.bfloat16
    fmt = runtime.memory_format(dev, arch, bf16=bf16)
    model = build_model(arch, num_classes=num_classes).to(dev, memory_format=fmt)
    optimizer = make_optimizer(model, TrainConfig.from_recipe("scratch", arch=arch), fused=True)
    images = torch.randn(batch_size, 3, image_size, image_size, device=dev).contiguous(memory_format=fmt)
    targets = torch.randint(0, num_classes, (batch_size,), device=dev)

    def timed(step: EagerStep, training: bool) -> float:
        model.train(training)
        seconds = []
        with torch.inference_mode(not training):
            for i in range(steps + 1):
                tic = time.perf_counter()
                step(images, targets)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                if i:
                    seconds.append(time.perf_counter() - tic)
        return statistics.median(seconds) / batch_size

    return (timed(EagerStep(model, optimizer, dev, precision=precision), True),
            timed(EagerStep(model, None, dev, precision=precision), False))


def project_sweep(archs: Sequence[str], counts: Mapping[str, int], *, epochs: int, image_size: int,
                  batch_size: int, runs_per_arch: int, jobs: int = 1, device: str = "cpu",
                  precision: str = "auto", data: tuple[float, float, float] = (0.0, 0.0, 0.0),
                  done: Mapping[str, tuple[int, int]] | None = None) -> Projection:
    """The :class:`Projection` of a sweep over ``archs`` (``counts``: train, val and test images; ``data``:
    :func:`time_data`'s seconds per image, when the images are on the host; ``done``: per arch what
    :func:`trained_so_far` found). The architectures are timed in :data:`TIMED_ROUNDS` round-robin rounds and
    each keeps its faster one; architectures whose runs all finished earlier are not timed."""
    done = dict(done or {})
    train = {arch: math.inf for arch in archs if done.get(arch, (0, 0))[0] < runs_per_arch}
    evaluate = dict(train)
    for _ in range(TIMED_ROUNDS):  # round-robin, so the rounds of one architecture lie minutes apart
        for arch in train:
            step, forward = time_steps(arch, image_size=image_size, batch_size=batch_size, precision=precision,
                                       device=device)
            train[arch], evaluate[arch] = min(train[arch], step), min(evaluate[arch], forward)
    train = {arch: train.get(arch, 0.0) for arch in archs}
    evaluate = {arch: evaluate.get(arch, 0.0) for arch in archs}
    return Projection(train, evaluate, dict(counts), epochs, runs_per_arch, jobs, data, done)


@dataclass
class SweepProgress:
    """One tqdm bar over every run of a sweep, fed by polling the runs' ``status.json`` (a daemon thread).

    ``runs``: run directory -> the relative cost of one of its epochs (projected seconds, or any weights).
    The bar counts weighted epochs, so its rate and time left are in the sweep's real proportions; its label
    says runs done and epochs done. ``disable=None``: shown only on a terminal."""

    runs: Mapping[Path, float]
    epochs: int
    file: TextIO = sys.stderr
    disable: bool | None = None
    interval: float = 2.0
    _stop: threading.Event = field(default_factory=threading.Event, init=False)

    def __post_init__(self) -> None:
        from tqdm.auto import tqdm

        done = self._work()[0]
        total = sum(self.runs.values()) * self.epochs
        size = shutil.get_terminal_size((100, 24))  # a pty of size 0 (e.g. under `script`): tqdm would hide the bar
        self.bar = tqdm(total=total, initial=done, desc="sweep", file=self.file, disable=self.disable, smoothing=0,
                        ncols=size.columns, nrows=size.lines,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
        self._refresh()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _work(self) -> tuple[float, int, int]:
        """(weighted epochs done, epochs done, runs finished) from the status files."""
        work, epochs, finished = 0.0, 0, 0
        for run, weight in self.runs.items():
            status = read_status(run)
            if status is None:
                continue
            done = min(int(status.get("epoch") or 0), self.epochs)
            work, epochs, finished = work + done * weight, epochs + done, finished + bool(status.get("finished"))
        return work, epochs, finished

    def _refresh(self) -> None:
        work, epochs, finished = self._work()
        self.bar.set_description_str(f"sweep: runs {finished}/{len(self.runs)}, epochs {epochs}/"
                                     f"{len(self.runs) * self.epochs}", refresh=False)
        self.bar.update(work - self.bar.n)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._refresh()

    def write(self, line: str, log: Callable[[str], object] = print) -> None:
        """Pass ``line`` to ``log`` (stdout by default) with the bar cleared, then redraw the bar below it."""
        with self.bar.external_write_mode(file=sys.stdout):
            log(line)

    def close(self) -> None:
        """Stop polling, draw the final state and close the bar."""
        self._stop.set()
        self._thread.join()
        self._refresh()
        self.bar.close()

    def __enter__(self) -> SweepProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
