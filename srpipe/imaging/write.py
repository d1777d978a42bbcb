"""Writing image files: ``write_image`` (atomic; ICC, EXIF, XMP and IPTC kept where the format holds them).

The reading side, and the ``Image`` record whose metadata is passed back here, is ``srpipe.imaging.io``
(which re-exports ``write_image``). Pillow encodes everything except 16-bit colour, which Pillow has
no mode for: OpenCV encodes that. Neither encoder is given metadata (but a PNG's ICC profile, see
``write_image``): libexiv2 writes it into the encoded file (``srpipe.imaging.exiv``), the same way for
every format and bit depth.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from srpipe.errors import OutputError, SrpipeError, UnsupportedImageError, UsageError
from srpipe.imaging.atomic import atomic_path
from srpipe.imaging.exiv import Metadata, write_with_metadata
from srpipe.imaging.formats import IMAGE_SUFFIXES, PNG_COMPRESS_LEVEL, SUFFIX_FORMAT
from srpipe.imaging.metadata import icc_problem, updated_xmp

log = logging.getLogger(__name__)

_SAVE_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF", "bmp": "BMP"}
_MAX_SIDE = {"jpeg": 65_535, "webp": 16_383}


def write_image(path: str | Path, pixels: np.ndarray, *, icc: bytes | None = None,
                exif: bytes | None = None, xmp: bytes | None = None, iptc: bytes | None = None,
                quality: int = 95) -> None:
    """Write ``pixels`` to ``path`` atomically; the format comes from the suffix (``IMAGE_SUFFIXES``).

    ``uint16`` is kept in PNG and TIFF; JPEG, WebP and BMP are 8-bit, so ``uint16`` there raises
    ``UnsupportedImageError`` (convert with ``to_uint8`` first). Alpha is refused by JPEG and BMP
    (readers ignore 32-bit BMP alpha). ICC, EXIF and XMP are stored by PNG, JPEG, WebP and TIFF, 8-
    and 16-bit alike, through libexiv2; BMP stores none (logged). ``iptc`` (an IPTC-IIM record, as
    ``Image.iptc``) is stored by JPEG (Photoshop APP13) and TIFF (tag 33723); PNG and WebP have no
    standard place for it (its fields are usually mirrored in XMP), so it is left out there (logged).
    EXIF and XMP are made true of ``pixels``: Orientation 1, pixel dimensions updated where present,
    EXIF thumbnail deleted (``exiv.write_with_metadata``; XMP via ``updated_xmp``). An ICC profile
    that does not fit the pixels, or metadata libexiv2 cannot read or write (corrupt EXIF, XMP too
    large for JPEG), costs that metadata with a warning naming the file and the reason, never the
    image. ``quality`` (1-100) is JPEG/WebP quality; JPEG uses 4:4:4 chroma from 90 up, WebP 100 is
    lossless; 8-bit TIFF is uncompressed, 16-bit colour TIFF is OpenCV's LZW with a predictor. The
    parent folder must exist. Raises ``OutputError`` when the file cannot be written; an existing file
    at ``path`` is then left untouched.
    """
    path = Path(path)
    fmt = SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt is None:
        raise UnsupportedImageError(path, f"cannot write '{path.suffix}' files; use one of "
                                          f"{', '.join(IMAGE_SUFFIXES)}")
    _check_writable(path, pixels, fmt)
    if not 1 <= quality <= 100:
        raise UsageError(f"{path}: quality must be between 1 and 100, got {quality}")
    meta = _metadata_for(path, pixels, fmt, Metadata(icc=icc, exif=exif, xmp=xmp, iptc=iptc))
    problems: list[str] = []
    try:
        with atomic_path(path) as tmp:
            # PNG's profile goes in with the pixels: libexiv2 would write an iCCP chunk without the
            # name that libpng and browsers require (Exiv2 issue 2354); it keeps an existing one.
            if fmt == "png" and meta.icc:
                try:
                    _encode(tmp, pixels, fmt, quality, meta.icc)
                except Exception as exc:  # libpng refuses some profiles: that costs the profile only
                    problems.append(f"ICC profile not written: the PNG encoder refused it ({exc})")
                    _encode(tmp, pixels, fmt, quality)
                meta = dataclasses.replace(meta, icc=None)
            else:
                _encode(tmp, pixels, fmt, quality)
            if meta.kinds():
                problems += write_with_metadata(tmp, tmp.read_bytes(), fmt, meta, pixels.shape[1],
                                                pixels.shape[0])
    except SrpipeError:
        raise
    except Exception as exc:
        raise OutputError(f"{path}: cannot write {fmt.upper()}: {exc}") from exc
    for problem in problems:
        log.warning("%s: %s", path, problem)


def _metadata_for(path: Path, pixels: np.ndarray, fmt: str, meta: Metadata) -> Metadata:
    """``meta`` less what ``fmt`` or ``pixels`` cannot take (logged), its XMP brought up to date."""
    if fmt == "bmp":
        if meta.icc or meta.exif or meta.xmp:
            log.info("%s: BMP cannot store ICC/EXIF/XMP; written without", path)
        return Metadata()
    icc, xmp, iptc = meta.icc, meta.xmp, meta.iptc
    if icc is not None and (problem := icc_problem(icc, pixels)):
        log.warning("%s: ICC profile not written: %s", path, problem)
        icc = None
    if xmp is not None:
        xmp = updated_xmp(xmp, pixels.shape[1], pixels.shape[0])
    if iptc is not None and fmt not in ("jpeg", "tiff"):
        log.info("%s: %s has no standard place for IPTC-IIM; written without it", path, fmt.upper())
        iptc = None
    return Metadata(icc=icc, exif=meta.exif, xmp=xmp, iptc=iptc)


def _check_writable(path: Path, pixels: np.ndarray, fmt: str) -> None:
    ok_shape = isinstance(pixels, np.ndarray) and (
        pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4)))
    if not ok_shape or pixels.dtype not in (np.uint8, np.uint16) or 0 in pixels.shape:
        what = f"{pixels.dtype} array of shape {pixels.shape}" if isinstance(pixels, np.ndarray) else \
            type(pixels).__name__
        raise UnsupportedImageError(path, f"cannot write a {what}; expected H×W, H×W×3 or H×W×4 "
                                          "uint8/uint16")
    name = fmt.upper()
    if pixels.dtype == np.uint16 and fmt in ("jpeg", "webp", "bmp"):
        raise UnsupportedImageError(path, f"{name} holds 8 bits per channel; convert 16-bit pixels with "
                                          "srpipe.imaging.io.to_uint8 or write PNG/TIFF")
    if pixels.ndim == 3 and pixels.shape[2] == 4 and fmt in ("jpeg", "bmp"):
        raise UnsupportedImageError(path, f"{name} cannot store alpha; split it off with "
                                          "srpipe.imaging.color.split_alpha or write PNG/WebP/TIFF")
    limit = _MAX_SIDE.get(fmt)
    if limit and max(pixels.shape[:2]) > limit:
        raise UnsupportedImageError(path, f"{name} images are at most {limit} px a side, this one is "
                                          f"{pixels.shape[1]}×{pixels.shape[0]}; write PNG/TIFF")


def _encode(tmp: Path, pixels: np.ndarray, fmt: str, quality: int, icc: bytes | None = None) -> None:
    """``pixels`` encoded as ``fmt`` into ``tmp``, without metadata but for ``icc`` (PNG only)."""
    if pixels.dtype == np.uint16 and pixels.ndim == 3:  # Pillow has no 16-bit colour mode
        tmp.write_bytes(_encode_cv2_16bit(pixels, fmt, icc))
        return
    opts: dict[str, object] = {}
    if fmt == "png":
        opts["compress_level"] = PNG_COMPRESS_LEVEL
        if icc:
            opts["icc_profile"] = icc
    elif fmt == "jpeg":
        opts.update(quality=quality, subsampling=0 if quality >= 90 else 2)
    elif fmt == "webp":
        opts.update(quality=quality, lossless=quality == 100, exact=True)
    PILImage.fromarray(pixels).save(tmp, format=_SAVE_FORMAT[fmt], **opts)


def _encode_cv2_16bit(pixels: np.ndarray, fmt: str, icc: bytes | None) -> memoryview:
    import cv2

    bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    if fmt == "png":
        types, chunks = ([cv2.IMAGE_METADATA_ICCP], [np.frombuffer(icc, np.uint8)]) if icc else ([], [])
        ok, buf = cv2.imencodeWithMetadata(".png", bgr, types, chunks,
                                           [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL])
    else:
        ok, buf = cv2.imencode(".tif", bgr)
    if not ok:
        raise ValueError(f"OpenCV could not encode 16-bit {fmt.upper()}")
    return buf.reshape(-1).data
