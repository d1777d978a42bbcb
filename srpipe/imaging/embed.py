"""Metadata into files whose encoder cannot embed it: ICC, XMP, IPTC and EXIF patched into the TIFF
that OpenCV writes for 16-bit colour, XMP as a UTF-8 ``iTXt`` chunk in its PNG, and IPTC as the
Photoshop APP13 marker that JPEG readers look for. What the metadata says, and how it is updated
for new pixels, is :mod:`srpipe.imaging.metadata`.
"""

from __future__ import annotations

import struct
import zlib
from typing import Literal

from PIL import TiffImagePlugin

from srpipe.imaging.metadata import ICC_TAG, IPTC_TAG, XMP_TAG, copy_tiff_tags, exif_of

_TAG_TYPE = {ICC_TAG: 7, XMP_TAG: 1, IPTC_TAG: 7}  # UNDEFINED, BYTE, UNDEFINED


def tiff_with_metadata(data: bytes, *, icc: bytes | None = None, xmp: bytes | None = None,
                       exif: bytes | None = None, iptc: bytes | None = None) -> bytes:
    """A classic TIFF file (``data``) with ``icc`` (tag 34675), ``xmp`` (tag 700), ``iptc`` (tag 33723)
    and ``exif`` (its
    descriptive IFD0 tags and its Exif and GPS sub-IFDs, as :func:`tiff_exif` reads them) added to its first
    image; a tag already there is replaced.

    For writers that cannot embed them (OpenCV's 16-bit colour TIFF): the metadata and a copy of the
    first IFD with the new entries are appended, and the header is pointed at that copy. Every other
    offset stays valid, so pixels and other tags are untouched; the old IFD is left as dead bytes. The
    EXIF part is laid out by Pillow's own TIFF writer at its final offset. ``ValueError`` for data that
    is not a classic TIFF, or a result beyond 4 GiB (32-bit offsets); Pillow's errors for bad EXIF."""
    orders: dict[bytes, Literal["little", "big"]] = {b"II": "little", b"MM": "big"}
    order = orders.get(data[:2])
    if order is None or len(data) < 8 or int.from_bytes(data[2:4], order) != 42:
        raise ValueError("not a classic TIFF file (BigTIFF and other formats are not patched)")

    def num(at: int, size: int) -> int:
        return int.from_bytes(data[at : at + size], order)

    first = num(4, 4)
    count = num(first, 2)
    if first + 2 + 12 * count + 4 > len(data):
        raise ValueError("truncated TIFF: its first IFD runs past the end of the file")
    at = [first + 2 + 12 * i for i in range(count)]
    entries = {num(a, 2): data[a : a + 12] for a in at}
    next_ifd = data[first + 2 + 12 * count : first + 6 + 12 * count]
    tail = bytearray(b"\0" * (len(data) % 2))  # TIFF offsets are word-aligned
    for tag, blob in ((ICC_TAG, icc), (XMP_TAG, xmp), (IPTC_TAG, iptc)):
        if blob and len(blob) > 4:  # (4 bytes or fewer would be stored inline; none of these is)
            offset = len(data) + len(tail)
            entries[tag] = (tag.to_bytes(2, order) + _TAG_TYPE[tag].to_bytes(2, order)
                            + len(blob).to_bytes(4, order) + offset.to_bytes(4, order))
            tail += blob + b"\0" * (len(blob) % 2)
    if exif:
        extra = TiffImagePlugin.ImageFileDirectory_v2(ifh=data[:8])
        copy_tiff_tags(exif_of(exif), extra)
        if len(extra):  # an IFD whose entries (and sub-IFDs) point at absolute offsets from here on
            block = extra.tobytes(len(data) + len(tail))
            entries.update((int.from_bytes(block[i : i + 2], order), block[i : i + 12])
                           for i in range(2, 2 + 12 * len(extra), 12))
            tail += block + b"\0" * (len(block) % 2)
    ifd_at = len(data) + len(tail)
    if ifd_at + 6 + 12 * len(entries) >= 1 << 32:
        raise ValueError("the TIFF would exceed 4 GiB, the limit of its 32-bit offsets")
    ifd = len(entries).to_bytes(2, order) + b"".join(entries[t] for t in sorted(entries)) + next_ifd
    return data[:4] + ifd_at.to_bytes(4, order) + data[8:] + bytes(tail) + ifd


def png_with_itxt(data: bytes, keyword: str, text: bytes) -> bytes:
    """A PNG file (``data``) with one uncompressed UTF-8 ``iTXt`` chunk ``keyword`` = ``text`` before
    its first ``IDAT``; text chunks (tEXt, zTXt, iTXt) with that keyword are removed. For OpenCV,
    which writes XMP as Latin-1 ``tEXt``. ``ValueError`` for data that is not a PNG."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG file")
    body = keyword.encode("latin-1") + b"\0\0\0\0\0" + text  # no compression, no language
    new = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))
    out, pos, placed = [data[:8]], 8, False
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos : pos + 12 + length]
        pos += 12 + length
        if kind in (b"tEXt", b"zTXt", b"iTXt") and chunk[8:].startswith(keyword.encode("latin-1") + b"\0"):
            continue
        if kind == b"IDAT" and not placed:
            out.append(new)
            placed = True
        out.append(chunk)
    if not placed:
        raise ValueError("PNG without image data (no IDAT chunk)")
    return b"".join(out)


def jpeg_iptc_segment(iptc: bytes) -> bytes:
    """An APP13 marker holding ``iptc`` as Photoshop's IPTC-NAA resource (0x0404), as JPEG readers
    (ExifTool, Photoshop, Lightroom) look for it. ``ValueError`` when it does not fit one marker."""
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\0\0" + struct.pack(">I", len(iptc)) + iptc
    body = b"Photoshop 3.0\0" + resource + b"\0" * (len(iptc) % 2)
    if len(body) + 2 > 0xFFFF:
        raise ValueError(f"an IPTC record of {len(iptc)} bytes does not fit one JPEG APP13 marker")
    return b"\xff\xed" + struct.pack(">H", len(body) + 2) + body
