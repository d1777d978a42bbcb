"""An EXIF reader for the tests, independent of the code under test (and of libexiv2): IFD entries
with their values fetched through their offsets, and the entries of Canon and Nikon (type 3) maker
notes, whose offsets count from the EXIF's TIFF header and from the note's own header respectively."""

from __future__ import annotations

import struct
from pathlib import Path

from PIL import Image as PILImage

_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}  # bytes per TIFF type


def tiff_structure(path: Path) -> bytes:
    """The EXIF's TIFF structure: the TIFF file itself, else the block Pillow finds (JPEG APP1, PNG
    eXIf, WebP EXIF)."""
    data = path.read_bytes()
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return data
    with PILImage.open(path) as im:
        raw = im.info["exif"]
    return raw[6:] if raw.startswith(b"Exif\x00\x00") else raw


def entries(tiff: bytes, at: int) -> dict[int, tuple[int, int, bytes, int]]:
    """The IFD at ``at`` of ``tiff`` (offsets count from its start): tag → (type, count, value, where
    the value lies), for the entries whose value lies inside ``tiff``."""
    e = "<" if tiff[:2] == b"II" else ">"
    out = {}
    for i in range(struct.unpack_from(e + "H", tiff, at)[0]):
        tag, typ, count = struct.unpack_from(e + "HHI", tiff, at + 2 + 12 * i)
        size, where = _SIZES.get(typ, 1) * count, at + 2 + 12 * i + 8
        if size > 4:
            where = struct.unpack_from(e + "I", tiff, where)[0]
        if where + size <= len(tiff):  # (DSCN0040's NEFBitDepth points past its maker note's end)
            out[tag] = (typ, count, tiff[where : where + size], where)
    return out


def u32(tiff: bytes, raw: bytes) -> int:
    return struct.unpack(("<" if tiff[:2] == b"II" else ">") + "I", raw)[0]


def maker_note(path: Path) -> dict[int, tuple[int, int, bytes]]:
    """Every entry of the Canon or Nikon (type 3) maker note of ``path``: tag → (type, count, value)."""
    tiff = tiff_structure(path)
    ifd0 = entries(tiff, u32(tiff, tiff[4:8]))
    exif_ifd = entries(tiff, u32(tiff, ifd0[0x8769][2]))
    _, _, note, at = exif_ifd[0x927C]
    if note.startswith(b"Nikon\x00\x02"):  # type 3: a TIFF header of its own at +10, offsets from it
        inner = note[10:]
        table = entries(inner, u32(inner, inner[4:8]))
    else:  # Canon: an IFD where the note starts, offsets from the EXIF's TIFF header
        table = entries(tiff, at)
    return {tag: (typ, count, value) for tag, (typ, count, value, _) in table.items()}
