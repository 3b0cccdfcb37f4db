"""DICOM input: LUTs, windows, MONOCHROME1, bit depths, spacing, colour and one clear error per bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dicom_fixtures import write_bilateral_dicom, write_dicom
from pydicom import uid

from kneelib.data.dicom import DicomImage, is_dicom, read_dicom
from kneelib.data.io import decode, is_image_file, read_image, read_radiograph
from kneelib.data.pixels import ImageReadError
from kneelib.errors import KneelibError
from kneelib.synthetic.bilateral import render_bilateral


def ramp(h: int = 16, w: int = 256) -> np.ndarray:
    """uint8 test image spanning 0..255 (a horizontal ramp plus a little noise)."""
    rng = np.random.default_rng(0)
    img = np.tile(np.arange(w) * 255 // (w - 1), (h, 1)) + rng.integers(-3, 4, (h, w))
    img[0, 0], img[0, 1] = 0, 255
    return np.clip(img, 0, 255).astype(np.uint8)


def test_monochrome2_16bit_round_trip(tmp_path: Path) -> None:
    src = ramp()
    path = write_dicom(tmp_path / "a.dcm", src.astype(np.uint16) * 250 + 100)  # no window: min-max
    image = read_dicom(path)
    assert isinstance(image, DicomImage) and image.photometric == "MONOCHROME2"
    assert image.pixels.dtype == np.uint8 and image.pixels.shape == src.shape
    assert np.abs(image.pixels.astype(int) - src).max() <= 1
    assert image.spacing_mm is None and image.spacing_rc_mm is None


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    src = ramp()
    path = write_dicom(tmp_path / "m1.dcm", 65535 - src.astype(np.uint16) * 257, photometric="MONOCHROME1")
    out = read_image(path)
    assert np.abs(out.astype(int) - src).max() <= 1
    assert out[:, -1].mean() > 250 and out[:, 0].mean() < 5  # dense (high attenuation) end is bright


def test_window_clips_and_scales(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 1500, 2000, 2500, 3000, 4000, 4095]], np.uint16).repeat(4, 0)
    # multi-valued window: the first pair (centre 2000, width 1000 -> 1500..2500) is used
    path = write_dicom(tmp_path / "w.dcm", values, bits_stored=12, window=[(2000, 1000), (500, 100)])
    out = read_image(path)[0].astype(int)
    assert list(out[[0, 1, 5, 6, 7]]) == [0, 0, 255, 255, 255]  # outside the window: clipped
    assert out[2] == 0 and abs(out[3] - 128) <= 1 and out[4] == 255  # LINEAR: (c - 0.5) +/- (w - 1) / 2


def test_voi_lut_sequence_preferred_over_window(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.LUTDescriptor = [256, 1000, 12]  # 256 entries from stored value 1000, 12-bit output
    item.add_new("LUTData", "US", [i * 16 for i in range(256)])
    values = np.array([[0, 1000, 1128, 1255, 4000]], np.uint16).repeat(4, 0)
    path = write_dicom(tmp_path / "lut.dcm", values, bits_stored=12, window=(100, 10),
                       extra={"VOILUTSequence": Sequence([item])})
    out = read_image(path)[0].astype(int)
    assert out[0] == 0 and out[1] == 0 and abs(out[2] - 128) <= 1 and abs(out[3] - 255) <= 1 and out[4] == out[3]


def test_rescale_applied_before_window(tmp_path: Path) -> None:
    values = np.array([[0, 100, 200, 300, 400]], np.uint16).repeat(4, 0)
    # HU-like: v*2 - 1000 -> -1000, -800, -600, -400, -200; window -600 +/- 200 spans -800..-400
    path = write_dicom(tmp_path / "r.dcm", values, bits_stored=12, rescale=(2.0, -1000.0), window=(-600, 400))
    out = read_image(path)[0].astype(int)
    assert out[0] == 0 and out[4] == 255 and abs(out[2] - 128) <= 1
    # the same data without rescale would put everything above the window
    plain = read_image(write_dicom(tmp_path / "p.dcm", values, bits_stored=12, window=(-600, 400)))
    assert (plain == 255).all()


def test_negative_rescale_without_window_is_min_max(tmp_path: Path) -> None:
    src = ramp()
    path = write_dicom(tmp_path / "n.dcm", src.astype(np.uint16) * 16, bits_stored=12, rescale=(-1.0, 0.0))
    assert np.abs(read_image(path).astype(int) - (255 - src)).max() <= 1


@pytest.mark.parametrize("signed", [False, True])
def test_12bit_and_signed(tmp_path: Path, signed: bool) -> None:
    src = ramp()
    wide = src.astype(np.int16) * 16 - (2048 if signed else 0)
    path = write_dicom(tmp_path / "b.dcm", wide if signed else wide.astype(np.uint16), bits_stored=12)
    assert np.abs(read_image(path).astype(int) - src).max() <= 1


def test_8bit_without_window_is_used_as_is(tmp_path: Path) -> None:
    src = (ramp() // 2 + 40).astype(np.uint8)  # not spanning 0..255: must not be stretched
    assert np.array_equal(read_image(write_dicom(tmp_path / "e.dcm", src)), src)


def test_pixel_spacing(tmp_path: Path) -> None:
    src = ramp().astype(np.uint16)
    image = read_dicom(write_dicom(tmp_path / "s.dcm", src, spacing_mm=(0.15, 0.2)))
    assert image.spacing_mm == pytest.approx(0.15) and image.spacing_rc_mm == pytest.approx((0.15, 0.2))
    assert image.spacing_source == "PixelSpacing"
    image = read_dicom(write_dicom(tmp_path / "i.dcm", src, imager_spacing_mm=0.2,
                                   extra={"EstimatedRadiographicMagnificationFactor": 1.25}))
    assert image.spacing_mm == pytest.approx(0.16) and image.spacing_source == "ImagerPixelSpacing"
    both = read_dicom(write_dicom(tmp_path / "b.dcm", src, spacing_mm=0.1, imager_spacing_mm=0.3))
    assert both.spacing_mm == pytest.approx(0.1)
    assert read_radiograph(tmp_path / "s.dcm")[1] == pytest.approx(0.15)


def test_read_radiograph_png_has_no_spacing(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(ramp()).save(tmp_path / "a.png")
    pixels, spacing = read_radiograph(tmp_path / "a.png")
    assert spacing is None and np.array_equal(pixels, ramp())


def test_bilateral_monochrome1_fixture(tmp_path: Path) -> None:
    boxes = write_bilateral_dicom(tmp_path / "knees.dcm", rng_seed=3, width=256, height=208)
    expected, ref_boxes = render_bilateral(np.random.default_rng(3), (1, 3), width=256, height=208)
    pixels, spacing = read_radiograph(tmp_path / "knees.dcm")
    assert np.array_equal(pixels, expected)
    assert boxes == ref_boxes and [b["side"] for b in boxes] == ["R", "L"]
    assert spacing == pytest.approx(boxes[0]["spacing_mm"])


def test_detected_without_suffix(tmp_path: Path) -> None:
    src = ramp()
    path = write_dicom(tmp_path / "IM000001", src.astype(np.uint16) * 257)
    assert is_dicom(path) and not is_image_file(path)
    assert np.abs(read_image(path).astype(int) - src).max() <= 1
    assert decode(path)[1] == "DICOM MONOCHROME2"
    assert is_image_file("a.dcm") and is_image_file("B.DICOM")


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_becomes_luma(tmp_path: Path, photometric: str) -> None:
    from PIL import Image
    from pydicom.pixels import convert_color_space

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    stored = rgb if photometric == "RGB" else convert_color_space(rgb, "RGB", "YBR_FULL")
    path = write_dicom(tmp_path / "c.dcm", stored, photometric=photometric)
    luma = np.asarray(Image.fromarray(rgb, "RGB").convert("L")).astype(int)
    tolerance = 0 if photometric == "RGB" else 2  # YBR <-> RGB round trip loses a level or two
    assert np.abs(read_image(path).astype(int) - luma).max() <= tolerance
    assert decode(path)[0].ndim == 3  # kept as colour so the quality filter can flag it


def expect_error(path: Path, reason: str, *words: str) -> ImageReadError:
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    err = info.value
    assert isinstance(err, KneelibError) and err.reason == reason, (err.reason, str(err))
    assert str(path) in str(err) and "\n" not in str(err)
    for word in words:
        assert word in str(err), (word, str(err))
    with pytest.raises(ImageReadError):
        read_dicom(path)
    return err


def test_no_pixel_data(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "np.dcm", ramp(), omit_pixels=True)
    expect_error(path, "no-pixels", "no pixel data")


def test_compressed_without_decoder(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "jl.dcm", ramp(), transfer_syntax=uid.JPEGLosslessSV1, corrupt_pixels=True)
    expect_error(path, "compressed", uid.JPEGLosslessSV1, "JPEG Lossless", "decoder plugin", "pylibjpeg")


def test_compressed_with_decoder_but_corrupt(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "j2k.dcm", ramp(), transfer_syntax=uid.JPEG2000Lossless, corrupt_pixels=True)
    expect_error(path, "unreadable", uid.JPEG2000Lossless, "JPEG 2000", "cannot decode")


def test_compressed_rle_round_trip(tmp_path: Path) -> None:
    src = ramp()
    path = write_dicom(tmp_path / "rle.dcm", src.astype(np.uint16) * 257, transfer_syntax=uid.RLELossless)
    assert np.abs(read_image(path).astype(int) - src).max() <= 1


def test_truncated_pixel_data(tmp_path: Path) -> None:
    expect_error(write_dicom(tmp_path / "t.dcm", ramp(), corrupt_pixels=True), "truncated", "less than expected")


def test_unsupported_photometric(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "pal.dcm", ramp(), photometric="PALETTE COLOR")
    expect_error(path, "wrong-mode", "PALETTE COLOR", "MONOCHROME1", "MONOCHROME2")


def test_multiframe_refused(tmp_path: Path) -> None:
    frames = np.stack([ramp(), ramp()[:, ::-1]])
    expect_error(write_dicom(tmp_path / "mf.dcm", frames), "multiframe", "2 frames")


def test_invalid_window(tmp_path: Path) -> None:
    expect_error(write_dicom(tmp_path / "bw.dcm", ramp(), window=(100, 0)), "unreadable", "Window Width")


def test_text_file_named_dcm(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_text("patient notes, not an image\n" * 10)
    expect_error(path, "unreadable", "not a DICOM file")


def test_missing_and_empty(tmp_path: Path) -> None:
    expect_error(tmp_path / "gone.dcm", "missing")
    (tmp_path / "empty.dcm").write_bytes(b"")
    expect_error(tmp_path / "empty.dcm", "empty")
