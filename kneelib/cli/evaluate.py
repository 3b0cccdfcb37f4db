"""``kneelib evaluate`` (runs + ensemble on a split → metrics.json, predictions CSV) and
``kneelib predict`` (grade image files with one run or an ensemble)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kneelib.errors import KneelibError

#: File suffixes that mark the start of the image list in ``predict --runs RUN... IMAGE...``.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` and ``predict`` sub-commands."""
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

    pr = subparsers.add_parser(
        "predict",
        help="grade knee crops with one run or an ensemble of runs",
        description="Print the predicted grade and every class probability for each IMAGE, using the "
        "preprocessing the runs recorded; several runs are combined like in evaluate.",
    )
    pr.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR", help="training run directories")
    pr.add_argument("images", nargs="*", metavar="IMAGE", help="knee crop images (PNG/JPEG)")
    pr.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pr.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    pr.set_defaults(func=run_predict)


def run_evaluate(args: argparse.Namespace) -> int:
    from kneelib.evaluate import evaluate_runs, format_summary, save_metrics, save_predictions
    from kneelib.train import run_status

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


def split_runs_and_images(runs: list[str], images: list[str]) -> tuple[list[str], list[str]]:
    """Allow ``--runs R1 R2 IMG1 IMG2``: the run list ends at the first image-like path."""
    if images:
        return runs, images
    for i, item in enumerate(runs):
        path = Path(item)
        if path.suffix.lower() in IMAGE_SUFFIXES or path.is_file():
            return runs[:i], runs[i:]
    return runs, []


def run_predict(args: argparse.Namespace) -> int:
    from kneelib.predict import Predictor, check_images, format_predictions

    runs, images = split_runs_and_images(list(args.runs), list(args.images))
    if not runs:
        raise KneelibError("no run directories given (--runs RUN_DIR [RUN_DIR ...] IMAGE [IMAGE ...])")
    paths = check_images(images)
    predictor = Predictor(runs, device=args.device)
    results = predictor.predict(paths, progress=None)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_predictions(results, predictor.class_names))
    return 0
