"""What every reader shares: the one read error, the file check, and the conversion to uint8 grey.

:mod:`kneelib.data.io` (PNG/JPEG) and :mod:`kneelib.data.dicom` both build on this module; it imports
neither of them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from kneelib.errors import KneelibError


#: The most pixels kneelib decodes from one image file, checked on its header before any decoding:
#: 8000x8000, room for any radiograph (a 43x43 cm detector at 0.1 mm is 4300x4300, 18.5 MP), while a
#: decompression bomb (a few KB of PNG that decode to gigabytes) is refused.
MAX_PIXELS = 64_000_000


class ImageReadError(KneelibError):
    """A file that cannot be read as an image; ``reason`` is one of ``missing``, ``empty``,
    ``unreadable``, ``truncated``, ``wrong-mode``, ``too-large`` (over :data:`MAX_PIXELS`) and, for
    DICOM, ``no-pixels``, ``compressed`` (no decoder for its transfer syntax) or ``multiframe``."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = Path(path)
        self.reason = reason
        self.detail = detail


def require_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is a non-empty readable file, else :class:`ImageReadError`."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageReadError(path, "missing", "no such file") from None
    except OSError as exc:
        raise ImageReadError(path, "unreadable", f"cannot access file ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageReadError(path, "empty", "empty file (0 bytes)")
    return path


def check_pixel_budget(path: str | os.PathLike, width: int, height: int) -> None:
    """:class:`ImageReadError` (``too-large``) when a ``width`` x ``height`` image exceeds :data:`MAX_PIXELS`."""
    if int(width) * int(height) > MAX_PIXELS:
        raise too_large(path, f"{int(width)}x{int(height)} pixels")


def too_large(path: str | os.PathLike, size: str) -> ImageReadError:
    """The error for an image of ``size`` (e.g. ``"30000x30000 pixels"``) over the budget."""
    return ImageReadError(path, "too-large", f"{size} is over the {MAX_PIXELS // 1_000_000}-megapixel limit "
                                             "of one image (a decompression bomb?)")


def to_gray_uint8(pixels: np.ndarray) -> np.ndarray:
    """Convert decoded pixels to H×W uint8: luma for colour, linear 16-to-8-bit scaling."""
    if pixels.ndim == 3:
        rgb = np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)
        return np.asarray(Image.fromarray(rgb, "RGB").convert("L"))
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    wide = np.clip(pixels.astype(np.int64), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)
