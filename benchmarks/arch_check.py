"""Does every architecture leave the class prior quickly from random weights? Issue #19's check, as its table.

For each architecture: ``kneelib train --recipe scratch --arch X --scheme kl5 --seed 21 --epochs 2
--image-size 64 --limit 2900 --threads 2`` on ``../shared/data/kneeKL224`` (2,900 stratified train crops; the
checkpoint chosen on the official val split, whose majority class is 39.7%), each architecture with its
family's recipe fields. Writes each run's validation accuracy per epoch and its best to ``--json``.

    python benchmarks/arch_check.py --out /tmp/arch-check --json benchmarks/results/arch_check_cpu.json
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

from kneelib.data.layout import discover, select_split  # noqa: E402
from kneelib.data.schemes import get_scheme  # noqa: E402
from kneelib.models import list_models  # noqa: E402
from kneelib.train import TrainConfig, train  # noqa: E402
from kneelib.train.recipes import recipe_fields  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "kneeKL224"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--archs", nargs="+", default=list_models())
    parser.add_argument("--scheme", default="kl5")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=2900)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    scheme = get_scheme(args.scheme)
    classes = [scheme.encode(s.grade) for s in select_split(discover(DATA), "val")]
    prior = max(classes.count(c) for c in range(scheme.num_classes)) / len(classes)
    results = json.loads(args.json.read_text()) if args.json and args.json.is_file() else {}
    results["conditions"] = {
        "data": "kneeKL224 (Chen 2018): official train split, --limit stratified; checkpoint chosen on the official "
                "val split", "command": f"kneelib train --recipe scratch --arch X --scheme {args.scheme} --seed "
                f"{args.seed} --epochs {args.epochs} --image-size {args.image_size} --limit {args.limit} --threads "
                f"{args.threads}", "precision": args.precision, "majority_class": prior,
        "device": f"cpu ({os.cpu_count()} cores, {args.threads} threads)"}
    runs = results.setdefault("runs", {})
    for arch in args.archs:
        config = TrainConfig.from_recipe("scratch", arch=arch, scheme=args.scheme, seed=args.seed, epochs=args.epochs,
                                         image_size=args.image_size, limit=args.limit, threads=args.threads,
                                         precision=args.precision, device="cpu")
        tic = time.time()
        run = train(config, data_dir=DATA, out_dir=args.out / arch, resume=True, progress=False)
        history = list(csv.DictReader((run / "history.csv").open()))
        val = [float(r["val_acc"]) for r in history]
        runs[arch] = {"val_acc": val, "best_val_acc": max(val), "above_prior_pp": 100 * (max(val) - prior),
                      "recipe_fields": recipe_fields("scratch", arch), "minutes": round((time.time() - tic) / 60, 1)}
        print(f"{arch}: val {['%.1f' % (100 * v) for v in val]} (prior {100 * prior:.1f}%)", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
