"""Where a CPU's hours pay: accuracy against image size, epochs and the recipe's budget-dependent parts.

Each point is one training run from random weights on the real crops (``../shared/data/kneeKL224``): trained on
train' (the official train split less a patient-grouped eighth), its checkpoint chosen on that eighth (val'),
then scored once on the official val split (826 crops, never used for selection). A point is a variant of
the ``scratch`` recipe (``--variants``, one change at a time), an architecture, a size, an epoch count and a
seed; each finished point is one JSON line in ``--jsonl`` (kept across calls: a point already there is
skipped, a killed run resumes). The CPU kernels are not pinned (bf16 autocast where the processor has it),
threads are governed (:mod:`kneelib.train.threads`), so times measured beside other work are marked as such.

    python benchmarks/budget_curves.py --arch resnet18 --sizes 64 --epochs 8 \\
        --variants scratch flip-only no-warm-up --out /tmp/curves --jsonl benchmarks/results/budget_curves_cpu.jsonl
    python benchmarks/budget_curves.py --timing --sizes 64 96 128 --json benchmarks/results/epoch_seconds_cpu.json

``--timing`` writes the seconds of one epoch (train' and val') of every architecture at each size, from the
projection's timed steps (:func:`kneelib.pipeline.projection.project_sweep`), and trains nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from kneelib import cpu_pin, report  # noqa: E402
from kneelib.data.layout import discover, select_split  # noqa: E402
from kneelib.data.split import held_out_split, write_manifest  # noqa: E402
from kneelib.evaluate import evaluate_runs  # noqa: E402
from kneelib.pipeline.profiles import ALL_ARCHS  # noqa: E402
from kneelib.pipeline.projection import project_sweep  # noqa: E402
from kneelib.report.paper import display_name  # noqa: E402
from kneelib.train import Runtime, TrainConfig, runtime, train  # noqa: E402
from kneelib.train.checkpoint import read_history  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "kneeKL224"
#: Name → the fields changed from the ``scratch`` recipe (one change at a time, then what combines them).
VARIANTS: dict[str, dict] = {
    "scratch": {},
    "flip-only": {"augment": 0.0},
    "half-augment": {"augment": 0.5},
    "no-warm-up": {"warmup_epochs": 0},
    "flip-only, no warm-up": {"augment": 0.0, "warmup_epochs": 0},
    "peak lr 1e-3": {"lr": 1e-3},
    "peak lr 2e-3": {"lr": 2e-3},
    # the grades the models never predict: one change at a time on top of flip-only
    "flip-only, balanced sampling": {"augment": 0.0, "balanced": True},
    "flip-only, class-weighted loss": {"augment": 0.0, "loss": "class_weighted"},
    "flip-only, corn": {"augment": 0.0, "loss": "corn"},
}


def held_out_manifest(out: Path) -> Path:
    """train → train' + val' (patient-grouped, 7:1), official val → test (held out), once per ``out``."""
    manifest = out / "data" / "manifest.csv"
    if not manifest.is_file():
        write_manifest(held_out_split(discover(DATA), source=DATA), manifest, protocol="held-out")
    return manifest


def device_line(threads: int) -> str:
    """The conditions a time was measured under."""
    arithmetic = "bf16 autocast" if runtime.autocast_dtype("auto", torch.device("cpu")) else "fp32"
    return f"cpu {cpu_pin.processor_name()} ({os.cpu_count()} cores, {threads} threads, {arithmetic})"


def run_slug(arch: str, scheme: str, size: int, epochs: int, variant: str, seed: int) -> str:
    """The folder of one point's run under ``--out``."""
    return f"{arch}_{scheme}_{size}px_{epochs}ep_{variant.replace(' ', '').replace(',', '+')}_s{seed}"


def scores(run: Path, manifest: Path, split: str, prefix: str) -> tuple[dict, dict]:
    """The kept checkpoint on ``split``: its QWK, balanced accuracy, per-class recall and the median rule's numbers
    as ``<prefix>_...`` fields (``val_prime``: val', where variants are chosen; ``val``: the official val split), and
    the metrics they came from."""
    metrics, predictions = evaluate_runs([run], manifest, split=split, device="cpu", progress=False)
    m = next(iter(metrics["models"].values()))
    return {f"{prefix}_qwk": m["qwk"], f"{prefix}_balanced_accuracy": m["balanced_accuracy"],
            f"{prefix}_recall": {name: round(c["recall"], 4) for name, c in m["per_class"].items()},
            f"{prefix}_median_rule": median_rule(predictions)}, m


def point(args: argparse.Namespace, manifest: Path, arch: str, size: int, epochs: int, variant: str,
          seed: int) -> dict:
    """Train (or resume) one run and score its val'-chosen checkpoint on val' and on the official val split."""
    config = TrainConfig.from_recipe("scratch", arch=arch, scheme=args.scheme, seed=seed, epochs=epochs,
                                     image_size=size, weights=None, **VARIANTS[variant])
    tic = time.time()
    run = train(config, runtime=Runtime(device="cpu"), data_dir=manifest,
                out_dir=args.out / run_slug(arch, args.scheme, size, epochs, variant, seed), resume=True,
                progress=False, verbose=True, keep_last=False).run_dir
    minutes = (time.time() - tic) / 60
    history = read_history(run / "history.csv")
    official, m = scores(run, manifest, "test", "val")
    selection, _ = scores(run, manifest, "val", "val_prime")
    return {
        "arch": arch, "scheme": args.scheme, "image_size": size, "epochs": epochs, "variant": variant,
        "changes": VARIANTS[variant], "seed": seed, "minutes": round(minutes, 2),
        "epoch_seconds": [row["seconds"] for row in history],
        "val_prime_acc": [round(row["val_acc"], 4) for row in history],
        "best_epoch": max(range(len(history)), key=lambda i: (history[i]["val_acc"], -i)) + 1,
        "val_accuracy": m["accuracy"], "val_ci": m["ci"]["accuracy"], **official, **selection,
        "device": device_line(torch.get_num_threads()), "alone": not args.shared,
    }


def median_rule(predictions: pd.DataFrame) -> dict:
    """Accuracy, QWK and balanced accuracy when each crop's grade is the median of its predicted distribution (the
    number of ``P(grade > k) > 0.5``, CORN's published rule) instead of the most probable grade."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, cohen_kappa_score

    columns = [c for c in predictions.columns if c.startswith("p_")]  # the scheme's classes, in order
    probs = predictions[columns].to_numpy()
    above = 1 - np.cumsum(probs, axis=1)[:, :-1]  # P(grade > k)
    index = {c.removeprefix("p_"): i for i, c in enumerate(columns)}
    pred, true = (above > 0.5).sum(axis=1), predictions["true"].map(index).to_numpy()
    return {"accuracy": accuracy_score(true, pred), "qwk": cohen_kappa_score(true, pred, weights="quadratic"),
            "balanced_accuracy": balanced_accuracy_score(true, pred)}


def rescore(args: argparse.Namespace) -> int:
    """Give the rows of ``--jsonl`` written before :func:`point` recorded them (and whose run is still under
    ``--out``) the val' metrics of the kept checkpoint and the median rule's on val' and official val."""
    manifest = held_out_manifest(args.out)
    rows = [json.loads(line) for line in args.jsonl.read_text().splitlines()]
    for row in rows:
        slug = run_slug(row["arch"], row["scheme"], row["image_size"], row["epochs"], row["variant"], row["seed"])
        if "val_median_rule" in row or not (args.out / slug / "best.pt").is_file():
            continue
        for split, prefix in (("val", "val_prime"), ("test", "val")):
            found, _ = scores(args.out / slug, manifest, split, prefix)
            row.update({k: v for k, v in found.items() if k not in row})
        print(f"rescored {slug}", flush=True)
    args.jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return 0


def curves(args: argparse.Namespace) -> int:
    """Train every requested point not yet in ``--jsonl``."""
    manifest = held_out_manifest(args.out)
    done = set()
    if args.jsonl.is_file():
        for line in args.jsonl.read_text().splitlines():
            row = json.loads(line)
            done.add((row["arch"], row["scheme"], row["image_size"], row["epochs"], row["variant"], row["seed"]))
    for variant in args.variants:
        for arch in args.arch:
            for size in args.sizes:
                for epochs in args.epochs:
                    for seed in args.seeds:
                        if (arch, args.scheme, size, epochs, variant, seed) in done:
                            continue
                        row = point(args, manifest, arch, size, epochs, variant, seed)
                        with args.jsonl.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                        print(f"{arch} {size}px x{epochs} {variant!r} s{seed}: official val "
                              f"{100 * row['val_accuracy']:.1f}% QWK {row['val_qwk']:.2f} in {row['minutes']:.1f} min",
                              flush=True)
    return 0


def timing(args: argparse.Namespace) -> int:
    """Seconds of one epoch (train' + val') of every architecture at each size, from timed steps."""
    manifest = held_out_manifest(args.out)
    samples = discover(manifest)
    counts = {name: len(select_split(samples, name)) for name in ("train", "val", "test")}
    table = {}
    for size in args.sizes:
        projection = project_sweep(args.arch, counts, epochs=1, image_size=size, batch_size=32, runs_per_arch=1)
        table[str(size)] = {arch: round(projection.epoch_seconds(arch), 1) for arch in args.arch}
        print(size, table[str(size)], flush=True)
    args.json.write_text(json.dumps({
        "what": "seconds of one training epoch over train' and one pass over val' (batch 32), from 2 rounds of 3 "
                "timed steps per architecture (the faster round); the data pipeline not included",
        "counts": counts, "device": device_line(torch.get_num_threads()), "alone": not args.shared,
        "seconds": table}, indent=1) + "\n")
    return 0


def publish(args: argparse.Namespace) -> int:
    """The curves ``kneelib reproduce --hours`` reads: mean best val' accuracy per arch, size and epochs of
    ``--variants[0]`` over the seeds measured, written to ``kneelib/pipeline/assets/budget_curves.json``."""
    variant = args.variants[0]
    every = [json.loads(line) for line in args.jsonl.read_text().splitlines()]
    rows = [r for r in every if r["variant"] == variant and r["scheme"] == args.scheme
            and (not args.arch or r["arch"] in args.arch)]  # --arch: the architectures whose curves choose
    points: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in rows:
        by_epochs = points.setdefault(r["arch"], {}).setdefault(str(r["image_size"]), {})
        by_epochs.setdefault(str(r["epochs"]), []).append(max(r["val_prime_acc"]))
    accuracy = {arch: {size: {e: round(sum(v) / len(v), 4) for e, v in sorted(by_e.items(), key=lambda x: int(x[0]))}
                       for size, by_e in by_size.items()} for arch, by_size in points.items()}
    seeds = sorted({r["seed"] for r in rows})
    document = {
        "what": "best val' accuracy (the selection split) by architecture, image size and epochs, mean over seeds "
                f"{seeds}: the learning curves that --hours chooses from",
        "conditions": f"kneeKL224 train' (5,056 crops) / val' (722), {args.scheme}, random weights, the scratch recipe "
                      f"with {VARIANTS[variant] or 'no change'}, batch 32, CPU bf16 autocast",
        "source": "benchmarks/results/budget_curves_cpu.jsonl (benchmarks/budget_curves.py --publish)",
        "recipe_changes": VARIANTS[variant], "accuracy": accuracy,
    }
    target = REPO / "kneelib" / "pipeline" / "assets" / "budget_curves.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(document, indent=1) + "\n")
    figures = REPO / "figures" / "cpu-budget"
    report.save_table(report.budget_table(every), figures, "curves")
    report.save_figure(report.budget_curves_figure(every, variant=variant), figures / "curves.png")
    if args.json.is_file():
        seconds = json.loads(args.json.read_text())["seconds"]
        table = pd.DataFrame(seconds).rename(index=display_name)
        table.columns = [f"{size} px" for size in table.columns]
        table.attrs["formats"] = {c: "{:.0f}" for c in table.columns}
        report.save_table(table.rename_axis("seconds per epoch"), figures, "epoch_seconds")
    print(f"wrote {target} and {figures}")
    return 0


#: ``--grid``: the cpu profile's whole grid, or the paper's featured pair (DenseNet-121 with and without SE blocks,
#: both scales, five seeds).
GRIDS = {"cpu": {}, "featured": {"archs": ["densenet121", "se_densenet121"], "seeds": [21, 42, 84, 126, 168]}}


def choose(args: argparse.Namespace) -> int:
    """What ``kneelib reproduce --profile cpu --hours H`` chooses for each of ``--choose``'s budgets on this machine
    (``--grid``'s), timed once; written beside ``--json`` as budget_choices_<grid>_cpu.json."""
    from kneelib.pipeline import get_profile
    from kneelib.pipeline.budget import choose_budget, grid_timer, load_curves

    profile = get_profile("cpu", **GRIDS[args.grid])
    curves = load_curves().for_archs(profile.archs)
    grid_seconds = grid_timer(profile, DATA, curves.sizes, device="cpu", augment=curves.augment)
    choices = [choose_budget(hours, grid_seconds, curves) for hours in args.choose]
    for budget in choices:
        print(budget.describe(), flush=True)
    name = "budget_choices_cpu.json" if args.grid == "cpu" else f"budget_choices_{args.grid}_cpu.json"
    out = args.json.parent / name
    out.write_text(json.dumps({
        "grid": f"{len(profile.archs)} architectures x {len(profile.schemes)} schemes x {len(profile.seeds)} seeds "
                f"({args.grid}: {', '.join(profile.archs)}; seeds {profile.seeds}), one run at a time",
        "curves": sorted(curves.accuracy), "device": device_line(torch.get_num_threads()),
        "alone": not args.shared, "choices": [dict(vars(b), recipe_changes=dict(b.recipe_changes)) for b in choices],
        "projected_hours": {f"{size} px x {epochs}": round(grid_seconds(size, epochs) / 3600, 2)
                            for size in curves.sizes for epochs in (4, 8, 12, 16)}}, indent=1) + "\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/budget-curves"))
    parser.add_argument("--jsonl", type=Path, default=REPO / "benchmarks" / "results" / "budget_curves_cpu.jsonl")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "epoch_seconds_cpu.json")
    parser.add_argument("--arch", nargs="+", default=None)
    parser.add_argument("--scheme", default="kl5")
    parser.add_argument("--sizes", nargs="+", type=int, default=[64])
    parser.add_argument("--epochs", nargs="+", type=int, default=[8])
    parser.add_argument("--variants", nargs="+", default=["scratch"], choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[21])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shared", action="store_true", help="the machine runs other work too (recorded)")
    parser.add_argument("--timing", action="store_true", help="time every architecture's epoch; train nothing")
    parser.add_argument("--choose", nargs="+", type=float, metavar="HOURS",
                        help="print and record what --hours chooses for these budgets; train nothing")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="cpu",
                        help="with --choose: the cpu profile's whole grid (default) or the featured pair")
    parser.add_argument("--rescore", action="store_true",
                        help="add val' metrics and the median rule's to the rows whose runs are under --out")
    parser.add_argument("--publish", action="store_true",
                        help="write kneelib/pipeline/assets/budget_curves.json from --jsonl's rows of --variants[0]")
    args = parser.parse_args()
    if args.publish:
        return publish(args)
    if args.rescore:
        return rescore(args)
    if args.choose:
        torch.set_num_threads(args.threads)
        return choose(args)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.timing:
        args.arch = args.arch or list(ALL_ARCHS)
        return timing(args)
    args.arch = args.arch or ["resnet18"]
    return curves(args)


if __name__ == "__main__":
    raise SystemExit(main())
