"""``kneelib train``: fit one model into a run directory (thin layer over :func:`kneelib.train.train`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from kneelib.train.config import LOSSES, Runtime, TrainConfig
from kneelib.train.recipes import RECIPES

_DEFAULTS = {f.name: f.default for cls in (TrainConfig, Runtime) for f in dataclasses.fields(cls)}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    d = _DEFAULTS
    p = subparsers.add_parser(
        "train",
        help="train one model on DIR's train split, keep the best on its val split",
        description="Train ARCH with the paper's recipe (Adam, lr step decay, augmentation) and write "
        "RUN_DIR: config.json, history.csv, best.pt, last.pt, status.json. Defaults are the paper's.",
    )
    p.add_argument("--data", required=True, metavar="DIR",
                   help="data set with train and val splits (DIR/{train,val}/{0..4}/ or a manifest)")
    p.add_argument("--arch", required=True, metavar="NAME", help="architecture (see `kneelib models`)")
    p.add_argument("--scheme", default=d["scheme"], metavar="kl5|kl4|oa",
                   help=f"label scheme (default {d['scheme']})")
    p.add_argument("--seed", type=int, default=d["seed"], help=f"random seed (default {d['seed']})")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    p.add_argument("--epochs", type=int, default=d["epochs"], help=f"epochs (default {d['epochs']})")
    p.add_argument("--image-size", type=int, default=d["image_size"], metavar="PX",
                   help=f"input size (default {d['image_size']})")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help=f"batch size (default {d['batch_size']})")
    _add_recipe_arguments(p, d)
    p.add_argument("--weights", default="none", metavar="none|imagenet|PATH",
                   help="initial weights (default none: random init)")
    p.add_argument("--clahe", action="store_true",
                   help="apply CLAHE after resizing (for raw images; kneeKL224 already has it)")
    p.add_argument("--device", default=d["device"], metavar="auto|cpu|cuda",
                   help="where to train (default auto: cuda when available)")
    p.add_argument("--workers", type=int, default=d["workers"], metavar="N",
                   help="DataLoader worker processes (default: 0 on CPU, up to 8 with a GPU)")
    p.add_argument("--threads", type=int, default=d["threads"], metavar="N",
                   help="torch CPU threads (default: torch's choice; 1 on a busy shared machine)")
    p.add_argument("--data-on-device", choices=("auto", "yes", "no"), default="auto",
                   help="keep the images on the device and augment whole batches there (default auto: on a GPU)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=d["precision"],
                   help="arithmetic (default auto: bf16 autocast on a GPU and on a CPU with bf16 instructions, "
                   "unless the CPU kernels are pinned to AVX2; fp32 elsewhere)")
    p.add_argument("--no-cuda-graphs", action="store_true",
                   help="on a GPU, launch every step eagerly instead of replaying a CUDA graph")
    p.add_argument("--limit", type=int, default=d["limit"], metavar="N",
                   help="use at most N images per split (grade-stratified, for quick runs)")
    p.add_argument("--disk-cache", nargs="?", const="", default=None, metavar="DIR",
                   help="also cache preprocessed images on disk (default DIR ~/.cache/kneelib)")
    p.add_argument("--resume", action="store_true",
                   help="continue the unfinished run in RUN_DIR (no-op if it finished)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.set_defaults(func=run)


def _add_recipe_arguments(p: argparse.ArgumentParser, d: dict) -> None:
    """The recipe and its budget-dependent parts (each default: the recipe's)."""
    p.add_argument("--recipe", default="paper", metavar="|".join(RECIPES),
                   help="training recipe: paper (the paper's, for ImageNet weights; default) or scratch "
                   "(AdamW, peak lr 4e-3 for ResNets and 1e-3 for DenseNets, warm-up + cosine: from random weights)")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default: the recipe's; paper {d['lr']:g})")
    p.add_argument("--weight-decay", type=float, default=None,
                   help=f"weight decay (default: the recipe's; paper {d['weight_decay']:g})")
    p.add_argument("--augment", type=float, default=None, metavar="STRENGTH",
                   help="augmentation strength: 1 the paper's flip, ±10° rotation, 0.9-1.1 scale and 0.33 "
                   "jitter; 0 the flip alone (default: the recipe's)")
    p.add_argument("--warmup-epochs", type=int, default=None, metavar="N",
                   help="linear warm-up epochs of the cosine schedule (default: the recipe's)")
    p.add_argument("--loss", choices=LOSSES, default=None,
                   help="what training minimises: cross_entropy (the paper's), class_weighted (each grade weighs as "
                   "much as the others together) or corn (an ordinal head and loss) (default: the recipe's)")
    p.add_argument("--balanced", action="store_true",
                   help="draw the training images class-balanced (with replacement) instead of shuffling them")


def run(args: argparse.Namespace) -> int:
    """Build the config from the arguments and train."""
    from kneelib.data.dataset import DecodeCache, default_cache_dir
    from kneelib.train import train

    overrides = {k: v for k, v in (("lr", args.lr), ("weight_decay", args.weight_decay), ("augment", args.augment),
                                   ("warmup_epochs", args.warmup_epochs), ("loss", args.loss),
                                   ("balanced", args.balanced or None)) if v is not None}
    config = TrainConfig.from_recipe(
        args.recipe, arch=args.arch, scheme=args.scheme, seed=args.seed, epochs=args.epochs,
        image_size=args.image_size, batch_size=args.batch_size, weights=args.weights, clahe=args.clahe,
        limit=args.limit, **overrides,
    ).validate()
    runtime = Runtime(device=args.device, workers=args.workers, threads=args.threads,
                      data_on_device={"auto": None, "yes": True, "no": False}[args.data_on_device],
                      cuda_graphs=not args.no_cuda_graphs, precision=args.precision).validate()
    if config.recipe == "paper" and config.weights is None and not args.quiet and Path(args.data).exists():
        print("kneelib: note: the paper's recipe assumes ImageNet weights; from random weights use "
              "--recipe scratch", file=sys.stderr)
    cache = None
    if args.disk_cache is not None:
        cache = DecodeCache(args.disk_cache or default_cache_dir())
    result = train(config, runtime=runtime, data_dir=args.data, out_dir=args.out, resume=args.resume,
                   progress=False if args.quiet else None, verbose=not args.quiet, cache=cache)
    if not args.quiet:
        print(f"run written to {result.run_dir}", file=sys.stderr)
    return 0
