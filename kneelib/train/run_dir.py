"""A run directory and its files: what state it is in, one writer at a time, and each file written once per change.

``RUN_DIR/`` holds ``config.json`` (written once, after the first epoch, when the path the steps took is known),
``history.csv``, ``best.pt``, ``last.pt`` and ``status.json`` (formats: :mod:`kneelib.train.checkpoint`). A
directory is *new* (missing, or empty but for hidden files), *resume* (an unfinished run) or *finished*.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from kneelib.errors import KneelibError
from kneelib.train import checkpoint as ckpt
from kneelib.train.config import config_mismatch
from kneelib.train.lock import run_lock

__all__ = ["RunDir", "run_status"]

#: The files a run writes (each atomically, through a temporary sibling).
RUN_FILES = (ckpt.CONFIG, ckpt.HISTORY, ckpt.BEST, ckpt.LAST, ckpt.STATUS)


def run_status(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``status.json`` of a run directory, or None when there is none."""
    path = Path(out_dir) / ckpt.STATUS
    return ckpt.read_json(path) if path.is_file() else None


class RunDir:
    """One run directory: its state, its files, and (opened with :meth:`locked`) the lock of its one writer."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @classmethod
    @contextlib.contextmanager
    def locked(cls, path: str | os.PathLike) -> Iterator[RunDir]:
        """The run directory ``path`` (created if missing), locked for the block: a second training of the
        same directory stops with a KneelibError naming the holder (:mod:`kneelib.train.lock`)."""
        with run_lock(path):
            yield cls(path)

    def file(self, name: str) -> Path:
        """The path of one of the run's files."""
        return self.path / name

    def state(self, resume: bool) -> str:
        """``"new"``, ``"resume"`` or ``"finished"``; KneelibError where a run would be clobbered."""
        out = self.path
        if not out.exists():
            return "new"
        if not out.is_dir():
            raise KneelibError(f"{out}: exists and is not a directory")
        status = self.status()
        if status and status.get("finished"):
            if not resume:
                raise KneelibError(f"{out}: holds a finished run; choose another --out (or delete it)")
            return "finished"
        if status is not None or any(self.file(name).is_file() for name in (ckpt.CONFIG, ckpt.LAST)):
            if not resume:
                raise KneelibError(f"{out}: holds an unfinished run; pass --resume to continue it")
            return "resume"
        if any(p for p in out.iterdir() if not p.name.startswith(".")):
            raise KneelibError(f"{out}: not empty and holds no kneelib run; choose an empty --out")
        return "new"

    def check_config(self, current: Mapping[str, Any]) -> None:
        """KneelibError when the run's ``config.json`` (if written yet) trained another recipe or other data."""
        if not self.file(ckpt.CONFIG).is_file():
            return  # stopped during its first epoch: nothing was kept that the new run could disagree with
        diff = config_mismatch(ckpt.read_json(self.file(ckpt.CONFIG)), current)
        if diff:
            raise KneelibError(f"{self.path}: --resume with a different configuration ({'; '.join(diff)})")

    def status(self) -> dict[str, Any] | None:
        """``status.json``, or None before the run wrote one."""
        return run_status(self.path)

    def write_status(self, *, epoch: int, best_epoch: int | None, best_val_acc: float | None,
                     finished: bool) -> None:
        """``status.json``: how far the run is and its best epoch so far."""
        ckpt.write_json(self.file(ckpt.STATUS), {"finished": finished, "epoch": epoch, "best_epoch": best_epoch,
                                                  "best_val_acc": best_val_acc})

    def write_config(self, meta: Mapping[str, Any]) -> None:
        """``config.json``, the run's one record of what it trained and how (written once)."""
        ckpt.write_json(self.file(ckpt.CONFIG), meta)

    def history(self, through_epoch: int) -> list[dict[str, float | int]]:
        """The rows of ``history.csv`` up to ``through_epoch`` (a killed run may have written one more)."""
        return [row for row in ckpt.read_history(self.file(ckpt.HISTORY)) if row["epoch"] <= through_epoch]

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        """``history.csv`` with every epoch so far."""
        ckpt.write_history(self.file(ckpt.HISTORY), rows)

    def save_best(self, state: Mapping[str, Any]) -> None:
        """``best.pt``: the weights of the best validation accuracy so far."""
        ckpt.save_checkpoint(state, self.file(ckpt.BEST))

    def has_last(self) -> bool:
        """Whether ``last.pt`` (the state to resume from) exists."""
        return self.file(ckpt.LAST).is_file()

    def load_last(self) -> dict[str, Any]:
        """``last.pt``: weights, optimizer, schedule, RNG state, the epoch and the best so far."""
        return ckpt.load_checkpoint(self.file(ckpt.LAST))

    def save_last(self, state: Mapping[str, Any]) -> None:
        """``last.pt``, written after every epoch."""
        ckpt.save_checkpoint(state, self.file(ckpt.LAST))

    def drop_last(self) -> None:
        """Delete ``last.pt`` (a finished run that nothing will resume)."""
        self.file(ckpt.LAST).unlink(missing_ok=True)

    def remove_stale_temps(self) -> None:
        """Delete temporary files a hard-killed process (SIGKILL) left beside the run's files."""
        if not self.path.is_dir():
            return
        for name in RUN_FILES:
            for tmp in self.path.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
