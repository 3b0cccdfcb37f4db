"""Read a DICOM radiograph (through pydicom) as display-ready uint8 grayscale plus its pixel spacing.

Pipeline (DICOM PS3.3 C.11): stored values → modality LUT (*Rescale Slope/Intercept* or *Modality
LUT Sequence*, ``apply_modality_lut``) → VOI LUT (*VOI LUT Sequence*, else the first *Window
Center/Width* pair, ``apply_voi_lut``) → 0-255 → inverted when MONOCHROME1 (bone bright, as in
MONOCHROME2). The 0-255 scaling maps the VOI output range (the window's ``y_min..y_max`` or the LUT's
``0..2**bits-1``) linearly to 0..255, so values outside the window clip; with no VOI it is min-max
over the image, except 8-bit unsigned data without rescale, which is used as is (like an 8-bit PNG).

Decisions: RGB / YBR_FULL / YBR_FULL_422 (pydicom returns RGB) are kept as colour and reduced to luma
by :func:`kneelib.data.pixels.to_gray_uint8`; PALETTE COLOR and the rest are refused. Multi-frame files
are refused (which frame is "the" radiograph is not knowable here). Compressed transfer syntaxes
decode when pydicom has a decoder plugin (Pillow covers JPEG baseline and JPEG 2000; RLE is built
in); otherwise the error names the syntax and the missing plugins. *Presentation LUT Shape* is
ignored. Spacing: *Pixel Spacing*, else *Imager Pixel Spacing* divided by *Estimated Radiographic
Magnification Factor* when given (the detector-plane spacing overstates anatomy by that factor).
*Rows* x *Columns* is checked against the pixel budget (:data:`kneelib.data.pixels.MAX_PIXELS`) before
the pixel data is decoded; a warning of pydicom's while decoding (pixel data that does not fit the
header) refuses the file, and its warnings on odd header values are not shown.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kneelib.data.pixels import ImageReadError, check_pixel_budget, require_file, to_gray_uint8

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422")


@dataclass(frozen=True)
class DicomImage:
    """A decoded DICOM radiograph: ``pixels`` uint8 H×W; ``spacing_mm`` the row spacing or None.

    ``spacing_rc_mm`` is (row, column) spacing — they differ on anisotropic images, where
    ``spacing_mm`` is the row one; ``spacing_source`` the attribute it came from.
    """

    pixels: np.ndarray
    spacing_mm: float | None
    photometric: str
    spacing_rc_mm: tuple[float, float] | None = None
    spacing_source: str | None = None


def has_dicom_magic(path: str | os.PathLike) -> bool:
    """True when the file has the DICOM Part 10 ``DICM`` marker after the 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a ``.dcm``/``.dicom`` name (any case) or a file carrying the ``DICM`` marker."""
    return Path(path).suffix.lower() in DICOM_SUFFIXES or has_dicom_magic(path)


def _dataset(path: Path, *, pixels: bool = True):
    """The parsed file (pydicom's warnings on odd header values dropped; what matters is checked here)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
    except InvalidDicomError:
        raise ImageReadError(path, "unreadable", "not a DICOM file (no 'DICM' marker at byte 128)") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        text = " ".join(str(exc).split())
        raise ImageReadError(path, "truncated", f"truncated or corrupt DICOM file ({text})") from None
    if pixels and "PixelData" not in ds:
        raise ImageReadError(path, "no-pixels", "DICOM file has no pixel data (no PixelData element: "
                                                "a report, structured report or header-only file?)")
    return ds


def _size(path: Path, ds) -> tuple[int, int]:
    """``(Columns, Rows)`` of the header, within the pixel budget (checked before any pixel is decoded)."""
    try:
        width, height = int(ds.get("Columns") or 0), int(ds.get("Rows") or 0)
    except (TypeError, ValueError):
        raise ImageReadError(path, "unreadable", "invalid Rows/Columns in the DICOM header") from None
    if width <= 0 or height <= 0:
        raise ImageReadError(path, "empty", f"DICOM header gives no image size (Rows {height}, Columns {width})")
    check_pixel_budget(path, width, height)
    return width, height


def dicom_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` from the header alone (the pixel data is not read); :class:`ImageReadError` if bad."""
    path = require_file(path)
    return _size(path, _dataset(path, pixels=False))


def _frame(path: Path, ds) -> np.ndarray:
    """The decoded stored values of the single frame (colour converted to RGB by pydicom)."""
    from pydicom.pixels import get_decoder

    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise ImageReadError(path, "multiframe", f"multi-frame DICOM ({frames} frames); kneelib reads "
                                                 "single-frame radiographs only — extract the frame first")
    _size(path, ds)
    ts = ds.file_meta.get("TransferSyntaxUID")
    if ts is not None and ts.is_compressed:
        try:
            decoder = get_decoder(ts)
        except NotImplementedError:
            decoder = None
        if decoder is None or not decoder.is_available:
            needs = "; ".join(decoder.missing_dependencies) if decoder else "no pydicom decoder exists"
            raise ImageReadError(path, "compressed", f"compressed transfer syntax {ts.name} ({ts}) needs a "
                                                     f"decoder plugin that is not installed ({needs})")
    what = f"{ts.name} ({ts}) " if ts is not None and ts.is_compressed else ""
    try:
        with warnings.catch_warnings():  # pydicom warns of pixel data that does not fit its header: refused
            warnings.simplefilter("error", UserWarning)
            return np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom and its plugins raise many types for bad pixel data
        text = " ".join(str(exc).split())
        reason = "truncated" if "less than expected" in text else "unreadable"
        raise ImageReadError(path, reason, f"cannot decode {what}pixel data ({text})") from None


def _to_uint8(arr: np.ndarray, ds) -> np.ndarray:
    """Modality LUT, VOI LUT/window and 0-255 scaling of monochrome stored values."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(arr, ds)
    has_lut = bool(ds.get("VOILUTSequence")) and "LUTData" in ds.VOILUTSequence[0]
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    if has_lut:
        values = apply_voi_lut(values, ds, index=0)
        lo, hi = 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    elif has_window:  # first window of a multi-valued pair; its output range is found by probing
        values = apply_voi_lut(values, ds, index=0, prefer_lut=False)
        lo, hi = (float(v) for v in apply_voi_lut(np.array([-1e300, 1e300]), ds, index=0, prefer_lut=False))
    elif values.dtype == np.uint8:
        return np.ascontiguousarray(values)
    else:
        lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        return np.zeros(values.shape, np.uint8)
    scaled = (values.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _spacing(ds) -> tuple[tuple[float, float] | None, str | None]:
    from pydicom.multival import MultiValue

    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        raw = ds.get(key)
        if raw is None:
            continue
        try:
            vals = [float(v) for v in (raw if isinstance(raw, MultiValue) else [raw])]
            if key == "ImagerPixelSpacing" and ds.get("EstimatedRadiographicMagnificationFactor"):
                vals = [v / float(ds.EstimatedRadiographicMagnificationFactor) for v in vals]
        except (TypeError, ValueError):
            continue
        if vals and all(np.isfinite(v) and v > 0 for v in vals):
            return (vals[0], vals[1] if len(vals) > 1 else vals[0]), key
    return None, None


def decode_dicom(path: str | os.PathLike) -> tuple[np.ndarray, str, object]:
    """``(pixels, photometric, dataset)``: uint8 H×W (monochrome, display-ready) or H×W×3 (colour)."""
    path = require_file(path)
    ds = _dataset(path)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in MONOCHROME + COLOUR:
        raise ImageReadError(path, "wrong-mode", f"unsupported photometric interpretation {photometric!r} "
                                                 f"(supported: MONOCHROME1, MONOCHROME2; RGB/YBR_FULL as luma)")
    arr = _frame(path, ds)
    if arr.ndim < 2 or min(arr.shape[:2]) == 0:
        raise ImageReadError(path, "empty", "DICOM image has no pixels")
    if photometric in COLOUR:
        bits = int(ds.get("BitsStored") or 8)
        if arr.dtype != np.uint8:
            arr = np.clip(np.rint(arr.astype(np.float64) * (255.0 / (2**bits - 1))), 0, 255).astype(np.uint8)
        return arr, photometric, ds
    try:
        with np.errstate(over="ignore"):  # the SIGMOID window saturates at the range probe
            pixels = _to_uint8(arr, ds)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        text = " ".join(str(exc).split())
        raise ImageReadError(path, "unreadable", f"invalid modality/VOI LUT or window ({text})") from None
    if photometric == "MONOCHROME1":
        pixels = 255 - pixels
    return pixels, photometric, ds


def read_dicom(path: str | os.PathLike) -> DicomImage:
    """Read a DICOM radiograph (see the module docstring); :class:`ImageReadError` names the file."""
    pixels, photometric, ds = decode_dicom(path)
    spacing, source = _spacing(ds)
    return DicomImage(to_gray_uint8(pixels), spacing[0] if spacing else None, photometric, spacing, source)
