"""The run-directory lock: one training process at a time writes a run directory.

``fcntl.flock`` on ``RUN_DIR/.lock``, held for the whole training; the kernel drops it when the process
dies (even by SIGKILL), so a killed run never leaves a lock behind. The file holds the holder's PID and host,
which a second ``train`` on the same directory names in its one-line error.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from kneelib.errors import KneelibError

#: The lock file inside a run directory (hidden: a run directory holding only it counts as empty).
LOCK_NAME = ".lock"


def _holder(fd: int) -> str:
    """What the lock file says about its holder (``pid N on HOST``), or ``unknown``."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"


def _acquire(out: Path) -> int:
    """Open and flock ``out/.lock`` without waiting; the descriptor of the held lock."""
    lock = out / LOCK_NAME
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise KneelibError(f"{out}: another training is writing this run directory ({holder}); wait for it "
                               "to end or choose another --out") from None
        try:  # the previous holder may have removed the file between our open and our flock: lock the new one
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return fd


@contextlib.contextmanager
def run_lock(out: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of run directory ``out`` (created if missing) for the block.

    A directory this call created and that is still empty when the block ends (the training stopped before
    writing anything) is removed again. KneelibError when another process holds the lock.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KneelibError(f"{out}: exists and is not a directory")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = _acquire(out)
    except OSError as exc:
        raise KneelibError(f"{out}: cannot write the run directory ({exc.strerror or exc})") from None
    try:
        yield out
    finally:
        (out / LOCK_NAME).unlink(missing_ok=True)
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: nothing was written
