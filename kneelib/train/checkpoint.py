"""Run-directory files, each written atomically: checkpoints, config/status JSON, history CSV.

Checkpoints hold tensors and primitive containers only, so ``torch.load(weights_only=True)`` reads
them (no pickled objects). A killed run never leaves a half-written file: every write goes to a
temporary sibling that is renamed onto the target only when complete.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from kneelib.atomic import atomic_path, write_text
from kneelib.errors import KneelibError

__all__ = ["CONFIG", "HISTORY", "BEST", "LAST", "STATUS", "HISTORY_COLUMNS", "save_checkpoint",
           "load_checkpoint", "write_json", "read_json", "write_history", "read_history"]

CONFIG, HISTORY, BEST, LAST, STATUS = "config.json", "history.csv", "best.pt", "last.pt", "status.json"
HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")


def save_checkpoint(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file, then rename it onto ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)``; KneelibError naming the file if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise KneelibError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip error means a bad file
        raise KneelibError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """Pretty JSON, atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object from ``path``; KneelibError naming the file when unreadable."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KneelibError(f"{path}: not found") from None
    except (OSError, ValueError) as exc:
        raise KneelibError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise KneelibError(f"{path}: expected a JSON object")
    return data


def write_history(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """``history.csv`` with :data:`HISTORY_COLUMNS` (floats at full precision)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(float(row[k])) if k != "epoch" else int(row[k]))
                         for k in HISTORY_COLUMNS})
    return write_text(path, buf.getvalue())


def read_history(path: str | os.PathLike) -> list[dict[str, float | int]]:
    """Rows of a ``history.csv`` (``epoch`` as int, the rest as float)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        with path.open(newline="") as fh:
            return [{k: (int(r[k]) if k == "epoch" else float(r[k])) for k in HISTORY_COLUMNS}
                    for r in csv.DictReader(fh)]
    except (KeyError, ValueError, TypeError) as exc:
        raise KneelibError(f"{path}: not a kneelib history file ({exc})") from None
