"""``kneelib evaluate``: runs + ensemble on a split → metrics.json, predictions CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command."""
    ev = subparsers.add_parser(
        "evaluate",
        help="evaluate trained runs (and their logit-averaged ensemble) on a data split",
        description="Evaluate each RUN_DIR on a split of DIR with the preprocessing it recorded; with "
        "several runs also their ensemble (softmax of the mean logits). Prints a summary table; "
        "--out writes all metrics as JSON, --predictions a per-image CSV (one block of rows per model, "
        "column 'model'; the ensemble's rows have model 'ensemble').",
    )
    ev.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run directories")
    ev.add_argument("--data", required=True, metavar="DIR", help="data folder or manifest CSV")
    ev.add_argument("--split", default="test",
                    help="split to evaluate: train, val, test or all (default test)")
    ev.add_argument("--out", type=Path, metavar="JSON", help="write the metrics here (e.g. metrics.json)")
    ev.add_argument("--predictions", type=Path, metavar="CSV", help="write per-image predictions here")
    ev.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    ev.add_argument("--batch-size", type=int, default=64, help="inference batch size (default 64)")
    ev.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from kneelib.evaluate import (
        evaluate_runs,
        format_summary,
        save_metrics,
        save_predictions,
    )
    from kneelib.train.loop import run_status

    metrics, predictions = evaluate_runs(
        args.run_dirs, args.data, split=args.split, device=args.device, batch_size=args.batch_size
    )
    for name, path in metrics["runs"].items():
        status = run_status(path)
        if status is not None and not status.get("finished", True):
            print(f"kneelib: warning: run {name} ({path}) has not finished training", file=sys.stderr)
    print(format_summary(metrics))
    if args.out:
        save_metrics(metrics, args.out)
        print(f"metrics: {args.out}")
    if args.predictions:
        save_predictions(predictions, args.predictions)
        print(f"predictions: {args.predictions}")
    return 0
