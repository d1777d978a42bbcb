"""Image metadata as read, and what it says: EXIF orientation, ICC profile checks, the XMP packet and
the IPTC-IIM record of a file, and the XMP values that change with new pixels. Writing metadata into
outputs, and the EXIF of TIFF sources, go through libexiv2: :mod:`srpipe.imaging.exiv`.

EXIF is handled in one form throughout srpipe: ``b"Exif\\0\\0"`` followed by the TIFF structure (what a
JPEG APP1 marker holds; PNG and WebP store it without the prefix).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import TiffImagePlugin

IPTC_TAG = 33723  # TIFF tag of the IPTC-NAA record
XMP_KEY = "XML:com.adobe.xmp"  # the PNG text keyword for XMP
_TIFF_NS, _EXIF_NS = "http://ns.adobe.com/tiff/1.0/", "http://ns.adobe.com/exif/1.0/"
_ORIENTATION = 0x0112


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels → displayed pixels for EXIF orientation 1-8 (2 mirror, 3 rotate 180, 4 flip,
    5 transpose, 6 rotate 90° clockwise, 7 transverse, 8 rotate 90° anticlockwise); contiguous."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: a[::-1].swapaxes(0, 1),
           7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: a[:, ::-1].swapaxes(0, 1)}
    op = ops.get(orientation)
    return pixels if op is None else np.ascontiguousarray(op(pixels))


def parse_orientation(value: object) -> int:
    """An EXIF Orientation value, or 1 where it is missing or invalid."""
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def exif_orientation(exif: bytes) -> int:
    """The Orientation an EXIF block states (1 where it states none); Pillow's errors propagate."""
    parsed = PILImage.Exif()
    parsed.load(exif)
    return parse_orientation(parsed.get(_ORIENTATION))


def normalise_exif(raw: bytes | None) -> bytes | None:
    """EXIF in one form, ``b"Exif\\0\\0"`` + TIFF structure (PNG/WebP store it without the prefix)."""
    if not raw:
        return None
    return raw if raw.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + raw


def icc_problem(icc: bytes, pixels: np.ndarray) -> str | None:
    """Why ``icc`` cannot describe ``pixels`` (gray needs a GRAY profile, RGB(A) an RGB one), or None."""
    if len(icc) < 132 or icc[36:40] != b"acsp":
        return "not an ICC profile (no 'acsp' signature)"
    declared = int.from_bytes(icc[:4], "big")
    if declared > len(icc):
        return f"truncated ICC profile ({len(icc)} of {declared} bytes)"
    space, want = icc[16:20], (b"GRAY" if pixels.ndim == 2 else b"RGB ")
    if space != want:
        kind = "gray" if pixels.ndim == 2 else "RGB"
        return f"its colour space {space.decode('latin-1').strip()!r} does not fit {kind} pixels"
    return None


def iim_datasets(data: bytes) -> Iterator[tuple[int, int, bytes, int]]:
    """``(record, dataset, value, end)`` of each complete dataset at the start of an IPTC-IIM record
    (``end``: where it ends in ``data``), up to the first byte that does not start one or a dataset
    cut short."""
    at = 0
    while at + 5 <= len(data) and data[at] == 0x1C:
        record, dataset = data[at + 1], data[at + 2]
        size, at = int.from_bytes(data[at + 3 : at + 5], "big"), at + 5
        if size & 0x8000:  # extended dataset: the next (size & 0x7FFF) bytes hold the length
            size, at = int.from_bytes(data[at : at + (size & 0x7FFF)], "big"), at + (size & 0x7FFF)
        if at + size > len(data):
            return
        yield record, dataset, data[at : at + size], at + size
        at += size


def iptc_of(im: PILImage.Image) -> bytes | None:
    """The IPTC-IIM record of an opened JPEG (Photoshop APP13 resource 0x0404) or TIFF (tag 33723,
    raw bytes: Photoshop labels them LONG): its complete datasets, or None where there are none."""
    data: object = None
    photoshop = im.info.get("photoshop")
    if isinstance(photoshop, dict):
        data = photoshop.get(0x0404)
    elif isinstance(im, TiffImagePlugin.TiffImageFile):
        # Raw bytes whatever type the writer declared (Pillow's own IPTC reader uses this too);
        # the decoded tag is the fallback should that private table go away.
        raw = getattr(im.tag_v2, "_tagdata", None)
        data = raw.get(IPTC_TAG) if isinstance(raw, dict) else im.tag_v2.get(IPTC_TAG)
    if not isinstance(data, bytes):
        return None
    # Whole datasets only: Photoshop pads the record to its LONG count, and a cut one is unusable.
    end = max((end for *_, end in iim_datasets(data)), default=0)
    return data[:end] or None


def xmp_of(info: Mapping[Any, Any]) -> bytes | None:
    """The XMP packet Pillow found: ``info["xmp"]`` (JPEG, WebP, TIFF tag 700, PNG iTXt), else a PNG
    ``tEXt`` one as OpenCV writes it (Pillow decodes it as Latin-1, which gives the bytes back)."""
    raw = info.get("xmp") or info.get(XMP_KEY)
    if isinstance(raw, str):
        text = raw
        try:
            raw = text.encode("latin-1")
        except UnicodeEncodeError:
            raw = text.encode("utf-8")
    return bytes(raw) if isinstance(raw, (bytes, bytearray)) and raw else None


def updated_xmp(xmp: bytes, width: int, height: int) -> bytes:
    """``xmp`` for new pixels: ``tiff:Orientation`` 1 (pixels are stored upright) and the tiff/exif
    pixel dimensions set where present, as attributes or elements, under whatever prefixes the packet
    binds to those namespaces; everything else byte for byte (libexiv2 then stores the packet as
    given). Not UTF-8: returned unchanged."""
    try:
        text = xmp.decode("utf-8")
    except UnicodeDecodeError:
        return xmp
    values = {(_TIFF_NS, "Orientation"): 1, (_TIFF_NS, "ImageWidth"): width,
              (_TIFF_NS, "ImageLength"): height, (_EXIF_NS, "PixelXDimension"): width,
              (_EXIF_NS, "PixelYDimension"): height}
    for (namespace, name), value in values.items():
        for prefix in set(re.findall(rf"xmlns:([\w.-]+)\s*=\s*[\"']{re.escape(namespace)}[\"']", text)):
            qname = re.escape(f"{prefix}:{name}")
            text = re.sub(rf"(?<![\w.:-])({qname}\s*=\s*)([\"'])[^\"']*\2", rf"\g<1>\g<2>{value}\g<2>", text)
            text = re.sub(rf"(<{qname}>)[^<]*(</{qname}>)", rf"\g<1>{value}\g<2>", text)
    return text.encode("utf-8")
