"""``kneelib localize``: train, evaluate and apply the knee-joint localiser for bilateral radiographs
(thin layer over :mod:`kneelib.radiograph.localizer` and :mod:`kneelib.radiograph.localizer_training`)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from kneelib.errors import KneelibError

_METRIC_LINES = (("mean_iou", "mean IoU", "{:.3f}"), ("median_iou", "median IoU", "{:.3f}"),
                 ("iou_over_0.5", "IoU > 0.5", "{:.1%}"), ("centre_error_px_mean", "centre error mean", "{:.1f} px"),
                 ("centre_error_px_median", "centre error median", "{:.1f} px"),
                 ("centre_error_mm_mean", "centre error mean", "{:.1f} mm"),
                 ("inference_ms_mean", "inference", "{:.1f} ms/radiograph"), ("n_knees", "knees", "{}"))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``localize train``, ``localize evaluate`` and ``localize locate``."""
    import inspect

    from kneelib.radiograph.localizer import default_localizer_path
    from kneelib.radiograph.localizer_training import train_localizer

    default = default_localizer_path()
    d = {k: v.default for k, v in inspect.signature(train_localizer).parameters.items()}
    p = subparsers.add_parser(
        "localize", help="knee-joint localiser for bilateral PA radiographs (train, evaluate, locate)",
        description="A small CNN that finds both knee joints of a bilateral PA radiograph, trained on "
        "synthetic radiographs. The knee on the image's left is the patient's right (R).")
    sub = p.add_subparsers(dest="localize_command", metavar="ACTION", required=True)

    t = sub.add_parser("train", help="train the localiser on synthetic bilateral radiographs",
                       description="Render synthetic radiographs (random size, aspect and pixel spacing), train "
                       "on CPU in a few minutes and write DIR/localizer.pt and DIR/metrics.json; prints the "
                       "held-out validation metrics.")
    t.add_argument("--out", type=Path, default=default.parent, metavar="DIR",
                   help=f"output folder (default {default.parent}, where the other commands look)")
    t.add_argument("--n-train", type=int, default=d["n_train"], metavar="N",
                   help=f"training radiographs (default {d['n_train']})")
    t.add_argument("--n-val", type=int, default=d["n_val"], metavar="N",
                   help=f"validation radiographs (default {d['n_val']})")
    t.add_argument("--epochs", type=int, default=d["epochs"], help=f"epochs (default {d['epochs']})")
    t.add_argument("--seed", type=int, default=d["seed"], help=f"random seed (default {d['seed']})")
    t.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads (default: torch's)")
    t.add_argument("--force", action="store_true", help="replace an existing DIR/localizer.pt")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.add_argument("--json", action="store_true", help="print the metrics as JSON")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="IoU and centre error on held-out synthetic radiographs",
                       description="Render N synthetic radiographs from a stream never used for training and "
                       "compare the localiser's boxes with the true ones.")
    e.add_argument("--model", type=Path, default=default, metavar="FILE", help=f"localizer.pt (default {default})")
    e.add_argument("--n", type=int, default=200, help="radiographs (default 200)")
    e.add_argument("--seed", type=int, default=1000, help="seed of the held-out radiographs (default 1000)")
    e.add_argument("--use-spacing", action="store_true",
                   help="give the localiser the true pixel spacing (box side exact; only centres predicted)")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.set_defaults(func=cmd_evaluate)

    loc = sub.add_parser("locate", help="print the two knee boxes of bilateral radiographs",
                         description="Boxes [x0, y0, x1, y1] (x1, y1 exclusive) of the R (image-left) and L knee.")
    loc.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="bilateral PA radiographs (PNG/JPEG/DICOM)")
    loc.add_argument("--model", type=Path, default=default, metavar="FILE", help=f"localizer.pt (default {default})")
    loc.add_argument("--spacing", type=float, default=None, metavar="MM",
                     help="pixel spacing in mm: box side = 100 mm (default: a DICOM's own spacing, else the "
                     "predicted side)")
    loc.add_argument("--json", action="store_true", help="print JSON instead of lines")
    loc.set_defaults(func=cmd_locate)


def _print_metrics(metrics: dict, title: str) -> None:
    print(title)
    for key, label, fmt in _METRIC_LINES:
        value = metrics.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            print(f"  {label:20s} {fmt.format(value)}")


def cmd_train(args: argparse.Namespace) -> int:
    """``kneelib localize train``."""
    from kneelib.atomic import check_output_dir
    from kneelib.radiograph.localizer_training import train_localizer

    check_output_dir(args.out)
    metrics = train_localizer(args.out, n_train=args.n_train, n_val=args.n_val, epochs=args.epochs,
                              seed=args.seed, threads=args.threads, overwrite=args.force,
                              progress=not args.quiet and sys.stderr.isatty(),
                              log=(lambda line: None) if args.json else print)
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if k != "history"}))
    else:
        _print_metrics(metrics["val"], f"held-out validation ({args.n_val} radiographs, weights of epoch "
                       f"{metrics['best_epoch']}; {metrics['data_seconds']:.0f} s rendering, "
                       f"{metrics['train_seconds']:.0f} s training):")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``kneelib localize evaluate``."""
    from kneelib.radiograph.localizer import evaluate_localizer, load_localizer

    localizer = load_localizer(args.model)
    metrics = evaluate_localizer(localizer, n=args.n, seed=args.seed, use_spacing=args.use_spacing,
                                 progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps(metrics))
    else:
        _print_metrics(metrics, f"{args.model} on {args.n} held-out synthetic radiographs (seed {args.seed}"
                       f"{', true spacing' if args.use_spacing else ''}):")
    return 0


def cmd_locate(args: argparse.Namespace) -> int:
    """``kneelib localize locate IMAGE...``."""
    from kneelib.data.io import read_radiograph
    from kneelib.radiograph.localizer import load_localizer

    if args.spacing is not None and not args.spacing > 0:
        raise KneelibError(f"--spacing must be positive, got {args.spacing}")
    localizer = load_localizer(args.model)
    results = {}
    for path in args.images:
        image, spacing = read_radiograph(path)
        boxes = localizer.locate(image, spacing_mm=args.spacing or spacing)
        results[str(path)] = {b.side: b.as_list() for b in boxes}
    if args.json:
        print(json.dumps(results))
    else:
        for path, boxes in results.items():
            print(f"{path}: " + "  ".join(f"{side} {box}" for side, box in boxes.items()))
    return 0
