"""Photo metadata through libexiv2 (the ``exiv2`` binding, python-exiv2, which bundles the library).

Pixels are encoded by Pillow or OpenCV without metadata; :func:`write_with_metadata` opens those bytes
with libexiv2, gives them the source's EXIF (maker notes included), IPTC, XMP and ICC profile, brings
them up to date for the new pixels and has libexiv2 write the file, in memory, before it is stored.
libexiv2 knows each container (JPEG APP1/APP2/APP13, PNG eXIf/iCCP/iTXt, WebP EXIF/ICCP/XMP chunks,
TIFF tags with their Exif and GPS sub-IFDs, 8- and 16-bit alike) and re-lays out the maker notes of
the makers it knows, rewriting the offsets they hold; those it does not know are copied unchanged.

EXIF travels as ``b"Exif\\0\\0"`` + TIFF structure, which libexiv2 opens as a TIFF to read it. A TIFF
source has no such block: :func:`tiff_exif` has libexiv2 write one. Messages libexiv2 logs while
srpipe works are collected (not printed) and the errors among them reported per file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import mmap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import exiv2
from PIL import Image as PILImage

from srpipe.imaging.metadata import exif_orientation, iim_datasets, normalise_exif, parse_orientation

log = logging.getLogger(__name__)

exiv2.XmpParser.initialize()  # libexiv2: once, before threads parse XMP

# TIFF IFD0 tags that describe the photo (the rest describe the TIFF file's own layout).
TIFF_EXIF_KEYS = frozenset(f"Exif.Image.{name}" for name in (
    "ImageDescription", "Make", "Model", "Orientation", "XResolution", "YResolution", "ResolutionUnit",
    "Software", "DateTime", "Artist", "Copyright"))
# IFDs of a TIFF that are other pages or previews, not EXIF of the first image.
_OTHER_IMAGES = ("Exif.Thumbnail.", "Exif.SubImage", "Exif.SubThumb", "Exif.Image2.", "Exif.Image3.")
NAMES = {"icc": "ICC profile", "exif": "EXIF", "xmp": "XMP", "iptc": "IPTC"}


@dataclass(frozen=True)
class Metadata:
    """What goes into one output: the ICC profile, EXIF (``Exif\\0\\0`` + TIFF, or without the
    prefix), XMP packet (already up to date, see ``metadata.updated_xmp``) and IPTC-IIM record."""

    icc: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    iptc: bytes | None = None

    def kinds(self) -> list[str]:
        return [kind for kind in NAMES if getattr(self, kind)]


_local = threading.local()


class _Collect(logging.Filter):
    """Keeps libexiv2's messages out of the log while srpipe calls it and hands them to the caller."""

    def filter(self, record: logging.LogRecord) -> bool:
        notes: list[tuple[int, str]] | None = getattr(_local, "notes", None)
        if notes is None:
            return True
        notes.append((record.levelno, record.getMessage()))
        log.debug("libexiv2: %s", record.getMessage())
        return False


logging.getLogger("exiv2").addFilter(_Collect())


@contextlib.contextmanager
def _libexiv2_notes() -> Iterator[list[tuple[int, str]]]:
    """libexiv2's messages in this block, as ``(logging level, text)``."""
    outer = getattr(_local, "notes", None)
    notes: list[tuple[int, str]] = []
    _local.notes = notes
    try:
        yield notes
    finally:
        _local.notes = outer


def reason(exc: BaseException) -> str:
    """One line for an exception: libexiv2's own message, or the exception's."""
    if isinstance(exc, exiv2.Exiv2Error):
        return f"libexiv2: {exc.message}"
    return str(exc) or type(exc).__name__


def _summary(notes: list[tuple[int, str]], level: int) -> str:
    """libexiv2's messages of ``level`` and above, in one line ("" when there are none)."""
    texts = list(dict.fromkeys(text for lvl, text in notes if lvl >= level))
    if not texts:
        return ""
    more = f" (and {len(texts) - 1} more)" if len(texts) > 1 else ""
    return f"libexiv2: {texts[0]}{more}"


def write_with_metadata(target: Path, data: bytes | memoryview, fmt: str, meta: Metadata, width: int,
                        height: int) -> list[str]:
    """Write ``data`` (an encoded PNG, JPEG, WebP or TIFF, without metadata but for a PNG's ICC
    profile, which libexiv2 keeps as it is) to ``target`` with
    ``meta`` put in by libexiv2 and made true of its ``width``×``height`` upright pixels: EXIF
    Orientation 1, Exif.Photo.PixelX/YDimension (and IFD0 ImageWidth/ImageLength outside TIFF) set
    where present, the EXIF thumbnail (IFD1, the old pixels) deleted.

    What libexiv2 refuses costs that metadata only: everything is tried at once, and on failure each
    kind alone, to find which. Returns one line per kind not written, or written in part, and why
    (e.g. ``"XMP not written: libexiv2: ..."``); the pixels are always written.
    """
    kinds = meta.kinds()
    try:
        image, problems = _with(data, fmt, meta, kinds, width, height)
    except Exception:
        image, problems = _each_alone(data, fmt, meta, kinds, width, height)
    if image is None:
        target.write_bytes(data)
        return problems
    view = image.io().mmap()
    try:
        target.write_bytes(view)
    finally:
        image.io().munmap()
    return problems


def _each_alone(data: bytes | memoryview, fmt: str, meta: Metadata, kinds: list[str], width: int,
                height: int) -> tuple[exiv2.Image | None, list[str]]:
    good, problems = [], []
    for kind in kinds:
        try:
            _with(data, fmt, meta, [kind], width, height)
            good.append(kind)
        except Exception as exc:
            log.debug("%s refused", NAMES[kind], exc_info=True)
            problems.append(f"{NAMES[kind]} not written: {reason(exc)}")
    if not good:
        return None, problems
    try:
        image, notes = _with(data, fmt, meta, good, width, height)
    except Exception as exc:  # each fitted alone but not together: keep the pixels
        return None, [*problems, f"{', '.join(NAMES[k] for k in good)} not written: {reason(exc)}"]
    return image, problems + notes


def _with(data: bytes | memoryview, fmt: str, meta: Metadata, kinds: list[str], width: int,
          height: int) -> tuple[exiv2.Image, list[str]]:
    """``data`` opened by libexiv2 with ``kinds`` of ``meta`` set and written (in memory), and what
    libexiv2 said it left out: errors while it read the EXIF, warnings or errors while it wrote."""
    problems = []
    with _libexiv2_notes() as notes:
        image = exiv2.ImageFactory.open(data)
        image.readMetadata()
        if meta.icc and "icc" in kinds:
            image.setIccProfile(exiv2.DataBuf(meta.icc), True)
        if meta.exif and "exif" in kinds:
            before = len(notes)
            image.setExifData(exif_data(meta.exif))
            if damaged := _summary(notes[before:], logging.ERROR):
                problems.append(f"EXIF written in part: it is damaged; {damaged}")
            _bring_up_to_date(image.exifData(), fmt, width, height)
        if meta.iptc and "iptc" in kinds:
            image.setIptcData(_iptc_data(meta.iptc))
        if meta.xmp and "xmp" in kinds:
            image.setXmpPacket(meta.xmp.decode("utf-8"))  # parsed: invalid XMP raises here
            image.writeXmpFromPacket(True)  # the packet as given, byte for byte
        read = len(notes)
        image.writeMetadata()
        if left_out := _summary(notes[read:], logging.WARNING):
            problems.append(f"metadata written in part: {left_out}")
    return image, problems


def exif_data(exif: bytes) -> exiv2.ExifData:
    """The tags of an EXIF block, parsed by libexiv2 (what it cannot read of a damaged block is
    logged as libexiv2 errors and left out). ``ValueError`` when it holds no readable tag."""
    tiff = (normalise_exif(exif) or b"")[6:]
    if tiff[:4] not in (b"II*\x00", b"MM\x00*"):
        raise ValueError("not EXIF data (no TIFF header)")
    carrier = exiv2.ImageFactory.open(tiff)
    carrier.readMetadata()
    tags = exiv2.ExifData()
    for datum in carrier.exifData():  # a copy: the carrier's own list goes with it
        tags.add(datum)
    if not tags.count():
        raise ValueError("libexiv2 found no readable tag in it")
    return tags


def _bring_up_to_date(tags: exiv2.ExifData, fmt: str, width: int, height: int) -> None:
    exiv2.ExifThumb(tags).erase()  # IFD1: a preview of the old pixels, in their old orientation
    values = {"Exif.Image.Orientation": 1, "Exif.Photo.PixelXDimension": width,
              "Exif.Photo.PixelYDimension": height}
    if fmt != "tiff":  # a TIFF's own layout tags come from its encoder; libexiv2 keeps those
        values.update({"Exif.Image.ImageWidth": width, "Exif.Image.ImageLength": height})
    for key, value in values.items():
        pos = tags.findKey(exiv2.ExifKey(key))
        if pos == tags.end():
            continue
        short = pos.typeId() == exiv2.TypeId.unsignedShort and value <= 0xFFFF
        pos.setValue(exiv2.UShortValue(value) if short else exiv2.ULongValue(value))


def _iptc_data(iim: bytes) -> exiv2.IptcData:
    """An IPTC-IIM record as libexiv2 datasets, each value kept as its bytes."""
    data = exiv2.IptcData()
    for record, dataset, value, _ in iim_datasets(iim):
        data.add(exiv2.IptcKey(dataset, record), exiv2.DataValue(value))
    if not data.count():
        raise ValueError("no IPTC-IIM dataset in it")
    return data


def tiff_exif(path: Path) -> bytes | None:
    """The EXIF of a TIFF file as a block (``b"Exif\\0\\0"`` + TIFF structure): its descriptive IFD0
    tags (``TIFF_EXIF_KEYS``) and its Exif, GPS, interoperability and maker-note IFDs, laid out by
    libexiv2 (maker-note offsets rewritten), within the 64 KB libexiv2 gives EXIF outside TIFF. None
    when there are none. What libexiv2 could not read or leaves out is logged as a warning."""
    with _libexiv2_notes() as notes:
        # Opened from memory (mapped, not copied): libexiv2 is not given a file name to encode.
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            kept = _photo_tags(mapped)
        if not kept.count():
            return None
        problem = _summary(notes, logging.ERROR)
        read = len(notes)
        carrier = exiv2.ImageFactory.create(exiv2.ImageType.png)  # eXIf: the block without a prefix
        carrier.setExifData(kept)
        carrier.writeMetadata()
        png = bytes(carrier.io().mmap())
        carrier.io().munmap()
    if problem := problem or _summary(notes[read:], logging.WARNING):
        log.warning("%s: EXIF read in part: %s", path, problem)
    with PILImage.open(io.BytesIO(png)) as im:
        return normalise_exif(im.info.get("exif"))


def _photo_tags(data: mmap.mmap) -> exiv2.ExifData:
    """A copy of the TIFF's EXIF tags that describe the photo, not the file or its other images."""
    source = exiv2.ImageFactory.open(data)
    source.readMetadata()
    kept = exiv2.ExifData()
    for datum in source.exifData():
        key = datum.key()
        if not key.startswith(_OTHER_IMAGES) and (not key.startswith("Exif.Image.") or key in TIFF_EXIF_KEYS):
            kept.add(datum)
    return kept


def file_exif(im: PILImage.Image, path: Path, fmt: str, chunk: bytes | None = None, *,
              upright: bool = False) -> tuple[bytes | None, int]:
    """The EXIF of an opened image file to carry over (``b"Exif\\0\\0"`` form: the block as stored,
    or for a TIFF :func:`tiff_exif`'s) and the orientation still to apply to its pixels. ``chunk``:
    the EXIF OpenCV found when it decoded the pixels (b"" for none); ``upright``: the decoder applied
    the orientation already. A block that cannot be read costs the EXIF (warned), never the pixels."""
    if fmt == "bmp":
        return None, 1
    try:
        if chunk is not None and fmt != "tiff":
            exif = normalise_exif(chunk)
            return exif, 1 if upright or exif is None else exif_orientation(exif)
        exif = tiff_exif(path) if fmt == "tiff" else normalise_exif(im.info.get("exif"))
        return exif, 1 if upright else parse_orientation(im.getexif().get(0x0112))
    except Exception as exc:
        log.warning("%s: unreadable EXIF dropped (%s)", path, exc)
        return None, 1
