"""srpipe.imaging.metadata, .exiv and .atomic, through read_image/write_image: EXIF orientation (all 8,
every decoder path), ICC/EXIF/XMP/IPTC round trips through libexiv2 and what is dropped (with the
reason) when it cannot be kept, atomic replacement. Real camera files: test_metadata_exiv2."""

from __future__ import annotations

import logging
import os
import struct

import cv2
import exiv2
import numpy as np
import pytest
from PIL import Image as PILImage
from test_imaging_io import IPTC, SRGB, H, W, app13, exif_bytes, iim, make, pillow_bytes

from srpipe.config import DownscaleConfig
from srpipe.downscale import downscale
from srpipe.imaging import exiv
from srpipe.imaging import write as imwrite
from srpipe.imaging.io import atomic_path, read_image, write_image
from srpipe.imaging.metadata import updated_xmp


def displayed(a: np.ndarray, orientation: int) -> np.ndarray:
    """Reference for EXIF orientations, written independently of the code under test."""
    return {1: a, 2: np.fliplr(a), 3: np.rot90(a, 2), 4: np.flipud(a), 5: np.rot90(np.fliplr(a), 1),
            6: np.rot90(a, -1), 7: np.rot90(np.fliplr(a), -1), 8: np.rot90(a, 1)}[orientation]


def tiff16(pixels: np.ndarray, orientation: int = 1) -> bytes:
    """A minimal uncompressed 16-bit TIFF (Pillow cannot write 16-bit colour), with an orientation tag."""
    h, w = pixels.shape[:2]
    c = 1 if pixels.ndim == 2 else pixels.shape[2]
    data = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    n = 11 if c == 4 else 10
    extra_off = 8 + 2 + 12 * n + 4
    bps = struct.pack("<" + "H" * c, *([16] * c)) if c > 1 else b""
    data_off = extra_off + len(bps)
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, c, 16 if c == 1 else extra_off), (259, 3, 1, 1),
               (262, 3, 1, 2 if c >= 3 else 1), (273, 4, 1, data_off), (274, 3, 1, orientation),
               (277, 3, 1, c), (278, 4, 1, h), (279, 4, 1, len(data))] + ([(338, 3, 1, 2)] if c == 4 else [])
    ifd = struct.pack("<H", n)
    for tag, typ, count, value in entries:
        packed = struct.pack("<HH", value, 0) if typ == 3 and count == 1 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, count) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 4 + bps + data


# ---- EXIF orientation -----------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_orientation_applied_lossless_formats(tmp_path, rng, fmt, orientation):
    pixels = make(rng, "rgb")
    path = tmp_path / f"o.{fmt.lower()}"
    params: dict[str, object] = {"lossless": True} if fmt == "WEBP" else {}
    path.write_bytes(pillow_bytes(PILImage.fromarray(pixels), fmt, exif=exif_bytes(orientation), **params))
    got = read_image(path)
    np.testing.assert_array_equal(got.pixels, displayed(pixels, orientation))
    assert got.pixels.flags.c_contiguous


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_applied_jpeg(tmp_path, rng, orientation):
    img = PILImage.fromarray(make(rng, "rgb"))
    (tmp_path / "o.jpg").write_bytes(pillow_bytes(img, "JPEG", exif=exif_bytes(orientation)))
    (tmp_path / "ref.jpg").write_bytes(pillow_bytes(img, "JPEG", exif=exif_bytes(1)))
    got = read_image(tmp_path / "o.jpg")
    np.testing.assert_array_equal(got.pixels, displayed(read_image(tmp_path / "ref.jpg").pixels, orientation))
    assert got.orientation == orientation
    assert got.exif is not None and PILImage.Exif().load(got.exif) is None  # raw EXIF kept, parseable


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_applied_16bit_colour(tmp_path, rng, orientation):
    """The OpenCV paths: 16-bit PNG (EXIF read by OpenCV) and 16-bit TIFF (libtiff rotates)."""
    rgb16 = make(rng, "rgb", np.uint16)
    types, chunks = [cv2.IMAGE_METADATA_EXIF], [np.frombuffer(exif_bytes(orientation)[6:], np.uint8)]
    ok, buf = cv2.imencodeWithMetadata(".png", rgb16[..., ::-1].copy(), types, chunks)
    assert ok
    (tmp_path / "o.png").write_bytes(buf.tobytes())
    np.testing.assert_array_equal(read_image(tmp_path / "o.png").pixels, displayed(rgb16, orientation))
    (tmp_path / "o.tif").write_bytes(tiff16(rgb16, orientation))
    np.testing.assert_array_equal(read_image(tmp_path / "o.tif").pixels, displayed(rgb16, orientation))


# ---- ICC and EXIF --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_icc_and_exif_round_trip_with_exif_made_true(tmp_path, rng, suffix):
    pixels = make(rng, "rgb")
    path = tmp_path / f"m{suffix}"
    write_image(path, pixels, icc=SRGB, exif=exif_bytes(6))
    got = read_image(path)
    assert got.icc == SRGB
    exif = PILImage.Exif()
    exif.load(got.exif)
    assert exif[0x010F] == "srpipe-test-camera" and exif.get(0x0112, 1) == 1  # orientation reset
    assert got.orientation == 1 and got.pixels.shape == (H, W, 3)  # so not rotated again


def test_icc_and_exif_round_trip_16bit_png(tmp_path, rng):
    pixels = make(rng, "rgba", np.uint16)
    write_image(tmp_path / "m.png", pixels, icc=SRGB, exif=exif_bytes(3))
    got = read_image(tmp_path / "m.png")
    np.testing.assert_array_equal(got.pixels, pixels)
    assert got.icc == SRGB and got.exif is not None and got.orientation == 1


@pytest.mark.parametrize("kind", ["rgb", "rgba"])
def test_16bit_colour_tiff_keeps_pixels_icc_and_exif(tmp_path, rng, caplog, kind):
    pixels = make(rng, kind, np.uint16)
    exif = PILImage.Exif()
    exif.load(exif_bytes(6))
    exif[0x8298] = "(c) srpipe test"  # Copyright: IFD0, longer than 4 bytes (stored at an offset)
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (47.0, 22.0, 1.5)  # GPSLatitudeRef, GPSLatitude (rationals)
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / "m.tif", pixels, icc=SRGB, exif=exif.tobytes())
    assert not caplog.text  # nothing dropped
    got = read_image(tmp_path / "m.tif")
    np.testing.assert_array_equal(got.pixels, pixels)
    assert got.icc == SRGB and got.exif is not None
    back = PILImage.Exif()
    back.load(got.exif)
    assert back[0x010F] == "srpipe-test-camera" and back[0x8298] == "(c) srpipe test"
    assert back.get(0x0112, 1) == 1  # the pixels are stored upright
    assert (back.get_ifd(0x8769)[0xA002], back.get_ifd(0x8769)[0xA003]) == (W, H)  # this image's size
    assert back.get_ifd(0x8825)[1] == "N" and [float(v) for v in back.get_ifd(0x8825)[2]] == [47, 22, 1.5]
    decoded = cv2.imread(str(tmp_path / "m.tif"), cv2.IMREAD_UNCHANGED)  # libtiff reads the patched file
    assert decoded.dtype == np.uint16 and decoded.shape == pixels.shape


def _camera_exif(thumbnail: int = 30) -> bytes:
    """EXIF laid out like a camera's: IFD0 (Make, Orientation 6, Exif pointer), an Exif IFD
    (PixelXDimension SHORT, PixelYDimension LONG, a maker note of no format libexiv2 knows), and IFD1
    with a JPEG thumbnail of ``thumbnail`` bytes."""
    make_at, ifd0, exif_ifd = 8, 24, 70
    note_at, ifd1, thumb_at = 120, 140, 170
    tiff = bytearray(thumb_at + thumbnail)
    tiff[:8] = b"II*\0" + struct.pack("<I", ifd0)
    tiff[make_at : make_at + 8] = b"Camera\0\0"
    struct.pack_into("<H", tiff, ifd0, 3)
    struct.pack_into("<HHII", tiff, ifd0 + 2, 0x010F, 2, 7, make_at)
    struct.pack_into("<HHIHH", tiff, ifd0 + 14, 0x0112, 3, 1, 6, 0)
    struct.pack_into("<HHII", tiff, ifd0 + 26, 0x8769, 4, 1, exif_ifd)
    struct.pack_into("<I", tiff, ifd0 + 38, ifd1)
    struct.pack_into("<H", tiff, exif_ifd, 3)
    struct.pack_into("<HHIHH", tiff, exif_ifd + 2, 0xA002, 3, 1, W, 0)
    struct.pack_into("<HHII", tiff, exif_ifd + 14, 0xA003, 4, 1, H)
    struct.pack_into("<HHII", tiff, exif_ifd + 26, 0x927C, 7, 16, note_at)
    tiff[note_at : note_at + 16] = NOTE
    struct.pack_into("<H", tiff, ifd1, 2)
    struct.pack_into("<HHII", tiff, ifd1 + 2, 0x0201, 4, 1, thumb_at)
    struct.pack_into("<HHII", tiff, ifd1 + 14, 0x0202, 4, 1, thumbnail)
    tiff[thumb_at:] = b"\xff\xd8" + bytes(thumbnail - 4) + b"\xff\xd9"
    return b"Exif\0\0" + bytes(tiff)


NOTE = b"NOTE\x01\x02\x03\x04lensinfo"  # a maker note libexiv2 cannot parse: copied as it is


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_the_thumbnail_is_deleted_and_sizes_grow_past_a_short(tmp_path, rng, caplog, suffix):
    """IFD1 shows the old pixels in the old orientation: deleted, so a 70 KB thumbnail does not cost
    JPEG its EXIF either; a size over 65,535 px no longer fits a SHORT and is stored as a LONG."""
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / f"t{suffix}", make(rng, "rgb"), exif=_camera_exif(thumbnail=70_000))
    assert not caplog.text
    got = read_image(tmp_path / f"t{suffix}").exif
    assert got is not None and len(got) < 1000
    exif = PILImage.Exif()
    exif.load(got)
    assert exif[0x010F] == "Camera" and exif[0x0112] == 1 and exif.get_ifd(0x8769)[0xA002] == W
    assert exif.get_ifd(0x8769)[0x927C] == NOTE  # an unknown maker note, byte for byte
    assert not exif.get_ifd(0x8769).get(0x0201) and 0x0201 not in exif  # no thumbnail anywhere
    tags = exiv.exif_data(got)
    assert not [d.key() for d in tags if d.key().startswith("Exif.Thumbnail.")]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_width_over_65535_no_longer_fits_a_short_and_is_stored_as_a_long(tmp_path, suffix):
    write_image(tmp_path / f"wide{suffix}", np.zeros((2, 70_000, 3), np.uint8), exif=_camera_exif())
    tags = exiv.exif_data(read_image(tmp_path / f"wide{suffix}").exif or b"")
    width = tags.findKey(exiv2.ExifKey("Exif.Photo.PixelXDimension"))
    assert width.toString() == "70000" and width.typeId() == exiv2.TypeId.unsignedLong
    assert tags.findKey(exiv2.ExifKey("Exif.Photo.PixelYDimension")).toString() == "2"


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_exif_over_64kb_loses_its_largest_tag_named_except_in_tiff(tmp_path, rng, caplog, suffix):
    """libexiv2 keeps EXIF within one JPEG marker (64 KB) in every format but TIFF: it leaves out the
    largest tags, and says which; srpipe passes that on."""
    exif = PILImage.Exif()
    exif[0x010F] = "Camera"
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\0\0\0" + b"y" * 70_000  # UserComment
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / f"c{suffix}", make(rng, "rgb"), exif=exif.tobytes())
    written = exiv2.ImageFactory.open(str(tmp_path / f"c{suffix}"))
    written.readMetadata()
    assert written.exifData()["Exif.Image.Make"].toString() == "Camera"
    comment = written.exifData().findKey(exiv2.ExifKey("Exif.Photo.UserComment"))
    if suffix == ".tif":
        assert comment.size() == 70_008 and not caplog.text
        read_image(tmp_path / "c.tif")  # a TIFF source's EXIF is carried within that limit too
        assert ("c.tif: EXIF read in part: libexiv2: Exif tag Exif.Photo.UserComment not encoded"
                in caplog.text)
    else:
        assert comment == written.exifData().end()
        assert (f"c{suffix}: metadata written in part: libexiv2: Exif tag Exif.Photo.UserComment not "
                "encoded") in caplog.text


def test_iptc_is_read_from_jpeg_and_tiff_and_kept_where_the_format_has_a_place(tmp_path, rng, caplog):
    from PIL import IptcImagePlugin

    src = tmp_path / "src.jpg"
    PILImage.fromarray(make(rng, "rgb")).save(src, quality=95, extra=app13(IPTC))
    assert read_image(src).iptc == IPTC  # the 0x0404 resource only, not its neighbours
    deep = make(rng, "rgb", np.uint16)
    with caplog.at_level(logging.INFO):
        targets = {"o.jpg": make(rng, "rgb"), "o.tif": make(rng, "rgb"), "o16.tif": deep,
                   "g.tif": make(rng, "gray"), "o.png": make(rng, "rgb"), "o.webp": make(rng, "rgb")}
        for name, px in targets.items():
            write_image(tmp_path / name, px, iptc=read_image(src).iptc, exif=exif_bytes(1))
    for name in ("o.jpg", "o.tif", "g.tif", "o16.tif"):
        got = read_image(tmp_path / name)
        assert got.iptc == IPTC and got.exif is not None, name
    assert np.array_equal(read_image(tmp_path / "o16.tif").pixels, deep)  # pixels untouched by the patch
    with PILImage.open(tmp_path / "o.jpg") as im:  # an independent reader finds the fields
        info = IptcImagePlugin.getiptcinfo(im)
    assert info is not None and info[(2, 5)] == b"Sunset" and info[(2, 25)] == [b"sea", b"sky"]
    with PILImage.open(tmp_path / "o.tif") as im:
        info = IptcImagePlugin.getiptcinfo(im)
    assert info is not None and info[(2, 116)] == "© 2026 Ann Example".encode()
    assert read_image(tmp_path / "o.png").iptc is None and read_image(tmp_path / "o.webp").iptc is None
    assert "no standard place for IPTC" in caplog.text
    # Over one APP13 marker (an extended dataset): libexiv2 splits the record over two markers and
    # reads it back whole; srpipe's reader (Pillow's) sees the datasets of the first one only.
    huge = IPTC + bytes([0x1C, 2, 120]) + struct.pack(">HI", 0x8004, 70_001) + b"x" * 70_001
    write_image(tmp_path / "huge.jpg", make(rng, "rgb"), iptc=huge, exif=exif_bytes(1))
    got = read_image(tmp_path / "huge.jpg")
    assert got.iptc == IPTC and got.exif is not None
    back = exiv2.ImageFactory.open(str(tmp_path / "huge.jpg"))
    back.readMetadata()
    assert back.iptcData()["Iptc.Application2.Caption"].size() == 70_001
    assert (tmp_path / "huge.jpg").read_bytes().count(b"Photoshop 3.0\0") == 2


def test_iptc_of_keeps_whole_datasets_only(tmp_path, rng):
    from srpipe.imaging.metadata import iptc_of

    def jpeg_with(record: bytes) -> bytes | None:
        path = tmp_path / "x.jpg"
        PILImage.fromarray(make(rng, "rgb")).save(path, extra=app13(record))
        with PILImage.open(path) as im:
            return iptc_of(im)

    assert jpeg_with(IPTC + bytes(3)) == IPTC  # Photoshop pads the record with zeros
    assert jpeg_with(IPTC + iim(2, 120, b"a caption")[:9]) == IPTC  # a dataset cut short is dropped
    long_value = bytes(range(256)) * 160  # 40,960 bytes: an extended (4-byte length) dataset
    extended = bytes([0x1C, 2, 202]) + struct.pack(">HI", 0x8004, len(long_value)) + long_value
    assert jpeg_with(IPTC + extended) == IPTC + extended
    assert jpeg_with(b"not iptc at all") is None


def test_an_iptc_reader_failure_costs_the_record_not_the_image(tmp_path, rng, monkeypatch, caplog):
    from srpipe.imaging import io as imio

    path = tmp_path / "x.jpg"
    PILImage.fromarray(make(rng, "rgb")).save(path, extra=app13(IPTC))

    def broken(im: object) -> bytes:
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(imio, "iptc_of", broken)
    with caplog.at_level(logging.WARNING):
        got = read_image(path)
    assert got.iptc is None and got.pixels.shape == (H, W, 3)
    assert "x.jpg: IPTC record dropped: unpack requires" in caplog.text


def test_invalid_or_mismatched_icc_is_dropped_not_fatal(tmp_path, rng, caplog):
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / "bad.png", make(rng, "rgb"), icc=b"garbage" * 40)
        write_image(tmp_path / "gray.png", make(rng, "gray"), icc=SRGB)  # RGB profile, gray pixels
        write_image(tmp_path / "bad16.png", make(rng, "rgb", np.uint16), icc=b"\x00" * 200)
    for name in ("bad.png", "gray.png", "bad16.png"):
        assert read_image(tmp_path / name).icc is None
        assert name in caplog.text
    assert "ICC profile not written" in caplog.text


def test_a_png_encoder_refusing_the_profile_costs_the_profile_only(tmp_path, rng, monkeypatch, caplog):
    real = imwrite._encode

    def picky(tmp, pixels, fmt, quality, icc=None):
        if icc is not None:
            raise ValueError("libpng: Incorrect data in iCCP")
        real(tmp, pixels, fmt, quality, icc)

    monkeypatch.setattr(imwrite, "_encode", picky)
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / "r.png", make(rng, "rgb"), icc=SRGB, exif=exif_bytes(1), xmp=XMP)
    got = read_image(tmp_path / "r.png")
    assert got.icc is None and got.exif is not None and got.xmp is not None
    assert "r.png: ICC profile not written: the PNG encoder refused it (libpng: Incorrect" in caplog.text


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
def test_metadata_libexiv2_refuses_costs_that_metadata_only(tmp_path, rng, monkeypatch, caplog, suffix):
    """Everything is tried at once, then each kind alone: only the refused one is dropped, named."""
    def refuses(exif: bytes) -> object:
        raise exiv2.Exiv2Error(exiv2.ErrorCode.kerCorruptedMetadata, "Corrupted metadata")

    monkeypatch.setattr(exiv, "exif_data", refuses)
    pixels = make(rng, "rgb")
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / f"r{suffix}", pixels, icc=SRGB, exif=exif_bytes(1), xmp=XMP, iptc=IPTC)
    got = read_image(tmp_path / f"r{suffix}")
    assert got.exif is None and got.icc == SRGB and got.xmp == _as_written(W, H)
    assert got.iptc == (None if suffix == ".png" else IPTC)
    assert f"r{suffix}: EXIF not written: libexiv2: Corrupted metadata" in caplog.text
    assert caplog.text.count("not written") == 1
    if suffix != ".jpg":
        np.testing.assert_array_equal(got.pixels, pixels)


# An XMP packet as Lightroom writes one: attributes and elements, a non-ASCII caption, the file's own
# orientation and size (stale once the pixels are rotated upright and resized).
XMP = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
       'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
       'xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
       'xmp:Rating="4" tiff:Orientation="6" tiff:ImageWidth="3000"><exif:PixelXDimension>3000'
       '</exif:PixelXDimension><exif:PixelYDimension>2000</exif:PixelYDimension><dc:title><rdf:Alt>'
       '<rdf:li xml:lang="x-default">Ciel d\u2019été à Zürich</rdf:li></rdf:Alt></dc:title>'
       '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode()


def _as_written(width: int, height: int) -> bytes:
    return (XMP.replace(b'tiff:Orientation="6"', b'tiff:Orientation="1"')
            .replace(b'tiff:ImageWidth="3000"', f'tiff:ImageWidth="{width}"'.encode())
            .replace(b">3000<", f">{width}<".encode()).replace(b">2000<", f">{height}<".encode()))


@pytest.mark.parametrize(("name", "kind", "dtype"), [
    ("x.png", "rgb", np.uint8), ("x.jpg", "rgb", np.uint8), ("x.webp", "rgba", np.uint8),
    ("x.tif", "rgb", np.uint8), ("x.png", "gray", np.uint16), ("x.png", "rgba", np.uint16),
    ("x.tif", "rgb", np.uint16)])
def test_xmp_round_trips_with_orientation_and_size_brought_up_to_date(tmp_path, rng, name, kind, dtype):
    pixels = make(rng, kind, dtype)
    write_image(tmp_path / name, pixels, icc=SRGB if kind != "gray" else None, exif=exif_bytes(1), xmp=XMP)
    got = read_image(tmp_path / name)
    assert got.xmp == _as_written(pixels.shape[1], pixels.shape[0])  # the rest byte for byte
    assert (got.icc == SRGB) == (kind != "gray")
    assert got.exif is not None
    if name.endswith((".png", ".tif")):  # lossless
        np.testing.assert_array_equal(got.pixels, pixels)


def test_xmp_is_kept_through_downscale_and_dropped_by_bmp(tmp_path, rng, caplog):
    src = tmp_path / "hr" / "photo.jpg"
    src.parent.mkdir()
    write_image(src, make(rng, "rgb"), xmp=XMP)
    assert downscale(src.parent, tmp_path / "lr", DownscaleConfig(scale=2)).ok
    lr = read_image(tmp_path / "lr" / "photo.png")
    assert lr.xmp == _as_written(lr.pixels.shape[1], lr.pixels.shape[0])
    with caplog.at_level(logging.INFO):
        write_image(tmp_path / "x.bmp", make(rng, "rgb"), xmp=XMP)
    assert read_image(tmp_path / "x.bmp").xmp is None and "BMP cannot store" in caplog.text


def test_xmp_too_large_for_jpeg_is_dropped_with_a_warning_and_kept_elsewhere(tmp_path, rng, caplog):
    big = XMP.replace(b"</rdf:RDF>", b"<!--" + b"x" * 70_000 + b"--></rdf:RDF>")  # a JPEG marker holds 64 KB
    pixels = make(rng, "rgb")
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / "big.jpg", pixels, xmp=big)
        write_image(tmp_path / "big.png", pixels, xmp=big)
    assert read_image(tmp_path / "big.jpg").xmp is None and "XMP not written" in caplog.text
    assert read_image(tmp_path / "big.png").xmp == _as_written(W, H).replace(
        b"</rdf:RDF>", b"<!--" + b"x" * 70_000 + b"--></rdf:RDF>")


def test_updated_xmp_rewrites_only_what_the_new_pixels_change():
    other = (b'<r xmlns:t="http://ns.adobe.com/tiff/1.0/" xmlns:e=\'http://ns.adobe.com/exif/1.0/\' '
             b't:Orientation = \'8\' xt:Orientation="8" t:ImageLength="5"><e:PixelYDimension>5'
             b'</e:PixelYDimension><t:Orientation>3</t:Orientation></r>')
    assert updated_xmp(other, 7, 9) == (
        b'<r xmlns:t="http://ns.adobe.com/tiff/1.0/" xmlns:e=\'http://ns.adobe.com/exif/1.0/\' '
        b't:Orientation = \'1\' xt:Orientation="8" t:ImageLength="9"><e:PixelYDimension>9'
        b'</e:PixelYDimension><t:Orientation>1</t:Orientation></r>')  # prefixes from the packet
    untouched = b'<r tiff:Orientation="6"/>'  # prefix bound to no namespace here: not the TIFF one
    assert updated_xmp(untouched, 1, 1) == untouched
    assert updated_xmp(b"\xff\xfe<\x00", 1, 1) == b"\xff\xfe<\x00"  # not UTF-8: as it was


def test_corrupt_exif_costs_the_exif_not_the_image(tmp_path, rng, caplog):
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / "e.jpg", make(rng, "rgb"), exif=b"Exif\x00\x00garbage")
    assert read_image(tmp_path / "e.jpg").exif is None
    assert "EXIF not written" in caplog.text


# ---- atomic replacement --------------------------------------------------------------------------


def test_atomic_path_replaces_on_success_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "store.h5"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(".tmp")
        assert target.read_bytes() == b"old"  # nobody sees the new file before it is complete
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["store.h5"]

    class Boom(BaseException):  # also covers KeyboardInterrupt-like exits
        pass

    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise Boom
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["store.h5"]


def test_written_files_get_normal_permissions(tmp_path, rng):
    umask = os.umask(0)
    os.umask(umask)
    write_image(tmp_path / "a.png", make(rng, "rgb"))
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o666 & ~umask
