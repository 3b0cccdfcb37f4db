"""``kneelib models``: the architectures with parameters, GFLOPs and SE blocks."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` sub-command."""
    parser = subparsers.add_parser(
        "models",
        help="list the architectures: parameters, GFLOPs, SE blocks",
        description="List the eight architectures with their parameter count, FLOPs of one 1x3xSxS "
        "forward pass (torch.utils.flop_counter; 1 multiply-add = 2 FLOPs, GMACs = GFLOPs / 2) "
        "and number of SE blocks.",
    )
    parser.add_argument("--num-classes", type=int, default=5, help="classes of the head (default 5)")
    parser.add_argument("--image-size", type=int, default=224, help="input size S in px (default 224)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON)."""
    from kneelib.errors import KneelibError
    from kneelib.models.summary import format_table, summarize_all

    if args.image_size < 64:
        raise KneelibError(f"--image-size must be at least 64 px, got {args.image_size}")
    rows = summarize_all(num_classes=args.num_classes, image_size=args.image_size)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print(format_table(rows))
        print(f"\n{args.num_classes}-class heads; FLOPs counted by torch.utils.flop_counter.FlopCounterMode "
              "(conv + linear only, 1 multiply-add = 2 FLOPs).")
    return 0
