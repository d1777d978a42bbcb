"""Camera metadata through ``srpipe process`` and ``srpipe downscale``, on real camera files
(tests/data/photos, CC BY-SA 4.0: see its LICENSE.md): Make, Model, DateTimeOriginal, GPS, the maker
notes and the ICC profile survive into JPEG, PNG, WebP and 8/16-bit TIFF outputs, Orientation becomes
1, pixel dimensions are the output's, the thumbnail is gone; XMP over 64 KB and damaged EXIF cost
that metadata only, with the reason on stderr.

The maker notes are checked by an independent reader (exif_reader.py): every entry of the Canon and
Nikon notes, its value fetched through its offset, must be byte-identical to the source's (libexiv2
moves the notes and rewrites their offsets, so the raw blocks themselves may differ).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import exiv2
import numpy as np
import pytest
from click.testing import CliRunner
from exif_reader import entries, maker_note, u32
from PIL import Image as PILImage
from tiny_onnx import tiny_model

from srpipe.cli import cli
from srpipe.imaging.io import read_image

PHOTOS = Path(__file__).parent / "data" / "photos"
CANON, NIKON, ROTATED = "Canon_PowerShot_S40.jpg", "DSCN0040.jpg", "landscape_6.jpg"
_STANDARD = ("Image", "Photo", "GPSInfo", "Iop", "Thumbnail", "MakerNote")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory, scale=2)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in (CANON, NIKON, ROTATED):
        shutil.copyfile(PHOTOS / name, folder / name)
    return folder


def srpipe(tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    """An srpipe command with ``--json``: (exit code, report, stderr)."""
    res = CliRunner().invoke(cli, ["--workspace", str(tmp_path / "ws"), *args, "--json"],
                             env={"COLUMNS": "500"})  # stderr lines unwrapped
    report = json.loads(res.stdout) if res.stdout.strip().startswith("{") else {}
    return res.exit_code, report, res.stderr


# ---- what an output must hold ---------------------------------------------------------------------


def exiv2_tags(path: Path) -> dict[str, str]:
    image = exiv2.ImageFactory.open(str(path))
    image.readMetadata()
    return {datum.key(): datum.toString() for datum in image.exifData()}


def assert_camera_metadata_kept(source: Path, output: Path) -> None:
    """``output``, made from the camera file ``source``, holds its metadata, made true of its pixels."""
    with PILImage.open(source) as src, PILImage.open(output) as out:  # (a TIFF's IFDs are read lazily)
        before, after, size = src.getexif(), out.getexif(), out.size
        icc = src.info.get("icc_profile"), out.info.get("icc_profile")
        exif_before, exif_after = before.get_ifd(0x8769), after.get_ifd(0x8769)
        gps_before, gps_after = dict(before.get_ifd(0x8825)), dict(after.get_ifd(0x8825))
    assert [after.get(t) for t in (0x010F, 0x0110)] == [before.get(t) for t in (0x010F, 0x0110)]  # Make...
    assert exif_after.get(0x9003) == exif_before.get(0x9003)  # DateTimeOriginal
    assert gps_after == gps_before  # every GPS tag
    assert icc[1] == icc[0]  # the ICC profile, byte for byte (or none where there was none)
    assert after.get(0x0112, 1) == 1  # the pixels are upright
    if 0xA002 in exif_before:
        assert (exif_after[0xA002], exif_after[0xA003]) == size  # the output's own size
    tags_before, tags_after = exiv2_tags(source), exiv2_tags(output)
    notes = {k: v for k, v in tags_before.items() if k.split(".")[1] not in _STANDARD}
    assert {k: tags_after.get(k) for k in notes} == notes  # every maker-note tag libexiv2 decodes
    assert not [k for k in tags_after if k.startswith("Exif.Thumbnail.")]  # old pixels: deleted
    if 0x927C in exif_before:
        entries_before, entries_after = maker_note(source), maker_note(output)
        assert len(entries_before) > 10
        assert {k: entries_after.get(k) for k in entries_before} == entries_before


def displayed_size(name: str) -> tuple[int, int]:
    """(width, height) of a test photo as displayed."""
    pixels = read_image(PHOTOS / name).pixels
    return pixels.shape[1], pixels.shape[0]


def outputs(report: dict) -> dict[str, Path]:
    return {Path(f["input"]).name: Path(f["output"]) for f in report["files"] if f["status"] == "ok"}


def tiff_copy(source: Path, target: Path, *, deep: bool, xmp: str | None = None) -> None:
    """A TIFF of ``source``'s stored pixels (16-bit when ``deep``) with its EXIF (orientation
    included) and ICC profile, and ``xmp``: made with OpenCV and libexiv2 directly, not srpipe."""
    with PILImage.open(source) as im:
        rgb = np.asarray(im.convert("RGB"))
    ok, buf = cv2.imencode(".tif", (rgb.astype(np.uint16) * 257 if deep else rgb)[..., ::-1].copy())
    assert ok
    camera = exiv2.ImageFactory.open(str(source))
    camera.readMetadata()
    image = exiv2.ImageFactory.open(buf.tobytes())
    image.readMetadata()
    image.setExifData(camera.exifData())
    if camera.iccProfileDefined():
        image.setIccProfile(camera.iccProfile())
    if xmp is not None:
        image.setXmpPacket(xmp)
        image.writeXmpFromPacket(True)
    image.writeMetadata()
    target.write_bytes(image.io().mmap())
    image.io().munmap()


# ---- srpipe process and srpipe downscale ----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tiff"])
def test_process_keeps_camera_metadata(tmp_path: Path, model: Path, photos: Path, fmt: str) -> None:
    code, report, err = srpipe(tmp_path, "process", str(photos), "-o", str(tmp_path / "hr"), "--model",
                               str(model), "--format", fmt)
    assert code == 0 and report["ok"] == 3, err
    assert [f["reason"] for f in report["files"]] == ["", "", ""]  # the report's shape is unchanged
    assert "not written" not in err and "in part" not in err  # nothing dropped
    made = outputs(report)
    for name in (CANON, NIKON, ROTATED):
        assert_camera_metadata_kept(PHOTOS / name, made[name])
        width, height = displayed_size(name)
        assert read_image(made[name]).pixels.shape == (2 * height, 2 * width, 3)
    assert read_image(made[NIKON]).xmp == read_image(PHOTOS / NIKON).xmp  # nothing in it to update


def test_downscale_keeps_camera_metadata(tmp_path: Path, photos: Path) -> None:
    code, report, err = srpipe(tmp_path, "downscale", str(photos), "-s", "2", "-o", str(tmp_path / "lr"),
                               "-j", "1")
    assert code == 0 and len(report["written"]) == 3 and not report["failed"], err
    assert "not written" not in err and "in part" not in err
    for name in (CANON, NIKON, ROTATED):
        output = tmp_path / "lr" / Path(name).with_suffix(".png")
        assert_camera_metadata_kept(PHOTOS / name, output)
        width, height = displayed_size(name)
        assert read_image(output).pixels.shape == (height // 2, width // 2, 3)


def test_16bit_tiff_sources_keep_camera_metadata_in_16bit_outputs(tmp_path: Path, model: Path) -> None:
    deep = tmp_path / "deep"
    deep.mkdir()
    for name in (CANON, NIKON, ROTATED):
        tiff_copy(PHOTOS / name, deep / Path(name).with_suffix(".tif"), deep=True)
    code, report, err = srpipe(tmp_path, "process", str(deep), "-o", str(tmp_path / "hr"), "--model",
                               str(model))
    assert code == 0 and report["ok"] == 3 and "not written" not in err and "in part" not in err, err
    code, lr_report, err = srpipe(tmp_path, "downscale", str(deep), "-s", "2", "-o", str(tmp_path / "lr"),
                                  "-j", "1")
    assert code == 0 and len(lr_report["written"]) == 3 and "not written" not in err, err
    made = outputs(report)
    for name in (CANON, NIKON, ROTATED):
        width, height = displayed_size(name)
        hr, lr = made[Path(name).with_suffix(".tif").name], tmp_path / "lr" / Path(name).with_suffix(".png")
        assert hr.suffix == ".tif" and lr.suffix == ".png"
        for output, shape in ((hr, (2 * height, 2 * width, 3)), (lr, (height // 2, width // 2, 3))):
            got = read_image(output)
            assert got.pixels.dtype == np.uint16 and got.pixels.shape == shape
            assert_camera_metadata_kept(PHOTOS / name, output)


def test_the_test_photos_hold_what_the_tests_need() -> None:
    """So that the checks above are not vacuous."""
    canon, nikon, rotated = (read_image(PHOTOS / name) for name in (CANON, NIKON, ROTATED))
    assert len(maker_note(PHOTOS / CANON)) > 10 and len(maker_note(PHOTOS / NIKON)) > 30
    with PILImage.open(PHOTOS / NIKON) as im:
        assert len(im.getexif().get_ifd(0x8825)) >= 10 and im.getexif().get_ifd(0x8769)[0x9003]
    assert rotated.orientation == 6 and rotated.icc is not None and canon.icc is None
    assert nikon.xmp is not None and nikon.orientation == 1
    for name in (CANON, NIKON):
        assert any(k.startswith("Exif.Thumbnail.") for k in exiv2_tags(PHOTOS / name))


# ---- XMP ------------------------------------------------------------------------------------------

XMP = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
       'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
       'xmlns:dc="http://purl.org/dc/elements/1.1/" tiff:Orientation="6" tiff:ImageWidth="450" '
       'tiff:ImageLength="600" exif:PixelXDimension="450" exif:PixelYDimension="600"><dc:description>'
       '<rdf:Alt><rdf:li xml:lang="x-default">PAD</rdf:li></rdf:Alt></dc:description></rdf:Description>'
       '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def xmp_for(width: int, height: int, pad: str = "Lac d\u2019Annecy") -> bytes:
    return (XMP.replace("PAD", pad).replace('Orientation="6"', 'Orientation="1"')
            .replace('Width="450"', f'Width="{width}"').replace('Length="600"', f'Length="{height}"')
            .replace('XDimension="450"', f'XDimension="{width}"')
            .replace('YDimension="600"', f'YDimension="{height}"').encode())


def test_xmp_orientation_and_dimensions_follow_the_output(tmp_path: Path, model: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    image = exiv2.ImageFactory.open(str(shutil.copyfile(PHOTOS / ROTATED, src / ROTATED)))
    image.readMetadata()
    image.setXmpPacket(XMP.replace("PAD", "Lac d\u2019Annecy"))  # metadata only: pixels untouched
    image.writeXmpFromPacket(True)
    image.writeMetadata()
    del image
    for fmt in ("jpg", "png", "webp", "tiff"):
        code, report, err = srpipe(tmp_path, "process", str(src), "-o", str(tmp_path / fmt), "--model",
                                   str(model), "--format", fmt)
        assert code == 0 and "not written" not in err, err
        assert read_image(outputs(report)[ROTATED]).xmp == xmp_for(1200, 900)  # the rest byte for byte
    assert srpipe(tmp_path, "downscale", str(src), "-s", "2", "-o", str(tmp_path / "lr"), "-j", "1")[0] == 0
    assert read_image(tmp_path / "lr" / "landscape_6.png").xmp == xmp_for(300, 225)


def test_xmp_over_64kb_is_kept_except_in_jpeg_where_it_is_dropped_with_the_reason(
        tmp_path: Path, model: Path) -> None:
    """One JPEG APP1 marker holds 65,502 bytes of XMP; more needs Adobe's extended XMP, which
    libexiv2 does not write (nor read): the XMP is dropped with libexiv2's reason, the rest kept."""
    src = tmp_path / "in"
    src.mkdir()
    pad = "x" * 70_000
    tiff_copy(PHOTOS / ROTATED, src / "big.tif", deep=False, xmp=XMP.replace("PAD", pad))
    for fmt in ("jpg", "png", "webp", "tiff"):
        code, report, err = srpipe(tmp_path, "process", str(src), "-o", str(tmp_path / fmt), "--model",
                                   str(model), "--format", fmt)
        assert code == 0 and report["ok"] == 1 and report["files"][0]["reason"] == "", err
        output = outputs(report)["big.tif"]
        got = read_image(output)
        assert got.pixels.shape == (900, 1200, 3) and got.icc == read_image(PHOTOS / ROTATED).icc
        assert got.exif is not None and got.orientation == 1
        if fmt == "jpg":
            assert got.xmp is None
            assert (f"{output}: XMP not written: libexiv2: Size of XMP JPEG segment is larger than 65535 "
                    "bytes") in err
        else:  # (Pillow, which reads TIFF sources upright, takes tiff:Orientation out of their XMP)
            assert got.xmp == xmp_for(1200, 900, pad).replace(b'tiff:Orientation="1"', b"")
            assert "not written" not in err


# ---- damaged EXIF ---------------------------------------------------------------------------------


def damaged(source: Path, target: Path, how: str) -> None:
    """A copy of a camera JPEG whose EXIF is damaged: ``"header"``, no TIFF header at all; ``"ifd"``,
    the Exif IFD claims 65,535 entries (libexiv2 gives that IFD up, keeps IFD0 and GPS)."""
    data = bytearray(source.read_bytes())
    tiff = data.index(b"Exif\x00\x00") + 6
    if how == "header":
        data[tiff + 2] = 0x2B  # "II+\0"
    else:
        block = bytes(data[tiff:])
        at = tiff + u32(block, entries(block, u32(block, block[4:8]))[0x8769][2])
        data[at : at + 2] = b"\xff\xff"
    target.write_bytes(bytes(data))


def test_damaged_exif_costs_the_exif_not_the_pixels_and_the_reason_is_given(tmp_path: Path,
                                                                            model: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copyfile(PHOTOS / NIKON, src / "good.jpg")
    damaged(PHOTOS / NIKON, src / "header.jpg", "header")
    damaged(PHOTOS / NIKON, src / "ifd.jpg", "ifd")
    code, report, err = srpipe(tmp_path, "process", str(src), "-o", str(tmp_path / "hr"), "--model",
                               str(model), "--format", "png")
    assert code == 0 and report["ok"] == 3 and [f["reason"] for f in report["files"]] == ["", "", ""], err
    code, lr_report, lr_err = srpipe(tmp_path, "downscale", str(src), "-s", "2", "-o",
                                     str(tmp_path / "lr"), "-j", "1")
    assert code == 0 and len(lr_report["written"]) == 3, lr_err
    made = outputs(report)
    lr = {name: tmp_path / "lr" / Path(name).with_suffix(".png") for name in made}
    for outs, log in ((made, err), (lr, lr_err)):
        good, header, ifd = (read_image(outs[n]) for n in ("good.jpg", "header.jpg", "ifd.jpg"))
        np.testing.assert_array_equal(header.pixels, good.pixels)  # the same pixels, all of them
        np.testing.assert_array_equal(ifd.pixels, good.pixels)
        assert header.exif is None and header.xmp == good.xmp
        assert f"{src / 'header.jpg'}: unreadable EXIF dropped" in log or \
            f"{outs['header.jpg']}: EXIF not written: " in log
        assert (f"{outs['ifd.jpg']}: EXIF written in part: it is damaged; libexiv2: Directory Photo with "
                "65535 entries considered invalid; not read.") in log
        with PILImage.open(outs["ifd.jpg"]) as im:  # IFD0 and GPS kept, the Exif IFD lost
            exif = im.getexif()
            assert exif[0x0110] == "COOLPIX P6000" and len(exif.get_ifd(0x8825)) >= 10
            assert 0x9003 not in exif.get_ifd(0x8769)
