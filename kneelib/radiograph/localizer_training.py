"""Train the knee localiser (:mod:`kneelib.radiograph.localizer`) on synthetic bilateral radiographs.

Radiographs come from :func:`~kneelib.synthetic.bilateral.render_bilateral` with random size,
aspect and pixel spacing (:func:`~kneelib.radiograph.localizer.sample_scene`); each is rendered once, shrunk to
fit the network input and kept in memory. Every epoch sees them again under a light augmentation:
gamma, contrast, brightness, blur and noise, then a random scale (0.85-1.15), shift (up to 8 %) and
left-right flip (which swaps the knees). The validation radiographs come from another random
stream; the weights with the best validation IoU are kept.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kneelib.errors import KneelibError
from kneelib.radiograph.localizer import (
    FORMAT,
    INPUT_SIZE,
    MODEL_FILE,
    TRAIN_STREAM,
    VAL_STREAM,
    WIDTHS,
    Frame,
    Localizer,
    LocalizerNet,
    decode,
    localization_metrics,
    normalise,
    resize_to_fit,
    sample_scene,
)
from kneelib.train import runtime
from kneelib.train.checkpoint import save_checkpoint, write_json

__all__ = ["train_localizer", "SceneSet", "make_scenes", "augment", "METRICS_FILE"]

METRICS_FILE = "metrics.json"


@dataclass
class SceneSet:
    """Rendered radiographs shrunk to fit the input, with their frames and true boxes.

    ``targets``: (N, 5) centre x, y of the R then the L box and the box side, in the shrunk image's
    pixel-edge coordinates (no letterbox offset).
    """

    images: list[np.ndarray]
    frames: list[Frame]
    targets: np.ndarray
    boxes: list[list[dict]]
    spacings: list[float]

    def __len__(self) -> int:
        return len(self.images)


def make_scenes(n: int, *, seed: int, stream: int, size: tuple[int, int] = INPUT_SIZE,
                progress: bool = False, desc: str = "render") -> SceneSet:
    """``n`` synthetic radiographs, image ``i`` drawn from ``default_rng([seed, stream, i])``."""
    from kneelib.synthetic.bilateral import render_bilateral

    images, frames, targets, boxes, spacings = [], [], [], [], []
    for i in tqdm(range(n), desc=desc, unit="img", disable=not progress, leave=False, file=sys.stderr):
        rng = np.random.default_rng([seed, stream, i])
        scene = sample_scene(rng)
        image, knees = render_bilateral(rng, scene.pop("grades"), **scene)
        small, frame = resize_to_fit(image, size)
        row = []
        for b in knees:  # R then L
            row += [(b["x0"] + b["x1"]) / 2 * frame.sx, (b["y0"] + b["y1"]) / 2 * frame.sy]
        row.append((knees[0]["x1"] - knees[0]["x0"]) * frame.sx)
        images.append(small)
        frames.append(frame)
        targets.append(row)
        boxes.append(knees)
        spacings.append(scene["spacing_mm"])
    return SceneSet(images, frames, np.asarray(targets, np.float64).reshape(n, 5), boxes, spacings)


def _shift(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def augment(image: np.ndarray, frame: Frame, target: np.ndarray, rng: np.random.Generator | None,
            size: tuple[int, int] = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Network input (normalised float32 HxW) and target (5 numbers, fractions of the input width /
    height) of one shrunk radiograph; ``rng`` None: no augmentation, just the letterbox."""
    H, W = size
    x = image.astype(np.float32) / 255.0
    A = _shift(frame.ox, frame.oy)
    flip = False
    if rng is not None:
        x = x ** float(np.exp(rng.uniform(math.log(0.7), math.log(1.5))))
        x = x * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1)
        if rng.random() < 0.3:
            x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, 1.0))
        x = np.clip(x + rng.normal(0.0, rng.uniform(0.0, 0.03), x.shape).astype(np.float32), 0.0, 1.0)
        s = float(np.exp(rng.uniform(math.log(0.85), math.log(1.15))))
        tx, ty = rng.uniform(-0.08, 0.08) * W, rng.uniform(-0.08, 0.08) * H
        A = _shift(W / 2 + tx, H / 2 + ty) @ np.diag([s, s, 1.0]) @ _shift(-W / 2, -H / 2) @ A
        flip = bool(rng.random() < 0.5)
        if flip:
            A = np.array([[-1.0, 0.0, W], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ A
    # warpAffine works on pixel centres: index = edge - 0.5
    M = (_shift(-0.5, -0.5) @ A @ _shift(0.5, 0.5))[:2]
    out = cv2.warpAffine(x, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    pts = np.c_[target[:4].reshape(2, 2), np.ones(2)] @ A[:2].T
    if flip:
        pts = pts[::-1]
    side = target[4] * abs(A[0, 0])
    y = np.array([pts[0, 0] / W, pts[0, 1] / H, pts[1, 0] / W, pts[1, 1] / H, side / W], np.float32)
    return normalise(out), y


def _batches(scenes: SceneSet, order: np.ndarray, batch_size: int, rng: np.random.Generator | None,
             size: tuple[int, int]) -> Any:
    for start in range(0, len(order), batch_size):
        pairs = [augment(scenes.images[i], scenes.frames[i], scenes.targets[i], rng, size)
                 for i in order[start:start + batch_size]]
        yield (torch.from_numpy(np.stack([p[0] for p in pairs])[:, None]),
               torch.from_numpy(np.stack([p[1] for p in pairs])))


def _val_metrics(model: LocalizerNet, scenes: SceneSet, inputs: torch.Tensor,
                 size: tuple[int, int]) -> dict[str, float]:
    """Metrics in radiograph pixels of the model on the (letterboxed) validation radiographs."""
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(chunk) for chunk in inputs.split(64)]).numpy()
    boxes = [decode(p, f, size) for p, f in zip(pred, scenes.frames)]
    return localization_metrics(boxes, scenes.boxes, scenes.spacings)


def train_localizer(out_dir: str | os.PathLike, *, n_train: int = 500, n_val: int = 100, epochs: int = 40,
                    seed: int = 0, image_size: Sequence[int] = INPUT_SIZE, batch_size: int = 32,
                    lr: float = 3e-3, widths: Sequence[int] = WIDTHS, threads: int | None = None,
                    overwrite: bool = False, progress: bool = True,
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train a localiser on synthetic radiographs; write ``out_dir/localizer.pt`` and ``metrics.json``.

    ``image_size``: network input (height, width). ``threads``: torch threads for this call.
    Returns the metrics written to ``metrics.json``: ``val`` (held-out validation metrics of the kept
    weights, see :func:`~kneelib.radiograph.localizer.localization_metrics`), ``best_epoch``, timings, history.
    """
    size = (int(image_size[0]), int(image_size[1]))
    if not all(1 <= n <= 100_000 for n in (n_train, n_val, epochs, batch_size)):
        raise KneelibError("localize train: --n-train, --n-val, --epochs and the batch size must lie in 1..100000")
    if threads is not None and threads < 1:
        raise KneelibError(f"localize train: --threads {threads}: must be >= 1 (or left out: torch's default)")
    if min(size) < 32 or size[0] % 16 or size[1] % 16:
        raise KneelibError(f"localize train: image size {size} must be multiples of 16, at least 32")
    out = Path(out_dir)
    if (out / MODEL_FILE).exists() and not overwrite:
        raise KneelibError(f"{out / MODEL_FILE}: exists; choose another --out or pass --force")
    say = log or (lambda line: tqdm.write(line, file=sys.stdout))
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train(out, n_train=n_train, n_val=n_val, epochs=epochs, seed=seed, size=size,
                      batch_size=batch_size, lr=lr, widths=tuple(int(w) for w in widths),
                      progress=progress, say=say)
    finally:
        torch.set_num_threads(previous)


def _train(out: Path, *, n_train: int, n_val: int, epochs: int, seed: int, size: tuple[int, int],
           batch_size: int, lr: float, widths: tuple[int, ...], progress: bool,
           say: Callable[[str], None]) -> dict[str, Any]:
    tic = time.perf_counter()
    train_set = make_scenes(n_train, seed=seed, stream=TRAIN_STREAM, size=size, progress=progress,
                            desc="render train")
    val_set = make_scenes(n_val, seed=seed, stream=VAL_STREAM, size=size, progress=progress, desc="render val")
    val_inputs = torch.from_numpy(np.stack([augment(im, fr, t, None, size)[0] for im, fr, t in
                                            zip(val_set.images, val_set.frames, val_set.targets)])[:, None])
    data_seconds = time.perf_counter() - tic
    say(f"rendered {n_train} + {n_val} synthetic radiographs in {data_seconds:.1f} s")

    runtime.seed_everything(seed)
    model = LocalizerNet(widths)
    steps = epochs * math.ceil(n_train / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    scale = torch.tensor([size[1], size[0], size[1], size[0], size[1]], dtype=torch.float32)
    rng = np.random.default_rng([seed, 99])
    best, best_iou, best_epoch, history = None, -1.0, 0, []
    tic = time.perf_counter()
    with tqdm(total=steps, desc="localiser", unit="batch", disable=not progress, file=sys.stderr) as bar:
        for epoch in range(1, epochs + 1):
            model.train()
            total, seen = 0.0, 0
            for x, y in _batches(train_set, rng.permutation(n_train), batch_size, rng, size):
                loss = F.smooth_l1_loss(model(x) * scale, y * scale)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total, seen = total + loss.item() * len(x), seen + len(x)
                bar.update()
                bar.set_postfix(epoch=epoch, loss=f"{total / seen:.2f}", refresh=False)
            val = _val_metrics(model, val_set, val_inputs, size)
            history.append({"epoch": epoch, "train_loss": total / seen, "val_mean_iou": val["mean_iou"],
                            "val_centre_error_px_mean": val["centre_error_px_mean"]})
            if val["mean_iou"] > best_iou:
                best_iou, best_epoch = val["mean_iou"], epoch
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if progress:
                bar.set_postfix(epoch=epoch, loss=f"{total / seen:.2f}", val_iou=f"{val['mean_iou']:.3f}")
    train_seconds = time.perf_counter() - tic
    model.load_state_dict(best)
    config = {"input_size": list(size), "widths": list(widths), "seed": seed, "n_train": n_train, "n_val": n_val,
              "epochs": epochs, "batch_size": batch_size, "lr": lr}
    localizer = Localizer(model, config)
    val = _val_metrics(localizer.model, val_set, val_inputs, size)
    metrics = {"val": val, "best_epoch": best_epoch, "epochs": epochs, "data_seconds": round(data_seconds, 2),
               "train_seconds": round(train_seconds, 2), "config": config, "history": history}
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"format": FORMAT, "config": config, "state_dict": best}, out / MODEL_FILE)
    write_json(out / METRICS_FILE, metrics)
    say(f"localiser: val mean IoU {val['mean_iou']:.3f}, centre error {val['centre_error_px_mean']:.1f} px "
        f"({val['centre_error_mm_mean']:.1f} mm) at epoch {best_epoch}; {train_seconds:.0f} s training; "
        f"wrote {out / MODEL_FILE}")
    return metrics
