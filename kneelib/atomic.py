"""Atomic file and directory writes: a killed process never leaves a half-written output."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kneelib.errors import KneelibError


def _existing_ancestor(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists (a file too: ``exists()`` is False under a file)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")


def _check_can_create(path: Path) -> None:
    """KneelibError unless the folders ``path`` needs can be created: its nearest existing ancestor must be a
    writable directory (``os.access``: also false on a read-only file system, even for root)."""
    ancestor = _existing_ancestor(path.parent)
    if not ancestor.is_dir():
        raise KneelibError(f"{path}: cannot be created, {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise KneelibError(f"{path}: cannot be created, {ancestor} is not writable")


def check_output_file(path: str | os.PathLike) -> Path:
    """Check, before any work, that a file can be written at ``path`` (not a directory, its folder
    writable or creatable); KneelibError naming it otherwise. Returns ``path`` as a Path."""
    path = Path(path)
    if path.is_dir():
        raise KneelibError(f"{path}: is a directory; a file name is needed here")
    if path.name in ("", ".", ".."):
        raise KneelibError(f"{path}: not a file name")
    _check_can_create(path)
    return path


def check_output_dir(path: str | os.PathLike) -> Path:
    """Check, before any work, that a folder can be written at ``path`` (an existing writable directory,
    or creatable); KneelibError naming it otherwise. Returns ``path`` as a Path."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise KneelibError(f"{path}: exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK) or not path.stat().st_mode & stat.S_IWUSR:
            raise KneelibError(f"{path}: directory is not writable (mode {path.stat().st_mode & 0o777:o})")
        return path
    _check_can_create(path)
    return path


def _write_error(path: Path, exc: OSError) -> KneelibError:
    """The one-line error of a failed write at ``path`` (permission, read-only, a file in the way)."""
    return KneelibError(f"{path}: cannot write here ({exc.strerror or exc})")


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # a file where a folder is wanted, read-only, no permission
        raise _write_error(path, exc) from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a finished file gets the usual mode
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            os.replace(tmp_path, path)
        except OSError as exc:  # e.g. a directory appeared at ``path``
            raise _write_error(path, exc) from None
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temp_dirs(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary siblings ``.NAME.PID.XXXX.tmp/`` of ``path`` that :func:`atomic_dir` calls of
    processes no longer alive left behind (killed by SIGKILL); returns what was removed."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[^.]+\.tmp")
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = pattern.fullmatch(tmp.name)
        if match and tmp.is_dir() and not tmp.is_symlink() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory in a temporary sibling; move it to ``path`` only if the block succeeds.

    On any failure the temporary directory is removed, so no partial output is left behind; one left by a
    killed process (its PID is in the name) is removed by the next call. The finished directory gets the
    umask's mode; an existing ``path`` that is not a writable directory is refused, never replaced.
    """
    path = Path(path)
    check_output_dir(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise KneelibError(f"{path}: output directory exists and is not empty")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_dirs(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a finished folder gets the usual mode
        try:
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except OSError as exc:
            raise _write_error(path, exc) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
