"""The image file formats srpipe reads and writes, by suffix (shared by ``io`` and ``write``)."""

from __future__ import annotations

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
SUFFIX_FORMAT = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".tif": "tiff",
                 ".tiff": "tiff", ".bmp": "bmp"}
PNG_COMPRESS_LEVEL = 1  # level 6 is ~3x slower on photos for ~2.5 % smaller files (measured)
