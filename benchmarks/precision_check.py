"""The CPU's bf16 path in the real training loop: as fast as promised, and as accurate as fp32?

Trains each ``--archs`` twice from random weights with the ``scratch`` recipe — ``--precision fp32`` and
``--precision bf16`` (autocast, channels-last) — at the ``cpu`` profile's settings (64 px, 4 epochs, batch 32,
2 threads, not pinned) on ``../shared/data/kneeKL224``: trained on train', selected on val', scored on the
held-out official val split. Records per run the training images/s of every epoch (the loop's own figure, data
pipeline included), the val' curve and the held-out accuracy with its bootstrap 95% interval. Run it on an
otherwise idle machine: the speeds are the point.

    python benchmarks/precision_check.py --out /tmp/precision --json benchmarks/results/precision_cpu.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kneelib import cpu_pin  # noqa: E402
from kneelib.evaluate import evaluate_runs  # noqa: E402
from kneelib.train import Runtime, TrainConfig, train  # noqa: E402
from kneelib.data.layout import discover  # noqa: E402
from kneelib.data.split import held_out_split, write_manifest  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "kneeKL224"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--archs", nargs="+", default=["resnet18", "densenet121"])
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if cpu_pin.in_effect():
        raise SystemExit("the CPU pin is in effect: bf16 would be emulated; unset the pinned variables")
    manifest = write_manifest(held_out_split(discover(DATA), source=DATA), args.out / "manifest.csv",
                              protocol="held-out")
    report = {"conditions": {
        "data": "kneeKL224: train' (5,056) / val' (722) from the official train split; official val (826) held out",
        "recipe": "scratch", "image_size": args.image_size, "epochs": args.epochs, "batch_size": 32,
        "seed": args.seed, "threads": args.threads, "processor": platform.processor() or platform.machine(),
        "native_bf16": cpu_pin.native_bf16(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "runs": {}}
    for arch in args.archs:
        for precision in ("fp32", "bf16"):
            config = TrainConfig.from_recipe("scratch", arch=arch, seed=args.seed, epochs=args.epochs,
                                             image_size=args.image_size)
            run = train(config, runtime=Runtime(device="cpu", threads=args.threads, precision=precision),
                        data_dir=manifest, out_dir=args.out / f"{arch}_{precision}", resume=True,
                        progress=False).run_dir
            metrics, _ = evaluate_runs([run], manifest, split="test", device="cpu", progress=False)
            m = next(iter(metrics["models"].values()))
            history = list(csv.DictReader((run / "history.csv").open()))
            n_train = json.loads((run / "config.json").read_text())["counts"]["train"]
            report["runs"][f"{arch} {precision}"] = {
                "epoch_seconds": [float(r["seconds"]) for r in history],
                "val_prime_acc": [float(r["val_acc"]) for r in history],
                "heldout_accuracy": m["accuracy"], "heldout_ci": m["ci"]["accuracy"], "heldout_qwk": m["qwk"],
                "train_images": n_train}
            print(f"{arch} {precision}: epochs {[r['seconds'] for r in history]} s, held-out "
                  f"{100 * m['accuracy']:.1f}%", flush=True)
    for arch in args.archs:
        fp32, bf16 = (report["runs"][f"{arch} {p}"] for p in ("fp32", "bf16"))
        report[f"{arch} speed-up (steady epochs)"] = round(
            sum(fp32["epoch_seconds"][1:]) / sum(bf16["epoch_seconds"][1:]), 2)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
