"""The from-scratch recipe on real crops: paper vs scratch, scratch without each ingredient, and per
architecture family the changes that make it learn. The results file's format is
:mod:`kneelib.report.recipe_ablation` (which writes and reads it).

Data: ``../shared/data/kneeKL224``. Checkpoints are selected on a patient-grouped 12.5% of the official
train split (``val'``); the official val split (826 crops) is held out and only evaluated, so the
reported accuracies are not the ones the selection saw. Each variant trains ``--arch`` (default ResNet-18)
from random weights at ``--image-size`` for ``--epochs`` with ``--seeds`` (CPU), and is scored as single
runs and as the seed ensemble.

    python benchmarks/recipe_ablation.py --out /tmp/ablation --json benchmarks/results/recipe_ablation_cpu.json
    python benchmarks/recipe_ablation.py --arch densenet121 --epochs 4 --seeds 21 --precision auto \
        --variants "scratch (peak lr 4e-3)" "peak lr 1e-3" --out /tmp/abl-dn --json benchmarks/results/recipe_densenet_cpu.json
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

from kneelib import cpu_pin  # noqa: E402

if "--no-pin" not in sys.argv:  # before torch loads (see --pin)
    cpu_pin.apply()

import torch  # noqa: E402

from kneelib.data.layout import discover, select_split  # noqa: E402
from kneelib.data.schemes import get_scheme  # noqa: E402
from kneelib.data.split import held_out_split, write_manifest  # noqa: E402
from kneelib.evaluate import evaluate_runs  # noqa: E402
from kneelib.report.recipe_ablation import conditions_record, save_ablation, variant_record  # noqa: E402
from kneelib.train import Runtime, TrainConfig, runtime, train  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "kneeKL224"
#: The first from-scratch recipe (kept to show why the current one differs): peak lr 2e-3, label smoothing 0.1,
#: a weight EMA (0.999) and class-balanced sampling on top of AdamW and warm-up + cosine.
V1 = {"lr": 2e-3, "label_smoothing": 0.1, "ema_decay": 0.999, "balanced": True}
#: Name → (recipe, the fields changed from it). The rounds, in the order they were run: the paper against
#: scratch v1; v1 without each ingredient that its first ablation questioned; one change at a time from the
#: best of those (no warm-up; peak 4e-3, which became the ``scratch`` recipe); then one change at a time
#: from ``scratch`` (the optimiser, the schedule).
VARIANTS: dict[str, tuple[str, dict]] = {
    "paper": ("paper", {}),
    "scratch v1": ("scratch", V1),
    "v1 - balanced sampling": ("scratch", {**V1, "balanced": False}),
    "v1 - EMA": ("scratch", {**V1, "ema_decay": 0.0}),
    "v1 - EMA - balanced": ("scratch", {**V1, "ema_decay": 0.0, "balanced": False}),
    "v1 - EMA - balanced - label smoothing": ("scratch", {"lr": 2e-3}),
    "that, without warm-up": ("scratch", {"lr": 2e-3, "warmup_epochs": 0}),
    "scratch (that, peak lr 4e-3)": ("scratch", {}),
    "scratch with Adam (L2 1e-4) for AdamW": ("scratch", {"optimizer": "adam", "weight_decay": 1e-4}),
    "scratch with step decay for warm-up + cosine": ("scratch", {"schedule": "step", "warmup_epochs": 0}),
}
#: The DenseNets (--arch densenet121 / se_densenet121): one change at a time from the ResNet-18 choice, its
#: fields spelled out (the ``scratch`` recipe's DenseNet fields are what this chose).
RESNET_SCRATCH = {"lr": 4e-3, "warmup_epochs": 1}
DENSENET_VARIANTS: dict[str, tuple[str, dict]] = {
    "scratch (peak lr 4e-3)": ("scratch", RESNET_SCRATCH),
    "peak lr 1e-3": ("scratch", {**RESNET_SCRATCH, "lr": 1e-3}),
    "peak lr 5e-4": ("scratch", {**RESNET_SCRATCH, "lr": 5e-4}),
    "peak lr 2.5e-4": ("scratch", {**RESNET_SCRATCH, "lr": 2.5e-4}),
}
VARIANTS.update(DENSENET_VARIANTS)


def make_manifest(out: Path) -> Path:
    """train → train' + val' (patient-grouped, 7:1), official val → test (held out)."""
    return write_manifest(held_out_split(discover(DATA), source=DATA), out / "manifest.csv", protocol="held-out")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[21, 42])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--scheme", default="kl5")
    parser.add_argument("--precision", default="fp32", help="fp32 (the committed ResNet-18 ablation), auto or bf16")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="pin the CPU kernels to AVX2 (default; --no-pin: the processor's own, e.g. bf16)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    manifest = make_manifest(args.out)
    inner = discover(manifest)
    val_inner = select_split(inner, "val")
    scheme = get_scheme(args.scheme)
    classes = [scheme.encode(s.grade) for s in val_inner]
    majority = max(classes.count(c) for c in range(scheme.num_classes)) / len(classes)
    results = json.loads(args.json.read_text()) if args.json and args.json.is_file() else {}
    pin = "AVX2 pin" if cpu_pin.in_effect() else "no pin"
    arithmetic = "bf16 autocast" if runtime.autocast_dtype(args.precision, torch.device("cpu")) else "fp32"
    results.setdefault("conditions", conditions_record(
        arch=args.arch, scheme=args.scheme, image_size=args.image_size, epochs=args.epochs, seeds=args.seeds,
        device=f"cpu ({os.cpu_count()} cores, {args.threads} threads, {pin}, {arithmetic})",
        val_prime_majority=majority, counts={k: len(select_split(inner, k)) for k in ("train", "val", "test")}))
    variants = results.setdefault("variants", {})
    for name in args.variants:
        recipe, changes = VARIANTS[name]
        runs, t0, trained = [], time.time(), False
        for seed in args.seeds:
            config = TrainConfig.from_recipe(recipe, arch=args.arch, scheme=args.scheme, seed=seed,
                                             epochs=args.epochs, image_size=args.image_size, weights=None,
                                             **changes)
            slug = name.replace(" ", "_").replace("/", "-").replace("(", "").replace(")", "").replace(",", "")
            status = args.out / f"{slug}_s{seed}" / "status.json"
            trained |= not (status.is_file() and json.loads(status.read_text()).get("finished"))
            run = train(config, runtime=Runtime(device="cpu", precision=args.precision), data_dir=manifest,
                        out_dir=args.out / f"{slug}_s{seed}", resume=True, progress=False, verbose=True).run_dir
            runs.append(run)
        metrics, _ = evaluate_runs(runs, manifest, split="test", device="cpu", progress=False)
        histories = [list(csv.DictReader((r / "history.csv").open())) for r in runs]
        # re-scoring finished runs (e.g. to add their learning curves) keeps the training time
        minutes = round((time.time() - t0) / 60, 1) if trained else variants.get(name, {}).get("minutes")
        variants[name] = variant_record(recipe, changes, seeds=args.seeds, histories=histories, metrics=metrics,
                                        majority=majority, minutes=minutes)
        print(f"{name}: held-out ensemble accuracy {100 * variants[name]['ensemble']['accuracy']:.1f}% "
              f"(epoch-1 val' {variants[name]['epoch1_val_acc']})", flush=True)
        if args.json:
            save_ablation(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
