"""Read one image file into a uint8 grayscale array, with one clear error per kind of bad file.

Supported: PNG and JPEG, 8- or 16-bit, grayscale, palette, RGB(A) or CMYK. Colour is converted to
luma (ITU-R 601, Pillow's ``convert("L")``); 16-bit values are mapped linearly from 0-65535 to 0-255
(``round(v / 257)``, the inverse of the usual 8-to-16-bit expansion).

DICOM (``.dcm``/``.dicom``, or any file with the ``DICM`` marker at byte 128) is read by
:mod:`kneelib.data.dicom` through pydicom — modality LUT, VOI LUT/window, MONOCHROME1 inverted —
and arrives here already as uint8. :func:`read_radiograph` also returns its pixel spacing in mm.
Folder discovery (:func:`is_image_file`) goes by suffix only, so suffix-less DICOM files are read
when named directly but not found in a data folder.

Every image kneelib reads passes through :func:`decode` (or :func:`image_size`, the header alone): its
size is checked on the header before any pixel is decoded, against
:data:`kneelib.data.pixels.MAX_PIXELS` (64 megapixels), so a decompression bomb is refused with a
``too-large`` :class:`ImageReadError` instead of filling the memory.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kneelib.data import dicom
from kneelib.data.pixels import ImageReadError, check_pixel_budget, require_file, to_gray_uint8, too_large

#: File suffixes (lower case) treated as images; anything else in a data folder is ignored.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")

#: Modes Pillow may return that we reduce to "L" or "RGB" before conversion.
_TO_L = {"1", "LA", "La"}
_TO_RGB = {"P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_SIXTEEN = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name has an image suffix (case-insensitive) and is not hidden."""
    name = os.fspath(path)
    base = os.path.basename(name)
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_SUFFIXES


@contextmanager
def _pil_errors(path: Path) -> Iterator[None]:
    """Turn Pillow's exceptions inside the block into :class:`ImageReadError` naming ``path``."""
    try:
        yield
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:  # over twice Pillow's own limit: refused while opening
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = _png_size(path) or (f"{int(found.group(1)):,} pixels" if found else "the image")
        raise too_large(path, size) from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "unreadable", "not a readable PNG/JPEG image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc)
        if "truncated" in text or isinstance(exc, EOFError) or "broken" in text.lower():
            raise ImageReadError(path, "truncated", f"truncated or corrupt image ({text})") from None
        raise ImageReadError(path, "unreadable", f"cannot decode image ({text})") from None


def _png_size(path: Path) -> str | None:
    """``"WxH pixels"`` from a PNG's IHDR chunk (for the error message), None for any other file."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return f"{width}x{height} pixels"


def _open_pil(path: Path) -> Image.Image:
    """The file opened by Pillow, its header read and its size within :data:`~kneelib.data.pixels.MAX_PIXELS`;
    no pixel decoded yet. Call inside :func:`_pil_errors`."""
    with warnings.catch_warnings():  # Pillow warns above its own limit, which is above ours
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(path)
    try:
        check_pixel_budget(path, *im.size)
    except ImageReadError:
        im.close()
        raise
    return im


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` read from the file's header only (PNG/JPEG, DICOM ``Columns``/``Rows``): the check
    that a file is an image, within the pixel budget, before anything uses it. :class:`ImageReadError` if not."""
    path = require_file(path)
    if dicom.is_dicom(path):
        return dicom.dicom_size(path)
    with _pil_errors(path), _open_pil(path) as im:
        return im.size


def decode(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Decode a file fully; return ``(pixels, original_mode)``.

    ``pixels`` is H×W (uint8 or uint16/int32 for 16-bit) or H×W×3 uint8 (colour). For DICOM it is
    display-ready uint8 (H×W, or H×W×3 for RGB) and the mode is ``"DICOM <photometric>"``. The size is
    checked on the header first (:data:`~kneelib.data.pixels.MAX_PIXELS`). Raises :class:`ImageReadError`
    naming the file and what is wrong with it.
    """
    path = require_file(path)
    if dicom.is_dicom(path):
        pixels, photometric, _ = dicom.decode_dicom(path)
        return pixels, f"DICOM {photometric}"
    with _pil_errors(path), _open_pil(path) as im:
        im.load()
        mode = im.mode
        if mode in _TO_L:
            im = im.convert("L")
        elif mode in _TO_RGB:
            im = im.convert("RGB")
        elif mode not in {"L", "RGB"} | _SIXTEEN:
            raise ImageReadError(path, "wrong-mode", f"unsupported image mode {mode!r}")
        pixels = np.asarray(im)
    if pixels.ndim < 2 or min(pixels.shape[:2]) == 0:
        raise ImageReadError(path, "empty", "image has no pixels")
    return pixels, mode


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG, JPEG or DICOM file as uint8 H×W grayscale (KneelibError naming the file if bad)."""
    pixels, _ = decode(path)
    return to_gray_uint8(pixels)


def read_radiograph(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """``(uint8 H×W, pixel spacing in mm or None)``: DICOM spacing from its header, None for PNG/JPEG."""
    path = require_file(path)
    if dicom.is_dicom(path):
        image = dicom.read_dicom(path)
        return image.pixels, image.spacing_mm
    return read_image(path), None
