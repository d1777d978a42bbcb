"""Reading and writing image files faithfully: bit depth, orientation, ICC, EXIF, XMP and IPTC kept,
atomic writes.

Formats: PNG, JPEG, WebP, TIFF, BMP (first frame/page only). In memory an image is an ``H×W`` (gray),
``H×W×3`` (RGB) or ``H×W×4`` (RGBA) ``uint8``/``uint16`` array in RGB order, as the file is *displayed*
(EXIF orientation applied). What ``read_image`` converts, explicitly:

======================  ==================================================================
file                    pixels
======================  ==================================================================
1-bit                   ``uint8`` gray, 0 or 255
8/16-bit gray           ``uint8`` / ``uint16`` gray
gray + alpha            RGBA (gray replicated to R, G, B); ``uint16`` kept for 16-bit PNG
palette                 RGBA if the palette has transparency, else RGB (``uint8``)
colour-keyed gray/RGB   RGBA (the PNG ``tRNS`` key colour becomes alpha 0)
CMYK, YCbCr             RGB ``uint8`` (Pillow's plain conversion; the CMYK ICC profile is dropped)
8/16-bit RGB(A)         the same; ``uint16`` kept for 16-bit PNG and TIFF
32-bit int, float       ``UnsupportedImageError``
======================  ==================================================================

Decoding: Pillow parses the header lazily, so the pixel cap is enforced before any pixel is decoded
(srpipe's own check, with srpipe's message and option; Pillow's process-wide one, which warns above
its limit and refuses above twice that, is held off while the header is parsed);
Pillow then decodes everything (with ``LOAD_TRUNCATED_IMAGES`` left False a truncated file raises),
except 16-bit colour PNG/TIFF, which Pillow would cut to 8 bits: OpenCV decodes those. Measured on a
2000×1500 photo, OpenCV was only ~10 % faster than Pillow (PNG ≈ 83 vs 90 ms, JPEG ≈ 18 vs 20 ms):
not worth a second decoder with its own conversions (it ignores a gray PNG's tRNS key, converts CMYK
its own way) for 8-bit files. ICC profiles that no longer fit the pixels (a CMYK profile after
CMYK → RGB, a gray profile on RGBA from gray + alpha) are dropped with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageFile

from srpipe.errors import (
    ImageDecodeError,
    ImageTooLargeError,
    InputError,
    SrpipeError,
    UnsupportedImageError,
)
from srpipe.imaging.atomic import atomic_path
from srpipe.imaging.color import to_uint8
from srpipe.imaging.exiv import file_exif
from srpipe.imaging.formats import IMAGE_SUFFIXES, SUFFIX_FORMAT
from srpipe.imaging.metadata import apply_orientation, icc_problem, iptc_of, parse_orientation, xmp_of
from srpipe.imaging.write import write_image

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "Image", "Layout", "apply_orientation", "atomic_path",
           "peek_layout", "read_image", "to_uint8", "write_image"]

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own default cap

_PIL_FORMAT = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp", "TIFF": "tiff", "BMP": "bmp"}
_OPENERS = ["PNG", "JPEG", "WEBP", "TIFF", "BMP"]  # Pillow's JPEG opener also yields MPO (phone photos)
_OTHER_SIGNATURES = ((b"GIF8", "GIF"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xff\x0a", "JPEG XL"),
                     (b"8BPS", "Photoshop"), (b"%PDF", "PDF"))
_SUPPORTED = "PNG, JPEG, WebP, TIFF, BMP"
_ORIENTATION = 0x0112


@dataclass(frozen=True, eq=False)
class Image:
    """A decoded image.

    ``pixels``: display-oriented ``H×W`` / ``H×W×3`` / ``H×W×4`` ``uint8`` or ``uint16``, RGB order.
    ``icc``: the ICC profile (only if it matches ``pixels``' colour space). ``exif``: the file's EXIF as
    ``b"Exif\\0\\0"`` + TIFF structure: the block as stored in a JPEG, PNG or WebP, unmodified; for a
    TIFF, its descriptive tags and EXIF sub-IFDs as libexiv2 lays them out (``exiv.tiff_exif``). Its
    Orientation still describes the *file*: ``write_image`` brings it up to date for new pixels.
    ``format``: "png", "jpeg", "webp", "tiff" or "bmp". ``mode``: the file's Pillow mode before
    conversion ("P", "CMYK", "LA", "I;16", "RGB", ...). ``orientation``: the EXIF orientation that
    was applied (1 = none). ``xmp``: the file's XMP packet, unmodified (``write_image`` passes it
    through ``updated_xmp``). ``iptc``: the IPTC-IIM record of a JPEG or TIFF, unmodified.
    """

    pixels: np.ndarray
    icc: bytes | None
    exif: bytes | None
    format: str
    path: Path
    mode: str = ""
    orientation: int = 1
    xmp: bytes | None = None
    iptc: bytes | None = None

    @property
    def bit_depth(self) -> int:
        """Bits per channel of ``pixels``: 8 or 16."""
        return 16 if self.pixels.dtype == np.uint16 else 8


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Decode ``path`` (see the module docstring for conversions) after checking its pixel count.

    Raises ``InputError`` (missing / not a file), ``ImageTooLargeError`` (over ``max_pixels``, checked
    from the header before decoding), ``UnsupportedImageError`` (unknown format or mode) and
    ``ImageDecodeError`` (empty, truncated or corrupt), all naming the file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"{path}: cannot read image: {exc.strerror or exc}") from exc
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if size == 0:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    # Pillow's own bomb check must not veto a cap the user raised; ours below is the one enforced.
    if PILImage.MAX_IMAGE_PIXELS is not None and max_pixels > PILImage.MAX_IMAGE_PIXELS:
        PILImage.MAX_IMAGE_PIXELS = max_pixels
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise SrpipeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: truncated files would be "
                          "accepted silently; something in this process set it, unset it")
    try:
        with _without_pillow_bomb_check():
            opened = PILImage.open(path, formats=_OPENERS)
        with opened as im:
            return _decode(im, path, max_pixels)
    except SrpipeError:
        raise
    except PILImage.DecompressionBombError as exc:  # a later frame of a multi-frame file
        raise ImageTooLargeError(path, f"{exc}; pass a larger --max-pixels if you trust this file") from exc
    except PILImage.UnidentifiedImageError as exc:
        raise _unidentified(path) from exc
    except Exception as exc:  # decoders fed untrusted bytes raise anything: it is the file's fault
        raise ImageDecodeError(path, f"cannot decode: {exc or type(exc).__name__}") from exc


@dataclass(frozen=True)
class Layout:
    """What ``read_image`` will return for a file, known from its header: displayed ``width`` ×
    ``height``, ``channels`` (1 gray, 3 RGB, 4 RGBA) and ``itemsize`` (1 for uint8, 2 for uint16)."""

    width: int
    height: int
    channels: int
    itemsize: int

    @property
    def name(self) -> str:
        kind = {1: "gray", 3: "RGB", 4: "RGBA"}[self.channels]
        return f"{8 * self.itemsize}-bit {kind}"


def peek_layout(path: str | Path) -> Layout | None:
    """The ``Layout`` of ``path`` from its header alone (no pixel is decoded: milliseconds whatever the
    size), or None when the header cannot be read (``read_image`` then says why)."""
    try:
        with _without_pillow_bomb_check():
            opened = PILImage.open(path, formats=_OPENERS)
        with opened as im:
            width, height = im.size
            mode, transparent = im.mode, "transparency" in im.info
            sixteen = ";16" in _rawmode(im) or mode.startswith("I;16")
            if mode in ("L", "1", "I") or mode.startswith("I;16"):
                channels = 4 if transparent and mode == "L" else 1
            elif mode in ("P", "PA"):
                alpha = mode == "PA" or transparent or (im.palette is not None and im.palette.mode == "RGBA")
                channels = 4 if alpha else 3
            elif mode in ("RGBA", "LA", "La", "RGBa") or (mode == "RGB" and transparent):
                channels = 4
            else:
                channels = 3
            try:
                turned = parse_orientation(im.getexif().get(_ORIENTATION)) in (5, 6, 7, 8)
            except Exception:
                turned = False
    except Exception:
        return None
    if turned:
        width, height = height, width
    return Layout(width, height, channels, 2 if sixteen else 1)


_PILLOW_CHECK_LOCK = threading.Lock()


@contextlib.contextmanager
def _without_pillow_bomb_check() -> Iterator[None]:
    """Hold Pillow's own pixel check off while a header is parsed: above its limit it prints a raw
    ``DecompressionBombWarning``, above twice that it raises with its own figures and advice, before
    :func:`_decode` can apply the caller's cap. Pixels are decoded only after that cap passed."""
    with _PILLOW_CHECK_LOCK:
        saved = PILImage.MAX_IMAGE_PIXELS
        PILImage.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            PILImage.MAX_IMAGE_PIXELS = saved


def too_large_reason(width: int, height: int, max_pixels: int) -> str:
    """The message for an image over the pixel cap, naming the option that raises it."""
    pixels = width * height
    return (f"{width}×{height} = {pixels:,} pixels is over the limit of {max_pixels:,} (a guard against "
            f"decompression bombs); pass --max-pixels {pixels} if you trust this file")


def _decode(im: PILImage.Image, path: Path, max_pixels: int) -> Image:
    fmt = _PIL_FORMAT[im.format or ""]
    width, height = im.size
    if width * height > max_pixels:
        raise ImageTooLargeError(path, too_large_reason(width, height, max_pixels))
    icc = im.info.get("icc_profile") or None
    mode = im.mode
    if mode in ("RGB", "RGBA", "LA") and ";16" in _rawmode(im):
        pixels, chunk = _decode_cv2_16bit(im, path, fmt)
        exif, orientation = file_exif(im, path, fmt, chunk, upright=fmt == "tiff")  # libtiff rotated it
    else:
        im.load()
        pixels = _pillow_pixels(im, path)
        exif, orientation = file_exif(im, path, fmt)
    pixels = apply_orientation(pixels, orientation)
    if icc is not None and (problem := icc_problem(icc, pixels)):
        log.warning("%s: ICC profile dropped: %s", path, problem)
        icc = None
    iptc = None
    if fmt in ("jpeg", "tiff"):
        try:
            iptc = iptc_of(im)
        except Exception as exc:  # metadata never costs the image
            log.warning("%s: IPTC record dropped: %s", path, exc)
    return Image(pixels=pixels, icc=icc, exif=exif, format=fmt, path=path, mode=mode,
                 orientation=orientation, xmp=None if fmt == "bmp" else xmp_of(im.info), iptc=iptc)


def _rawmode(im: PILImage.Image) -> str:
    """The decoder's raw mode, e.g. ``"RGB;16B"``: where Pillow hides a bit depth it cannot keep."""
    tile = getattr(im, "tile", None)  # set by every file opener (ImageFile), not by Image itself
    if not tile:
        return ""
    args = tile[0].args
    return args if isinstance(args, str) else str(args[0]) if args else ""


def _pillow_pixels(im: PILImage.Image, path: Path) -> np.ndarray:
    mode = im.mode
    if mode in ("RGB", "L") and "transparency" in im.info:  # PNG colour key (tRNS) → real alpha
        return np.asarray(im.convert("RGBA"))
    if mode in ("RGB", "RGBA", "L"):
        return np.asarray(im)
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode in ("P", "PA"):
        alpha = mode == "PA" or "transparency" in im.info or (im.palette is not None and
                                                               im.palette.mode == "RGBA")
        return np.asarray(im.convert("RGBA" if alpha else "RGB"))
    if mode in ("LA", "La", "RGBa"):
        return np.asarray(im.convert("RGBA"))
    if mode in ("CMYK", "YCbCr", "RGBX"):
        return np.asarray(im.convert("RGB"))
    if mode.startswith("I;16") or (mode == "I" and "16" in _rawmode(im)):
        return np.asarray(im).astype(np.uint16)
    raise UnsupportedImageError(path, f"{mode} images (e.g. 32-bit integer or float) are not supported; "
                                      "convert to 8- or 16-bit first")


def _decode_cv2_16bit(im: PILImage.Image, path: Path, fmt: str) -> tuple[np.ndarray, bytes]:
    """Pixels as stored, and the EXIF chunk OpenCV found (b"" for none)."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    arr, types, chunks = cv2.imdecodeWithMetadata(data, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageDecodeError(path, "cannot decode 16-bit image (corrupt or truncated, or over "
                                     "OpenCV's OPENCV_IO_MAX_IMAGE_PIXELS)")
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise UnsupportedImageError(path, f"16-bit {im.mode} {fmt.upper()} decoded as {arr.dtype} "
                                          f"{arr.shape}; save it as 16-bit RGB(A) PNG")
    pixels = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB if arr.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return pixels, next((c.tobytes() for t, c in zip(types, chunks, strict=True)
                         if t == cv2.IMAGE_METADATA_EXIF), b"")


def _unidentified(path: Path) -> SrpipeError:
    with path.open("rb") as f:
        head = f.read(16)
    known = next((name for sig, name in _OTHER_SIGNATURES if head.startswith(sig)), None)
    if head[4:8] == b"ftyp":
        known = "HEIF/AVIF"
    if known:
        return UnsupportedImageError(path, f"{known} images are not supported (supported: {_SUPPORTED})")
    if path.suffix.lower() in SUFFIX_FORMAT:
        return ImageDecodeError(path, f"not a valid {path.suffix.lstrip('.').upper()} file "
                                      "(corrupt or truncated header)")
    return UnsupportedImageError(path, f"not an image in a supported format ({_SUPPORTED})")
