"""Writing image files: ``write_image`` (atomic; ICC, EXIF, XMP and IPTC kept where the format holds them).

The reading side, and the ``Image`` record whose metadata is passed back here, is ``srpipe.imaging.io``
(which re-exports ``write_image``). Pillow encodes everything except 16-bit colour, which Pillow has
no mode for: OpenCV encodes that, and the metadata it cannot embed is patched into its file
(``srpipe.imaging.embed``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import PngImagePlugin

from srpipe.errors import OutputError, SrpipeError, UnsupportedImageError, UsageError
from srpipe.imaging.atomic import atomic_path
from srpipe.imaging.embed import jpeg_iptc_segment, png_with_itxt, tiff_with_metadata
from srpipe.imaging.formats import IMAGE_SUFFIXES, PNG_COMPRESS_LEVEL, SUFFIX_FORMAT
from srpipe.imaging.metadata import (
    IPTC_TAG,
    XMP_KEY,
    XMP_TAG,
    exif_of,
    icc_problem,
    updated_exif,
    updated_xmp,
)

log = logging.getLogger(__name__)

_SAVE_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF", "bmp": "BMP"}
_MAX_SIDE = {"jpeg": 65_535, "webp": 16_383}
_JPEG_MAX_EXIF = 65_533  # one APP1 marker
_JPEG_MAX_XMP = _JPEG_MAX_EXIF - 29  # the same, after the "http://ns.adobe.com/xap/1.0/\0" header


@dataclass(frozen=True)
class _Metadata:
    """What one encoding attempt embeds (already updated for the new pixels)."""

    icc: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    iptc: bytes | None = None


def write_image(path: str | Path, pixels: np.ndarray, *, icc: bytes | None = None,
                exif: bytes | None = None, xmp: bytes | None = None, iptc: bytes | None = None,
                quality: int = 95) -> None:
    """Write ``pixels`` to ``path`` atomically; the format comes from the suffix (``IMAGE_SUFFIXES``).

    ``uint16`` is kept in PNG and TIFF; JPEG, WebP and BMP are 8-bit, so ``uint16`` there raises
    ``UnsupportedImageError`` (convert with ``to_uint8`` first). Alpha is refused by JPEG and BMP
    (readers ignore 32-bit BMP alpha). ICC, EXIF and XMP are stored by PNG, JPEG, WebP and TIFF; BMP
    stores none (logged). ``iptc`` (an IPTC-IIM record, as ``Image.iptc``) is stored by JPEG
    (Photoshop APP13) and TIFF (tag 33723); PNG and WebP have no standard place for it (its fields
    are usually mirrored in XMP), so it is left out there (logged). 16-bit colour (OpenCV's encoder)
    gets what OpenCV cannot embed patched into its file: XMP as PNG ``iTXt``; ICC, XMP, IPTC and
    EXIF (descriptive IFD0 tags, Exif and GPS sub-IFDs) into TIFF's first IFD. EXIF passes through
    ``updated_exif`` and XMP through ``updated_xmp`` (orientation 1, pixel dimensions of ``pixels``).
    An ICC profile that does not fit the pixels, unparsable EXIF, XMP or IPTC too large for JPEG's
    one marker, or an encoder refusing any of them, costs the metadata (with a warning), never the
    image. ``quality`` (1-100) is JPEG/WebP quality; JPEG uses 4:4:4 chroma from 90 up, WebP 100 is
    lossless; 8-bit TIFF is uncompressed (Pillow's libtiff path cannot write EXIF sub-IFDs), 16-bit
    colour TIFF is OpenCV's LZW with a predictor. The parent folder must exist. Raises
    ``OutputError`` when the file cannot be written; an existing file at ``path`` is then left
    untouched.
    """
    path = Path(path)
    fmt = SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt is None:
        raise UnsupportedImageError(path, f"cannot write '{path.suffix}' files; use one of "
                                          f"{', '.join(IMAGE_SUFFIXES)}")
    _check_writable(path, pixels, fmt)
    if not 1 <= quality <= 100:
        raise UsageError(f"{path}: quality must be between 1 and 100, got {quality}")
    if icc is not None and (problem := icc_problem(icc, pixels)):
        log.warning("%s: ICC profile not written: %s", path, problem)
        icc = None
    if exif is not None:
        try:
            exif = updated_exif(exif, pixels.shape[1], pixels.shape[0])
        except Exception as exc:
            log.warning("%s: EXIF not written: cannot parse it (%s)", path, exc)
            exif = None
    if exif is not None and fmt == "jpeg" and len(exif) > _JPEG_MAX_EXIF:
        exif = _jpeg_sized_exif(path, exif)
    if xmp is not None:
        xmp = updated_xmp(xmp, pixels.shape[1], pixels.shape[0])
        if fmt == "jpeg" and len(xmp) > _JPEG_MAX_XMP:
            log.warning("%s: XMP not written: %d bytes do not fit one JPEG APP1 marker", path, len(xmp))
            xmp = None
    if iptc is not None and fmt not in ("jpeg", "tiff"):
        log.info("%s: %s has no standard place for IPTC-IIM; written without it", path, fmt.upper())
        iptc = None
    if iptc is not None and fmt == "jpeg":
        try:
            jpeg_iptc_segment(iptc)  # the one place that knows the marker's limit
        except ValueError as exc:
            log.warning("%s: IPTC not written: %s", path, exc)
            iptc = None
    # An encoder refusing metadata (libpng rejects some ICC profiles) costs the metadata, not the image.
    meta = _Metadata(icc=icc, exif=exif, xmp=xmp, iptc=iptc)
    attempts = [(meta, "")]
    if icc:
        attempts.append((dataclasses.replace(meta, icc=None), "the ICC profile"))
    if exif or xmp or iptc:
        attempts.append((_Metadata(), "any metadata"))
    try:
        with atomic_path(path) as tmp:
            for i, (attempt, _) in enumerate(attempts):
                try:
                    _encode(tmp, path, pixels, fmt, attempt, quality)
                    break
                except Exception as exc:
                    if i + 1 == len(attempts):
                        raise
                    log.warning("%s: encoding failed (%s); retrying without %s", path, exc,
                                attempts[i + 1][1])
    except SrpipeError:
        raise
    except Exception as exc:
        raise OutputError(f"{path}: cannot write {fmt.upper()}: {exc}") from exc


def _jpeg_sized_exif(path: Path, exif: bytes) -> bytes | None:
    """``exif`` (over one APP1 marker) re-serialised without the thumbnail bytes that the in-place
    update unlinks but keeps, if that fits; else None, with a warning."""
    try:
        compact = exif_of(exif).tobytes()
    except Exception as exc:
        compact, why = b"", f"cannot re-serialise it ({exc})"
    else:
        why = f"{len(exif)} bytes do not fit one JPEG APP1 marker"
    if compact and len(compact) <= _JPEG_MAX_EXIF:
        return compact
    log.warning("%s: EXIF not written: %s", path, why)
    return None


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


def _encode(tmp: Path, path: Path, pixels: np.ndarray, fmt: str, meta: _Metadata, quality: int) -> None:
    if pixels.dtype == np.uint16 and pixels.ndim == 3:  # Pillow has no 16-bit colour mode
        _encode_cv2_16bit(tmp, pixels, fmt, meta)
        return
    icc, exif, xmp = meta.icc, meta.exif, meta.xmp
    opts: dict[str, object] = {}
    if fmt == "bmp":
        if icc or exif or xmp:
            log.info("%s: BMP cannot store ICC/EXIF/XMP; written without", path)
    else:
        if icc:
            opts["icc_profile"] = icc
        if exif:
            opts["exif"] = exif[6:] if fmt == "webp" else exif  # WebP's EXIF chunk has no prefix
        if xmp and fmt in ("jpeg", "webp"):
            opts["xmp"] = xmp
        elif (xmp or meta.iptc) and fmt == "tiff":  # tiffinfo would replace the EXIF: one tag set for all
            tags = exif_of(exif) if exif else PILImage.Exif()
            if xmp:
                tags[XMP_TAG] = xmp
            if meta.iptc:
                tags[IPTC_TAG] = meta.iptc
            opts["exif"] = tags
    if fmt == "png":
        opts["compress_level"] = PNG_COMPRESS_LEVEL
        if xmp:
            info = PngImagePlugin.PngInfo()
            info.add_itxt(XMP_KEY, xmp.decode("utf-8", errors="replace"))
            opts["pnginfo"] = info
    elif fmt == "jpeg":
        opts.update(quality=quality, subsampling=0 if quality >= 90 else 2)
        if meta.iptc:
            opts["extra"] = jpeg_iptc_segment(meta.iptc)  # Pillow writes these marker bytes as given
    elif fmt == "webp":
        opts.update(quality=quality, lossless=quality == 100, exact=True)
    PILImage.fromarray(pixels).save(tmp, format=_SAVE_FORMAT[fmt], **opts)


def _encode_cv2_16bit(tmp: Path, pixels: np.ndarray, fmt: str, meta: _Metadata) -> None:
    import cv2

    icc, exif, xmp = meta.icc, meta.exif, meta.xmp
    bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    if fmt == "png":
        types, chunks = [], []
        if exif:
            types.append(cv2.IMAGE_METADATA_EXIF)
            chunks.append(np.frombuffer(exif[6:], dtype=np.uint8))  # eXIf holds no prefix
        if icc:
            types.append(cv2.IMAGE_METADATA_ICCP)
            chunks.append(np.frombuffer(icc, dtype=np.uint8))
        ok, buf = cv2.imencodeWithMetadata(".png", bgr, types, chunks,
                                           [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL])
        data = buf.tobytes()
        if ok and xmp:  # OpenCV writes XMP as Latin-1 tEXt; XMP is UTF-8, which iTXt declares
            data = png_with_itxt(data, XMP_KEY, xmp)
    else:
        ok, buf = cv2.imencode(".tif", bgr)
        data = buf.tobytes()
        if ok and (icc or xmp or exif or meta.iptc):  # OpenCV cannot embed them; the IFD is patched
            data = tiff_with_metadata(data, icc=icc, xmp=xmp, exif=exif, iptc=meta.iptc)
    if not ok:
        raise ValueError(f"OpenCV could not encode 16-bit {fmt.upper()}")
    tmp.write_bytes(data)
