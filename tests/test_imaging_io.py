"""srpipe.imaging.io: faithful reads (every format and mode), bad input, the pixel cap, write refusals
and failed writes that leave nothing behind. Orientation, ICC/EXIF and atomic_path: test_imaging_metadata."""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import smooth_image
from PIL import Image as PILImage
from PIL import ImageCms, ImageFile

from srpipe.errors import (
    ImageDecodeError,
    ImageTooLargeError,
    InputError,
    OutputError,
    SrpipeError,
    UnsupportedImageError,
    UsageError,
)
from srpipe.imaging.io import IMAGE_SUFFIXES, read_image, write_image

H, W = 17, 23  # odd sizes, H != W so that transposition shows
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def iim(record: int, dataset: int, value: bytes) -> bytes:
    return bytes([0x1C, record, dataset]) + struct.pack(">H", len(value)) + value


# An IPTC-IIM record as Photoshop writes it: UTF-8 declared (1:90), object name, keywords, copyright.
IPTC = (iim(1, 90, b"\x1b%G") + iim(2, 0, b"\x00\x04") + iim(2, 5, b"Sunset") + iim(2, 25, b"sea")
        + iim(2, 25, b"sky") + iim(2, 116, "© 2026 Ann Example".encode()))


def app13(record: bytes) -> bytes:
    """A Photoshop APP13 marker as cameras and Photoshop write it: a resolution resource before the
    IPTC one (0x0404, here with a non-empty padded name) and a caption digest after it."""
    def resource(rid: int, name: bytes, data: bytes) -> bytes:
        pascal = bytes([len(name)]) + name
        pascal += b"\0" * (len(pascal) % 2)
        padded = data + b"\0" * (len(data) % 2)
        return b"8BIM" + struct.pack(">H", rid) + pascal + struct.pack(">I", len(data)) + padded
    body = (b"Photoshop 3.0\0" + resource(0x03ED, b"", bytes(16)) + resource(0x0404, b"IPTC", record)
            + resource(0x0425, b"", bytes(16)))
    return b"\xff\xed" + struct.pack(">H", len(body) + 2) + body


def pillow_bytes(img: PILImage.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def exif_bytes(orientation: int = 1, **extra: object) -> bytes:
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "srpipe-test-camera"
    sub = exif.get_ifd(0x8769)
    sub[0xA002], sub[0xA003] = W, H
    return exif.tobytes()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header but holds almost no data (a decompression-bomb probe)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


# ---- round trips through write_image / read_image ---------------------------------------------------

LOSSLESS = [(s, layout, dt) for s in (".png", ".tif") for layout in ("gray", "rgb", "rgba")
            for dt in (np.uint8, np.uint16)] + [(".webp", "rgb", np.uint8), (".webp", "rgba", np.uint8),
                                                (".bmp", "gray", np.uint8), (".bmp", "rgb", np.uint8)]


def make(rng: np.random.Generator, layout: str, dtype: type = np.uint8) -> np.ndarray:
    channels = {"gray": 1, "rgb": 3, "rgba": 4}[layout]
    img = smooth_image(rng, H, W, channels, dtype)
    return img[..., 0] if layout == "gray" else img


@pytest.mark.parametrize(("suffix", "layout", "dtype"), LOSSLESS)
def test_lossless_round_trip_keeps_values_layout_and_depth(tmp_path, rng, suffix, layout, dtype):
    pixels = make(rng, layout, dtype)
    path = tmp_path / f"img{suffix}"
    write_image(path, pixels, quality=100)
    image = read_image(path)
    assert image.pixels.dtype == dtype and image.bit_depth == (16 if dtype == np.uint16 else 8)
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.format == {".tif": "tiff", ".webp": "webp", ".bmp": "bmp", ".png": "png"}[suffix]
    assert image.path == path and image.orientation == 1
    assert os.listdir(tmp_path) == [path.name]


@pytest.mark.parametrize("layout", ["gray", "rgb"])
@pytest.mark.parametrize(("quality", "subsampling"), [(95, 0), (80, 2)])  # 4:4:4 from quality 90 up
def test_jpeg_written_with_the_stated_quality_and_chroma(tmp_path, rng, layout, quality, subsampling):
    pixels = make(rng, layout)
    write_image(tmp_path / "a.jpg", pixels, quality=quality)
    got = read_image(tmp_path / "a.jpg")
    assert got.pixels.shape == pixels.shape and got.format == "jpeg"
    reference = pillow_bytes(PILImage.fromarray(pixels), "JPEG", quality=quality, subsampling=subsampling)
    np.testing.assert_array_equal(got.pixels, np.asarray(PILImage.open(io.BytesIO(reference))))
    assert np.abs(got.pixels.astype(int) - pixels).mean() < 12  # noisy test image


def test_suffixes_cover_every_format(tmp_path, rng):
    assert set(IMAGE_SUFFIXES) == {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
    for suffix in IMAGE_SUFFIXES:
        write_image(tmp_path / f"x{suffix.upper()}", make(rng, "rgb"))  # suffix case does not matter
        assert read_image(tmp_path / f"x{suffix.upper()}").pixels.shape == (H, W, 3)


# ---- explicit conversions of files written by Pillow/OpenCV, not by srpipe --------------------------


def test_palette_without_and_with_transparency(tmp_path, rng):
    pal = PILImage.fromarray(make(rng, "rgb")).quantize(16)
    (tmp_path / "p.png").write_bytes(pillow_bytes(pal, "PNG"))
    got = read_image(tmp_path / "p.png")
    assert got.mode == "P" and got.pixels.shape == (H, W, 3)
    np.testing.assert_array_equal(got.pixels, np.asarray(pal.convert("RGB")))
    index = np.asarray(pal)
    (tmp_path / "pt.png").write_bytes(pillow_bytes(pal, "PNG", transparency=int(index[0, 0])))
    got = read_image(tmp_path / "pt.png")
    assert got.pixels.shape == (H, W, 4)
    np.testing.assert_array_equal(got.pixels[..., 3] == 0, index == index[0, 0])
    np.testing.assert_array_equal(got.pixels[..., :3], np.asarray(pal.convert("RGB")))


@pytest.mark.parametrize("layout", ["gray", "rgb"])
def test_png_colour_key_becomes_alpha(tmp_path, rng, layout):
    pixels = make(rng, layout)
    key = int(pixels[0, 0]) if layout == "gray" else tuple(int(v) for v in pixels[0, 0])
    (tmp_path / "k.png").write_bytes(pillow_bytes(PILImage.fromarray(pixels), "PNG", transparency=key))
    got = read_image(tmp_path / "k.png").pixels
    assert got.shape == (H, W, 4)
    keyed = pixels == pixels[0, 0] if layout == "gray" else np.all(pixels == pixels[0, 0], axis=-1)
    np.testing.assert_array_equal(got[..., 3], np.where(keyed, 0, 255))
    np.testing.assert_array_equal(got[..., 0], pixels if layout == "gray" else pixels[..., 0])


def test_one_bit_becomes_uint8_gray(tmp_path, rng):
    bits = make(rng, "gray") > 128
    (tmp_path / "b.png").write_bytes(pillow_bytes(PILImage.fromarray(bits), "PNG"))
    (tmp_path / "b.bmp").write_bytes(pillow_bytes(PILImage.fromarray(bits), "BMP"))
    for name in ("b.png", "b.bmp"):
        got = read_image(tmp_path / name).pixels
        assert got.dtype == np.uint8 and got.shape == (H, W)
        np.testing.assert_array_equal(got, np.where(bits, 255, 0))


def test_gray_alpha_becomes_rgba_with_gray_replicated(tmp_path, rng):
    gray, alpha = make(rng, "gray"), make(rng, "gray")[::-1].copy()
    la = PILImage.merge("LA", [PILImage.fromarray(gray), PILImage.fromarray(alpha)])
    (tmp_path / "la.png").write_bytes(pillow_bytes(la, "PNG"))
    got = read_image(tmp_path / "la.png")
    assert got.mode == "LA" and got.pixels.shape == (H, W, 4)
    for c in range(3):
        np.testing.assert_array_equal(got.pixels[..., c], gray)
    np.testing.assert_array_equal(got.pixels[..., 3], alpha)


def test_cmyk_jpeg_becomes_rgb_and_drops_its_cmyk_profile(tmp_path, rng, caplog):
    cmyk_icc = bytearray(SRGB)
    cmyk_icc[16:20] = b"CMYK"
    img = PILImage.fromarray(make(rng, "rgb")).convert("CMYK")
    (tmp_path / "c.jpg").write_bytes(pillow_bytes(img, "JPEG", quality=95, icc_profile=bytes(cmyk_icc)))
    with caplog.at_level(logging.WARNING):
        got = read_image(tmp_path / "c.jpg")
    assert got.mode == "CMYK" and got.pixels.shape == (H, W, 3) and got.icc is None
    with PILImage.open(tmp_path / "c.jpg") as ref:
        np.testing.assert_array_equal(got.pixels, np.asarray(ref.convert("RGB")))
    assert "ICC profile dropped" in caplog.text and "c.jpg" in caplog.text


def test_16bit_colour_png_from_opencv_and_16bit_gray_from_pillow(tmp_path, rng):
    rgb16 = make(rng, "rgb", np.uint16)
    cv2.imwrite(str(tmp_path / "c.png"), rgb16[..., ::-1])
    got = read_image(tmp_path / "c.png")
    assert got.pixels.dtype == np.uint16
    np.testing.assert_array_equal(got.pixels, rgb16)
    gray16 = make(rng, "gray", np.uint16)
    (tmp_path / "g.png").write_bytes(pillow_bytes(PILImage.fromarray(gray16), "PNG"))
    np.testing.assert_array_equal(read_image(tmp_path / "g.png").pixels, gray16)


def test_mpo_phone_photo_reads_as_jpeg(tmp_path, rng):
    frames = [PILImage.fromarray(make(rng, "rgb")) for _ in range(2)]
    frames[0].save(tmp_path / "m.jpg", "MPO", save_all=True, append_images=frames[1:])
    got = read_image(tmp_path / "m.jpg")
    assert got.format == "jpeg" and got.pixels.shape == (H, W, 3)


def test_float_tiff_is_unsupported(tmp_path, rng):
    img = PILImage.fromarray(rng.random((H, W)).astype(np.float32))
    (tmp_path / "f.tif").write_bytes(pillow_bytes(img, "TIFF"))
    with pytest.raises(UnsupportedImageError, match=r"f\.tif.*F images"):
        read_image(tmp_path / "f.tif")


# ---- bad input -----------------------------------------------------------------------------------


def test_missing_and_directory_inputs(tmp_path):
    with pytest.raises(InputError, match=r"nope\.png"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="not a file"):
        read_image(tmp_path)


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match=r"empty\.jpg.*0 bytes"):
        read_image(tmp_path / "empty.jpg")


@pytest.mark.parametrize(("suffix", "dtype"), [(".png", np.uint8), (".png", np.uint16), (".jpg", np.uint8),
                                               (".webp", np.uint8), (".tif", np.uint8), (".bmp", np.uint8)])
@pytest.mark.parametrize("keep", [0.05, 0.5, 0.9])
def test_truncated_files_raise_instead_of_returning_partial_images(tmp_path, rng, suffix, dtype, keep):
    pixels = smooth_image(rng, 64, 48, 3, dtype)
    path = tmp_path / f"t{suffix}"
    write_image(path, pixels, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageDecodeError, match=f"t\\{suffix}"):
        read_image(path)


def test_garbage_with_an_image_suffix_is_a_decode_error(tmp_path, rng):
    (tmp_path / "g.png").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(ImageDecodeError, match=r"g\.png.*not a valid PNG"):
        read_image(tmp_path / "g.png")


def test_unknown_and_unsupported_formats(tmp_path, rng):
    (tmp_path / "notes.txt").write_text("hello, not an image")
    with pytest.raises(UnsupportedImageError, match=r"notes\.txt.*supported format"):
        read_image(tmp_path / "notes.txt")
    (tmp_path / "a.gif").write_bytes(pillow_bytes(PILImage.fromarray(make(rng, "rgb")), "GIF"))
    with pytest.raises(UnsupportedImageError, match=r"a\.gif.*GIF images are not supported"):
        read_image(tmp_path / "a.gif")


def test_truncated_images_setting_is_refused(tmp_path, rng, monkeypatch):
    write_image(tmp_path / "a.png", make(rng, "rgb"))
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(SrpipeError, match="LOAD_TRUNCATED_IMAGES"):
        read_image(tmp_path / "a.png")


# ---- pixel cap ---------------------------------------------------------------------------------------


def test_pixel_cap_fires_before_decoding(tmp_path, rng, monkeypatch):
    write_image(tmp_path / "a.png", make(rng, "rgb"))

    def no_decode(*args, **kwargs):
        raise AssertionError("pixels were decoded before the cap was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    monkeypatch.setattr(cv2, "imdecodeWithMetadata", no_decode)
    with pytest.raises(ImageTooLargeError) as err:
        read_image(tmp_path / "a.png", max_pixels=H * W - 1)
    message = str(err.value)
    assert "a.png" in message and f"{H * W - 1:,}" in message and f"--max-pixels {H * W}" in message


# 225 MP (where Pillow would warn), 400 MP and 10 GP (where it would refuse with its own figures)
@pytest.mark.parametrize("side", [15_000, 20_000, 100_000])
def test_pixel_cap_on_a_bomb_header_is_srpipes_own_message(tmp_path, side):
    (tmp_path / "bomb.png").write_bytes(png_header(side, side))  # the size claimed in ~100 bytes
    pillow_limit = PILImage.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning (or any other) would raise here
        with pytest.raises(ImageTooLargeError) as err:
            read_image(tmp_path / "bomb.png")
    assert str(err.value) == (
        f"{tmp_path / 'bomb.png'}: {side}×{side} = {side * side:,} pixels is over the limit of 178,956,970 "
        f"(a guard against decompression bombs); pass --max-pixels {side * side} if you trust this file")
    assert pillow_limit == PILImage.MAX_IMAGE_PIXELS  # Pillow's own guard is back for everyone else


def test_raised_cap_is_not_vetoed_by_pillow(tmp_path, rng, monkeypatch):
    write_image(tmp_path / "a.png", make(rng, "rgb"))
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 10)  # Pillow alone would refuse this image
    assert read_image(tmp_path / "a.png", max_pixels=10_000).pixels.shape == (H, W, 3)


# ---- writing: refusals and atomicity -----------------------------------------------------------------


def test_write_refusals_are_clear(tmp_path, rng):
    rgb16, rgba = make(rng, "rgb", np.uint16), make(rng, "rgba")
    with pytest.raises(UnsupportedImageError, match=r"a\.jpg.*8 bits.*to_uint8"):
        write_image(tmp_path / "a.jpg", rgb16)
    with pytest.raises(UnsupportedImageError, match=r"a\.bmp.*alpha"):
        write_image(tmp_path / "a.bmp", rgba)
    with pytest.raises(UnsupportedImageError, match=r"a\.gif.*\.png"):
        write_image(tmp_path / "a.gif", rgba)
    with pytest.raises(UnsupportedImageError, match="float32"):
        write_image(tmp_path / "a.png", rgba.astype(np.float32))
    with pytest.raises(UnsupportedImageError, match="16383"):
        write_image(tmp_path / "wide.webp", np.zeros((1, 16_384, 3), np.uint8))
    with pytest.raises(UsageError, match="quality"):
        write_image(tmp_path / "a.jpg", rgba[..., :3], quality=0)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("with_metadata", [False, True])
def test_failed_write_leaves_target_untouched_and_no_temp(tmp_path, rng, monkeypatch, with_metadata):
    target = tmp_path / "out.png"
    write_image(target, make(rng, "rgb"))
    before = target.read_bytes()

    def dies_half_way(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG\r\n\x1a\n partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PILImage.Image, "save", dies_half_way)
    meta = {"icc": SRGB, "exif": exif_bytes(1)} if with_metadata else {}
    with pytest.raises(OutputError, match=r"out\.png.*No space left"):
        write_image(target, make(rng, "rgb"), **meta)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.png"]


def test_write_into_missing_folder_or_over_a_directory(tmp_path, rng):
    with pytest.raises(OutputError, match="cannot create a file there"):
        write_image(tmp_path / "missing" / "a.png", make(rng, "rgb"))
    (tmp_path / "d.png").mkdir()
    with pytest.raises(OutputError, match=r"d\.png"):
        write_image(tmp_path / "d.png", make(rng, "rgb"))
    assert os.listdir(tmp_path) == ["d.png"] and os.listdir(tmp_path / "d.png") == []
