"""Copy what a sweep measured into a folder fit for the repository: tables, Figs. 5-7, every run's learning curve.

    python benchmarks/publish_sweep.py runs/cpu figures/real-cpu --log /tmp/cpu-sweep.log

Copies ``OUT/tables/*.{md,csv}``, the figures that show no more than the paper's own figures do (``fig5_confusion``,
``fig6_roc``, ``fig7_probabilities``, ``reliability``), and per run ``history.csv`` plus the parts of
``config.json`` that say how it ran (recipe fields, image size, epochs, arithmetic, counts, versions) into DEST,
and ``DEST/sweep.json``: the runs' best epochs and val' accuracies and, with ``--log``, the sweep's projected and
actual minutes as ``kneelib reproduce`` printed them. Never copies images of the data set.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

FIGURES = ("fig5_confusion.png", "fig6_roc.png", "fig7_probabilities.png", "reliability.png")
CONFIG_KEYS = ("arch", "scheme", "seed", "epochs", "image_size", "batch_size", "recipe", "optimizer", "lr",
               "weight_decay", "schedule", "warmup_epochs", "weights", "precision", "execution", "counts", "threads",
               "cpu_kernels", "versions", "git_commit", "split_protocol")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the sweep's --out folder")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--log", type=Path, help="what `kneelib reproduce` printed (projected and actual minutes)")
    args = parser.parse_args()
    if not (args.out / "runs").is_dir():
        print(f"publish_sweep: error: {args.out}: no runs/ folder", file=sys.stderr)
        return 2
    args.dest.mkdir(parents=True, exist_ok=True)
    for table in sorted((args.out / "tables").glob("*")):
        if table.suffix in (".md", ".csv"):
            shutil.copyfile(table, args.dest / table.name)
    for name in FIGURES:
        if (args.out / "figures" / name).is_file():
            shutil.copyfile(args.out / "figures" / name, args.dest / name)
    runs = {}
    for run in sorted((args.out / "runs").iterdir()):
        if not (run / "history.csv").is_file():
            continue
        (args.dest / "runs" / run.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / "history.csv", args.dest / "runs" / run.name / "history.csv")
        config = json.loads((run / "config.json").read_text())
        status = json.loads((run / "status.json").read_text())
        kept = {k: config.get(k) for k in CONFIG_KEYS}
        (args.dest / "runs" / run.name / "config.json").write_text(json.dumps(kept, indent=1) + "\n")
        runs[run.name] = {"best_epoch": status.get("best_epoch"), "best_val_prime_acc": status.get("best_val_acc"),
                          "finished": status.get("finished")}
    summary: dict = {"runs": runs}
    if args.log and args.log.is_file():
        text = args.log.read_text()
        projected = re.search(r"projected training time: (\d+) min", text)
        finished = re.search(r"reproduce \(\w+\) finished in ([\d.]+) min", text)
        summary["projected_training_minutes"] = int(projected.group(1)) if projected else None
        summary["sweep_minutes"] = float(finished.group(1)) if finished else None
        summary["log_lines"] = [line for line in text.splitlines() if line.startswith(("[", "projected", "reproduce",
                                                                                          "../", "/"))][:80]
    (args.dest / "sweep.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"published {len(runs)} runs to {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
