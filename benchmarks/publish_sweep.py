"""Copy what a sweep measured into a folder fit for the repository: tables, Figs. 5-7, every run's learning curve.

    python benchmarks/publish_sweep.py runs/cpu figures/real-cpu --log /tmp/cpu-sweep.log [--log /tmp/resumed.log]

Copies ``OUT/tables/*.{md,csv}``, the figures that show no more than the paper's own figures do (``fig5_confusion``,
``fig6_roc``, ``fig7_probabilities``, ``reliability``), and per run ``history.csv`` plus the parts of
``config.json`` that say how it ran (recipe fields, image size, epochs, arithmetic, counts, versions) into DEST,
``DEST/histories.png`` (every run's val' accuracy per epoch), and ``DEST/sweep.json``: the runs' best epochs and val'
accuracies and, with ``--log`` (once per session of a sweep that was resumed or extended by a seed), the projected and
actual minutes as ``kneelib reproduce`` printed them, per session and summed over the sessions. Never copies images
of the data set.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("fig5_confusion.png", "fig6_roc.png", "fig7_probabilities.png", "reliability.png")
CONFIG_KEYS = ("arch", "scheme", "seed", "epochs", "image_size", "batch_size", "recipe", "optimizer", "lr",
               "weight_decay", "schedule", "warmup_epochs", "augment", "loss", "balanced", "weights", "precision",
               "execution", "counts", "threads", "cpu_kernels", "versions", "git_commit", "split_protocol")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the sweep's --out folder")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--log", type=Path, action="append", default=[],
                        help="what `kneelib reproduce` printed (projected and actual minutes); once per session")
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
    if args.log:
        summary.update(_timings([path.read_text() for path in args.log]))
    (args.dest / "sweep.json").write_text(json.dumps(summary, indent=1) + "\n")
    _histories_figure(args.dest, runs)
    table = _summary_table(args.out)
    if table:
        (args.dest / "summary.md").write_text(table)
    print(f"published {len(runs)} runs to {args.dest}")
    return 0


def _histories_figure(dest: Path, runs: dict) -> None:
    """``DEST/histories.png``: val' accuracy per epoch of the runs just published, a thin line per seed."""
    import pandas as pd

    from kneelib import report

    histories = {name: pd.read_csv(dest / "runs" / name / "history.csv") for name in sorted(runs)}
    if histories:
        report.save_figure(report.seed_histories_figure(histories), dest / "histories.png")


def _summary_table(out: Path) -> str:
    """Markdown: per architecture and scale, the reported split's accuracy (one seed: the run with its bootstrap 95%
    CI; several: the seeds' mean and their logit ensemble with its CI), QWK, and the paper's three-seed mean
    (Tables 4 and 5)."""
    from kneelib.pipeline.profiles import ALL_ARCHS
    from kneelib.report import paper

    cells, seeds = {}, 1
    for arch in ALL_ARCHS:
        for scheme in ("kl5", "kl4"):
            path = out / "eval" / f"{arch}_{scheme}" / "metrics.json"
            if not path.is_file():
                continue
            metrics = json.loads(path.read_text())
            m = metrics["ensemble"] or next(iter(metrics["models"].values()))
            seeds = max(seeds, len(metrics["models"]))
            low, high = (100 * v for v in m["ci"]["accuracy"])
            mean = sum(r["accuracy"] for r in metrics["models"].values()) / len(metrics["models"])
            published = {row.arch: row.accuracy for row in paper.RESULT_TABLES[scheme]}
            cells[arch, scheme] = (f"{100 * mean:.1f}", f"{100 * m['accuracy']:.1f} ({low:.1f}–{high:.1f})",
                                   f"{m['qwk']:.2f}", f"{published[arch]:.2f}")
    if not cells:
        return ""
    if seeds == 1:  # one run per model: its accuracy and CI, no mean to show
        cells = {key: value[1:] for key, value in cells.items()}
        head = "| model | 5-class acc % (95% CI) | QWK | paper | 4-class acc % (95% CI) | QWK | paper |"
    else:
        head = ("| model | 5-class: seeds' mean % | ensemble % (95% CI) | QWK | paper | 4-class: seeds' mean % | "
                "ensemble % (95% CI) | QWK | paper |")
    width = len(next(iter(cells.values())))
    lines = [head, "| " + " | ".join(["---"] * (1 + 2 * width)) + " |"]
    for arch in ALL_ARCHS:
        row = [paper.display_name(arch)]
        for scheme in ("kl5", "kl4"):
            row += list(cells.get((arch, scheme), ("–",) * width))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _timings(logs: list[str]) -> dict:
    """Projected minutes and the seconds each notebook took, per session (one log each) and summed over them: a
    sweep resumed or extended by a seed spends time in every session (a notebook whose runs all finished earlier
    only re-evaluates them, in seconds)."""
    sessions, total = [], {}
    for text in logs:
        text = text.replace(f"{REPO}/", "")  # the sweep's folders relative to the repository, not this machine's
        found = re.search(r"projected training time: ([\d.]+) min", text)
        projected = float(found.group(1)) if found else None
        found = re.search(r"reproduce \(\w+\) finished in ([\d.]+) min", text)
        finished = float(found.group(1)) if found else None
        seconds = {name: float(value)
                   for name, value in re.findall(r"^\[\d+/\d+\] (\S+): done in ([\d.]+) s", text, flags=re.M)}
        for name, value in seconds.items():
            total[name] = round(total.get(name, 0.0) + value, 1)
        train = sum(v for k, v in seconds.items() if k.startswith("03_train"))
        sessions.append({"projected_training_minutes": projected, "session_minutes": finished,
                         "training_notebook_minutes": round(train / 60, 1), "notebook_seconds": seconds,
                         "log_lines": [line for line in text.splitlines()
                                       if line.startswith(("[", "projected", "reproduce", "../", "/"))][:80]})
    train = sum(v for k, v in total.items() if k.startswith("03_train"))
    return {"sessions": sessions, "notebook_seconds": total, "training_notebook_minutes": round(train / 60, 1),
            "all_notebook_minutes": round(sum(total.values()) / 60, 1)}


if __name__ == "__main__":
    raise SystemExit(main())
