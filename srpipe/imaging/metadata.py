"""Image metadata: EXIF orientation, EXIF and XMP rewriting for new pixels, ICC profile checks, and
the IPTC-IIM record of JPEG and TIFF. Putting metadata into files whose encoder cannot is
:mod:`srpipe.imaging.embed`.

EXIF is handled in one form throughout srpipe: ``b"Exif\\0\\0"`` followed by the TIFF structure (what a
JPEG APP1 marker holds; PNG and WebP store it without the prefix, the writers strip it). Parsing and
re-serialising go through Pillow's ``Image.Exif``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import TiffImagePlugin

# IFD0 tags worth carrying from a TIFF into EXIF elsewhere (the rest describe the TIFF's own layout):
# ImageDescription, Make, Model, X/YResolution, ResolutionUnit, Software, DateTime, Artist, Copyright
_TIFF_EXIF_TAGS = (0x010E, 0x010F, 0x0110, 0x011A, 0x011B, 0x0128, 0x0131, 0x0132, 0x013B, 0x8298)
_EXIF_IFD, _GPS_IFD, _ORIENTATION = 0x8769, 0x8825, 0x0112


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


def updated_exif(exif: bytes, width: int, height: int) -> bytes:
    """``exif`` made true of new, display-oriented pixels of ``width``×``height``.

    Orientation becomes 1 and PixelXDimension/PixelYDimension (ImageWidth/ImageLength in IFD0) take the
    new size, where those tags are present; bytes come back unchanged (``b"Exif\0\0"`` prefixed)
    when nothing needs changing. The values are patched in place, so every other byte, maker notes
    included (many hold offsets into the whole block, which re-serialising would break), stays where
    it was; the thumbnail (IFD1), which shows the old pixels, is unlinked. EXIF whose structure
    cannot be walked safely is re-serialised by Pillow instead, which drops the thumbnail too.
    Raises ``ValueError`` for data that is not EXIF.
    """
    data = normalise_exif(exif)
    if not data or data[6:10] not in (b"II*\x00", b"MM\x00*"):
        raise ValueError("not EXIF data (no TIFF header)")
    changes = {0: {_ORIENTATION: 1, 0x0100: width, 0x0101: height},
               _EXIF_IFD: {0xA002: width, 0xA003: height}}
    patched = _patched_in_place(data, changes)
    if patched is not None:
        return patched
    parsed = exif_of(data)
    changed = False

    def put(table: dict[int, object] | PILImage.Exif, tag: int, value: int) -> None:
        nonlocal changed
        if tag in table and table[tag] != value:
            table[tag] = value
            changed = True

    for tag, value in changes[0].items():
        put(parsed, tag, value)
    sub = parsed.get_ifd(_EXIF_IFD)
    for tag, value in changes[_EXIF_IFD].items():
        put(sub, tag, value)
    return parsed.tobytes() if changed else data


def _patched_in_place(data: bytes, changes: dict[int, dict[int, int]]) -> bytes | None:
    """``data`` (``Exif\0\0`` + TIFF) with the SHORT/LONG single values of ``changes`` (per IFD: 0
    for IFD0, else the tag that points to the sub-IFD) overwritten where present, and IFD1 unlinked
    when anything changed; None when an IFD or value lies outside the data or is not a plain number."""
    tiff = bytearray(data[6:])
    e = "<" if tiff[:2] == b"II" else ">"

    def entries(at: int) -> list[tuple[int, int, int, int]] | None:  # (tag, type, count, entry offset)
        if at < 8 or at + 2 > len(tiff):
            return None
        n = struct.unpack_from(e + "H", tiff, at)[0]
        if at + 2 + 12 * n + 4 > len(tiff):
            return None
        return [(*struct.unpack_from(e + "HHI", tiff, at + 2 + 12 * i), at + 2 + 12 * i) for i in range(n)]

    ifd0 = struct.unpack_from(e + "I", tiff, 4)[0]
    tables = {0: entries(ifd0)}
    if tables[0] is None:
        return None
    pointers = {tag: at for tag, _typ, _count, at in tables[0]}
    for group in changes:
        if group and group in pointers:
            tables[group] = entries(struct.unpack_from(e + "I", tiff, pointers[group] + 8)[0])
            if tables[group] is None:
                return None
    changed = False
    for group, table in tables.items():
        for tag, typ, count, at in table or []:
            if tag not in changes[group]:
                continue
            if typ not in (3, 4) or count != 1:  # not a single SHORT/LONG: leave it to Pillow
                return None
            value = changes[group][tag]
            if struct.unpack_from(e + ("H" if typ == 3 else "I"), tiff, at + 8)[0] == value:
                continue
            if typ == 3 and value > 0xFFFF:  # the inline field holds 4 bytes: widen to LONG
                struct.pack_into(e + "H", tiff, at + 2, 4)
                typ = 4
            if typ == 3:
                struct.pack_into(e + "HH", tiff, at + 8, value, 0)  # left-justified, as TIFF stores it
            else:
                struct.pack_into(e + "I", tiff, at + 8, value)
            changed = True
    if not changed:
        return data
    struct.pack_into(e + "I", tiff, ifd0 + 2 + 12 * len(tables[0]), 0)  # IFD1 (thumbnail): unlinked
    return data[:6] + bytes(tiff)


def normalise_exif(raw: bytes | None) -> bytes | None:
    """EXIF in one form, ``b"Exif\\0\\0"`` + TIFF structure (PNG/WebP store it without the prefix)."""
    if not raw:
        return None
    return raw if raw.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + raw


def copy_tiff_tags(parsed: PILImage.Exif, out: Any) -> None:
    """Put ``parsed``'s descriptive IFD0 tags and its Exif and GPS sub-IFDs into ``out`` (an ``Exif``
    or a TIFF ``ImageFileDirectory_v2``): the EXIF that belongs in a TIFF's first IFD."""
    for tag in _TIFF_EXIF_TAGS:
        if tag in parsed:
            out[tag] = parsed[tag]
    for group in (_EXIF_IFD, _GPS_IFD):
        if sub := parsed.get_ifd(group):
            out[group] = dict(sub)


def tiff_exif(parsed: PILImage.Exif) -> bytes | None:
    """EXIF for a TIFF source: its descriptive IFD0 tags plus the Exif and GPS sub-IFDs."""
    out = PILImage.Exif()
    copy_tiff_tags(parsed, out)
    return out.tobytes() if len(out) else None


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


def exif_of(data: bytes) -> PILImage.Exif:
    """Parse EXIF bytes (with or without the ``Exif\\0\\0`` prefix); Pillow's errors propagate."""
    exif = PILImage.Exif()
    exif.load(data)
    return exif


ICC_TAG, XMP_TAG, IPTC_TAG = 34675, 700, 33723  # TIFF tags: ICC profile, XMP packet, IPTC-NAA record
XMP_KEY = "XML:com.adobe.xmp"  # the PNG text keyword for XMP
_TIFF_NS, _EXIF_NS = "http://ns.adobe.com/tiff/1.0/", "http://ns.adobe.com/exif/1.0/"


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
    end = at = 0
    while at + 5 <= len(data) and data[at] == 0x1C:
        size, at = int.from_bytes(data[at + 3 : at + 5], "big"), at + 5
        if size & 0x8000:  # extended dataset: the next (size & 0x7FFF) bytes hold the length
            size, at = int.from_bytes(data[at : at + (size & 0x7FFF)], "big"), at + (size & 0x7FFF)
        if at + size > len(data):
            break
        end = at = at + size
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
    binds to those namespaces; everything else byte for byte. Not UTF-8: returned unchanged."""
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
