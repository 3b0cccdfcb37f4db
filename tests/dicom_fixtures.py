"""Synthetic DICOM files for tests, written with pydicom (Secondary Capture, Part 10 file format)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from kneelib.atomic import atomic_path
from kneelib.synthetic.bilateral import render_bilateral

Window = tuple[float, float]


def write_dicom(
    path: str | os.PathLike,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    spacing_mm: float | tuple[float, float] | None = None,
    imager_spacing_mm: float | tuple[float, float] | None = None,
    window: Window | Sequence[Window] | None = None,
    rescale: tuple[float, float] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    omit_pixels: bool = False,
    corrupt_pixels: bool = False,
    extra: dict | None = None,
) -> Path:
    """Write ``pixels`` (uint8/uint16/int16; H×W, frames×H×W, or H×W×3 for colour) as a DICOM file.

    ``bits_stored`` defaults to the dtype's width; ``spacing_mm`` sets *Pixel Spacing* (one value or
    (row, col)), ``imager_spacing_mm`` *Imager Pixel Spacing*; ``window`` is (centre, width) or a
    list of them (multi-valued); ``rescale`` is (slope, intercept). A compressed ``transfer_syntax``
    is encoded by pydicom (e.g. RLE Lossless), or — with ``corrupt_pixels`` — holds encapsulated
    garbage; for an uncompressed one ``corrupt_pixels`` cuts the pixel data in half.
    ``omit_pixels`` drops *Pixel Data*; ``extra`` sets further attributes by keyword.
    """
    ts = UID(transfer_syntax)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality, ds.PatientName, ds.PatientID = "OT", "Synthetic^Knee", "0000000"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in (("PixelSpacing", spacing_mm), ("ImagerPixelSpacing", imager_spacing_mm)):
        if value is not None:
            setattr(ds, keyword, [float(v) for v in np.broadcast_to(np.asarray(value, float), (2,))])
    if window is not None:
        pairs = [window] if np.ndim(window) == 1 else list(window)
        ds.WindowCenter = [float(c) for c, _ in pairs] if len(pairs) > 1 else float(pairs[0][0])
        ds.WindowWidth = [float(w) for _, w in pairs] if len(pairs) > 1 else float(pairs[0][1])
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = float(rescale[0]), float(rescale[1]), "US"
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    if ts.is_compressed and corrupt_pixels:
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 this is not a compressed frame " * 4])
        ds["PixelData"].VR = "OB"
        meta.TransferSyntaxUID = ts
    elif ts.is_compressed:
        ds.compress(ts)
    else:
        meta.TransferSyntaxUID = ts
        if corrupt_pixels:
            ds.PixelData = ds.PixelData[: len(ds.PixelData) // 4 * 2]
    if omit_pixels:
        del ds.PixelData
    with atomic_path(path) as tmp:
        dcmwrite(tmp, ds, enforce_file_format=True)
    return Path(path)


def write_bilateral_dicom(
    path: str | os.PathLike,
    rng_seed: int = 0,
    width: int = 512,
    height: int = 416,
    *,
    grades: tuple[int, int] = (1, 3),
) -> list[dict]:
    """A synthetic bilateral radiograph as a 16-bit MONOCHROME1 DICOM; returns its knee boxes.

    The image is ``render_bilateral(np.random.default_rng(rng_seed), grades, width=, height=)``,
    expanded to 16 bits (``v * 257``), inverted (``65535 - v``) and stored as MONOCHROME1 with
    *Pixel Spacing* set to the boxes' spacing and a full-range window (centre 32768, width 65536),
    so :func:`kneelib.data.dicom.read_dicom` gives back exactly the rendered uint8 image.
    """
    image, boxes = render_bilateral(np.random.default_rng(rng_seed), grades, width=width, height=height)
    wide = 65535 - image.astype(np.uint16) * 257
    write_dicom(path, wide, photometric="MONOCHROME1", bits_stored=16, spacing_mm=boxes[0]["spacing_mm"],
                window=(32768, 65536))
    return boxes
