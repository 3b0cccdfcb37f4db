"""``kneelib evaluate``: runs + ensemble on a split → metrics.json, predictions CSV."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from kneelib.atomic import check_output_file


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
    ev.add_argument("--tta", action="store_true",
                    help="test-time augmentation: average each image's logits with its horizontal mirror's")
    ev.add_argument("--calibrate", action="store_true",
                    help="first fit each run's temperature on the val split (written to RUN_DIR/calibration.json); "
                    "runs with a calibration.json are always evaluated with it")
    ev.set_defaults(func=run_evaluate)


def warn_unfinished(runs: Iterable[tuple[str, str | os.PathLike]]) -> None:
    """One ``kneelib: warning:`` line on stderr per ``(name, RUN_DIR)`` whose training has not finished
    (``evaluate`` and ``export`` both say so)."""
    from kneelib.train.loop import run_status

    for name, path in runs:
        status = run_status(path)
        if status is not None and not status.get("finished", True):
            print(f"kneelib: warning: run {name} ({path}) has not finished training", file=sys.stderr)


def run_evaluate(args: argparse.Namespace) -> int:
    from kneelib.evaluate import (
        calibrate_runs,
        evaluate_runs,
        format_summary,
        save_metrics,
        save_predictions,
    )
    for path in (args.out, args.predictions):  # before the work: a bad path must not lose the results
        if path is not None:
            check_output_file(path)
    if args.calibrate:
        for name, record in calibrate_runs(args.run_dirs, args.data, device=args.device, batch_size=args.batch_size,
                                           tta=args.tta).items():
            print(f"{name}: temperature {record['temperature']:.3f} fitted on {record['fitted_on']} "
                  f"(NLL {record['nll_before']:.3f} → {record['nll_after']:.3f}, "
                  f"ECE {record['ece_before']:.3f} → {record['ece_after']:.3f})")
    metrics, predictions = evaluate_runs(
        args.run_dirs, args.data, split=args.split, device=args.device, batch_size=args.batch_size, tta=args.tta
    )
    warn_unfinished(metrics["runs"].items())
    print(format_summary(metrics))
    if args.out:
        save_metrics(metrics, args.out)
        print(f"metrics: {args.out}")
    if args.predictions:
        save_predictions(predictions, args.predictions)
        print(f"predictions: {args.predictions}")
    return 0
