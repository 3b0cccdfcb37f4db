"""Why the DenseNets miss issue #19's 2-epoch check: a probe of one change at a time, selected on val'.

The check (``benchmarks/arch_check.py``) trains 2 epochs on 2,900 crops (about 160 steps of 32). Here the same
budget runs on train' (the official train split re-split 7:1 by patient, ``--limit`` stratified) with the
checkpoint chosen on val'; the official val split is held out. Each probe trains ``--arch`` with the ``scratch``
recipe plus CHANGES (JSON: TrainConfig fields), then scores the last weights on val' and on the official val
split twice: as trained (BatchNorm running statistics) and after recomputing every BatchNorm's statistics on 640
train' crops without augmentation ("precise BN"), to tell slow learning from stale statistics. It also records
which classes the model predicts on val'. One JSON line per run is appended to ``--jsonl``.

``--patch`` (JSON) tries what TrainConfig has no field for, by replacing the recipe's optimizer or schedule in
this process only: ``head_lr_mult`` (the head's learning rate times this), ``betas`` (Adam's), ``constant_lr``
(the warm-up, then the peak rate to the end instead of the cosine), ``trust_lr`` (LAMB: every weight matrix or
kernel steps by this fraction of its own norm at the peak, ``||w|| / ||u||`` times Adam's direction ``u``, while
biases and BatchNorm parameters keep the recipe's AdamW rate). ``--trace FILE`` appends one JSON line per
training step: loss, the batch's predicted classes, the mean logit per class and the logits' spread over the
batch (their standard deviation per class, averaged: how much the prediction depends on the image).

    python benchmarks/densenet_probe.py base --seeds 21 42 --out /tmp/dnp --jsonl benchmarks/results/densenet_probe_cpu.jsonl
    python benchmarks/densenet_probe.py lr2e-3 '{"lr": 0.002}' --seeds 21 42 --out /tmp/dnp --jsonl ...
    python benchmarks/densenet_probe.py head10 --patch '{"head_lr_mult": 10}' --seeds 21 42 --out /tmp/dnp --jsonl ...
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from kneelib.data.layout import discover, select_split  # noqa: E402
from kneelib.data.schemes import get_scheme  # noqa: E402
from kneelib.data.split import held_out_split, write_manifest  # noqa: E402
from kneelib.evaluate.inference import input_batch  # noqa: E402
from kneelib.models.registry import build_model, get_spec  # noqa: E402
from kneelib.train import TrainConfig, optim, steps, train  # noqa: E402
from kneelib.train.checkpoint import LAST  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "kneeKL224"
RECALIBRATION_CROPS = 640


def crops(samples: list, scheme_name: str, image_size: int, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs and labels of ``samples`` (every k-th one when ``n`` is given), without augmentation."""
    if n:
        samples = samples[:: max(1, len(samples) // n)][:n]
    scheme = get_scheme(scheme_name)
    x = input_batch([s.path for s in samples], image_size=image_size, clahe=False)
    return x, torch.tensor([scheme.encode(s.grade) for s in samples])


def scored(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: int) -> tuple[float, list[int]]:
    """Accuracy and the count of each predicted class."""
    with torch.no_grad():
        predicted = torch.cat([model(x[i:i + 128]).argmax(1) for i in range(0, len(x), 128)])
    return float((predicted == y).float().mean()), np.bincount(predicted.numpy(), minlength=classes).tolist()


def recalibrate(model: nn.Module, x: torch.Tensor) -> None:
    """Recompute every BatchNorm's running statistics as the plain mean over ``x`` (batches of 32)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 32):
            model(x[i:i + 32])
    model.eval()


class Lamb(torch.optim.Optimizer):
    """Adam's direction with decoupled weight decay; a group with ``trust`` scales each tensor's step by its norm's
    ratio to the direction's (You et al. 2020), so every layer moves by the same fraction of its weights."""

    def __init__(self, groups: list[dict], *, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        super().__init__(groups, {"lr": 1e-3, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                                  "trust": False})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["step"] += 1
                t = state["step"]
                state["m"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                u = (state["m"] / (1 - beta1 ** t)) / ((state["v"] / (1 - beta2 ** t)).sqrt() + group["eps"])
                u.add_(p, alpha=group["weight_decay"])
                ratio = 1.0
                if group["trust"]:
                    w_norm, u_norm = float(p.norm()), float(u.norm())
                    ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
                p.add_(u, alpha=-group["lr"] * ratio)


def apply_patch(patch: dict) -> None:
    """Replace the recipe's optimizer / schedule in this process as ``patch`` asks (see the module's docstring)."""
    unknown = set(patch) - {"head_lr_mult", "betas", "constant_lr", "trust_lr"}
    if unknown:
        raise SystemExit(f"densenet_probe.py: unknown --patch keys {sorted(unknown)}")

    betas = tuple(patch.get("betas", (0.9, 0.999)))

    def make_optimizer(model: nn.Module, config: TrainConfig, *, fused: bool,
                       capturable: bool = False) -> torch.optim.Optimizer:
        if "trust_lr" in patch:
            matrices = [p for p in model.parameters() if p.ndim > 1]
            return Lamb([{"params": matrices, "lr": patch["trust_lr"], "trust": True},
                         {"params": [p for p in model.parameters() if p.ndim <= 1], "lr": config.lr}],
                        betas=betas, weight_decay=config.weight_decay)
        kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        head = {id(p) for p in getattr(model, get_spec(config.arch).head).parameters()}
        groups = [{"params": [p for p in model.parameters() if id(p) not in head], "lr": config.lr},
                  {"params": [p for p in model.parameters() if id(p) in head],
                   "lr": config.lr * patch.get("head_lr_mult", 1.0)}]
        return kind(groups, lr=config.lr, weight_decay=config.weight_decay, betas=betas, fused=fused)

    def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                       steps_per_epoch: int) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
        warmup = optim.warmup_steps(config, steps_per_epoch)
        factor = (lambda step: (step + 1) / warmup if step < warmup else 1.0)  # noqa: E731
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True

    if patch.keys() & {"head_lr_mult", "betas", "trust_lr"}:
        optim.make_optimizer = make_optimizer
    if patch.get("constant_lr"):
        optim.make_scheduler = make_scheduler


def trace_steps(path: Path) -> None:
    """Append one JSON line per training step to ``path`` (see the module's docstring)."""
    call = steps.EagerStep.__call__

    def traced(self: steps.EagerStep, images: torch.Tensor, targets: torch.Tensor, *,
               capture: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        loss, logits = call(self, images, targets, capture=capture)
        if self.optimizer is not None:
            z = logits.float()
            row = {"loss": round(float(loss), 4),
                   "predicted": torch.bincount(z.argmax(1), minlength=z.shape[1]).tolist(),
                   "mean_logit": [round(v, 3) for v in z.mean(0).tolist()],
                   "spread": round(float(z.std(0).mean()), 4)}
            with path.open("a") as out:
                out.write(json.dumps(row) + "\n")
        return loss, logits

    steps.EagerStep.__call__ = traced


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("changes", nargs="?", default="{}", help="JSON: TrainConfig fields over the recipe's")
    parser.add_argument("--arch", default="densenet121")
    parser.add_argument("--scheme", default="kl5")
    parser.add_argument("--seeds", nargs="+", type=int, default=[21])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=2900)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jsonl", type=Path)
    parser.add_argument("--patch", default="{}", help="JSON: optimizer / schedule changes (module docstring)")
    parser.add_argument("--trace", type=Path, help="append one JSON line per training step here")
    args = parser.parse_args()
    patch = json.loads(args.patch)
    apply_patch(patch)
    if args.trace:
        trace_steps(args.trace)
    torch.set_num_threads(args.threads)
    manifest = args.out / "manifest.csv"
    if not manifest.is_file():
        args.out.mkdir(parents=True, exist_ok=True)
        write_manifest(held_out_split(discover(DATA), source=DATA), manifest, protocol="held-out")
    inner = discover(manifest)
    classes = get_scheme(args.scheme).num_classes
    val_x, val_y = crops(select_split(inner, "val"), args.scheme, args.image_size)
    test_x, test_y = crops(select_split(inner, "test"), args.scheme, args.image_size)
    train_x, _ = crops(select_split(inner, "train"), args.scheme, args.image_size, RECALIBRATION_CROPS)
    changes = json.loads(args.changes)
    for seed in args.seeds:
        config = TrainConfig.from_recipe("scratch", arch=args.arch, scheme=args.scheme, seed=seed, epochs=args.epochs,
                                         image_size=args.image_size, limit=args.limit, threads=args.threads,
                                         device="cpu", **changes)
        tic = time.time()
        run = train(config, data_dir=manifest, out_dir=args.out / f"{args.name}_{args.arch}_s{seed}", resume=True,
                    progress=False, verbose=False)
        minutes = (time.time() - tic) / 60
        history = list(csv.DictReader((run / "history.csv").open()))
        model = build_model(args.arch, num_classes=classes)
        state = torch.load(run / LAST, weights_only=False)
        model.load_state_dict(state["model"] if "model" in state else state)
        model.eval()
        val, val_predicted = scored(model, val_x, val_y, classes)
        test, _ = scored(model, test_x, test_y, classes)
        recalibrate(model, train_x)
        precise_val, precise_predicted = scored(model, val_x, val_y, classes)
        precise_test, _ = scored(model, test_x, test_y, classes)
        row = {"name": args.name, "arch": args.arch, "scheme": args.scheme, "seed": seed, "changes": changes,
               **({"patch": patch} if patch else {}), "lr": config.lr, "minutes": round(minutes, 1),
               "conditions": f"scratch recipe + changes, {args.epochs} epochs, {args.image_size} px, --limit "
                             f"{args.limit} of train', {args.threads} threads, cpu ({os.cpu_count()} cores)",
               "val_prime_by_epoch": [round(float(h["val_acc"]), 4) for h in history],
               "train_loss_by_epoch": [round(float(h["train_loss"]), 4) for h in history],
               "last_val_prime": round(val, 4), "last_val_prime_predicted": val_predicted,
               "last_official_val": round(test, 4),
               "precise_bn_val_prime": round(precise_val, 4), "precise_bn_val_prime_predicted": precise_predicted,
               "precise_bn_official_val": round(precise_test, 4)}
        print(json.dumps(row), flush=True)
        if args.jsonl:
            with args.jsonl.open("a") as out:
                out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
