"""Read one image file into a uint8 grayscale array, with one clear error per kind of bad file.

Supported: PNG and JPEG, 8- or 16-bit, grayscale, palette, RGB(A) or CMYK. Colour is converted to
luma (ITU-R 601, Pillow's ``convert("L")``); 16-bit values are mapped linearly from 0-65535 to 0-255
(``round(v / 257)``, the inverse of the usual 8-to-16-bit expansion).

DICOM (``.dcm``/``.dicom``, or any file with the ``DICM`` marker at byte 128) is read by
:mod:`kneelib.data.dicom` through pydicom — modality LUT, VOI LUT/window, MONOCHROME1 inverted —
and arrives here already as uint8. :func:`read_radiograph` also returns its pixel spacing in mm.
Folder discovery (:func:`is_image_file`) goes by suffix only, so suffix-less DICOM files are read
when named directly but not found in a data folder.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from kneelib.data import dicom
from kneelib.data.pixels import ImageReadError, require_file, to_gray_uint8

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


def decode(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Decode a file fully; return ``(pixels, original_mode)``.

    ``pixels`` is H×W (uint8 or uint16/int32 for 16-bit) or H×W×3 uint8 (colour). For DICOM it is
    display-ready uint8 (H×W, or H×W×3 for RGB) and the mode is ``"DICOM <photometric>"``.
    Raises :class:`ImageReadError` naming the file and what is wrong with it.
    """
    path = require_file(path)
    if dicom.is_dicom(path):
        pixels, photometric, _ = dicom.decode_dicom(path)
        return pixels, f"DICOM {photometric}"
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in _TO_L:
                im = im.convert("L")
            elif mode in _TO_RGB:
                im = im.convert("RGB")
            elif mode not in {"L", "RGB"} | _SIXTEEN:
                raise ImageReadError(path, "wrong-mode", f"unsupported image mode {mode!r}")
            pixels = np.asarray(im)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "unreadable", "not a readable PNG/JPEG image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc)
        if "truncated" in text or isinstance(exc, EOFError) or "broken" in text.lower():
            raise ImageReadError(path, "truncated", f"truncated or corrupt image ({text})") from None
        raise ImageReadError(path, "unreadable", f"cannot decode image ({text})") from None
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
