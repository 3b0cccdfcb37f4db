"""The ``kneelib`` command: a thin argparse layer, one sub-command per library function.

Each area registers its sub-commands from its own module (``kneelib/cli/<area>.py``) through a
``register(subparsers)`` function; the handler is stored as ``func`` and gets the parsed args.
A :class:`~kneelib.errors.KneelibError` becomes one ``kneelib: error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from kneelib import __version__
from kneelib.errors import KneelibError

#: Modules under kneelib.cli that contribute sub-commands, in help order.
COMMAND_MODULES = ("data", "models", "train", "evaluate", "predict", "localize", "export", "pipeline")


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors (a bad option, value or choice): ``kneelib: error: COMMAND:
    what is wrong``, exit status 2 (sub-parsers are made of the same class)."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("kneelib").strip()
        self.exit(2, f"kneelib: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full ``kneelib`` parser with every available sub-command."""
    parser = _Parser(
        prog="kneelib",
        description="Grade knee osteoarthritis (KL 0-4) with (SE-)ResNet/DenseNet: data, models, "
        "training, evaluation and the paper's tables.",
    )
    parser.add_argument("--version", action="version", version=f"kneelib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"kneelib.cli.{name}")
        except ModuleNotFoundError as exc:  # an area not built yet
            if exc.name == f"kneelib.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kneelib`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        result = args.func(args)
    except KneelibError as exc:
        print(f"kneelib: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kneelib: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stderr.close()
        return 0
    return int(result or 0)
