"""How degraded a photo is, and the strength ``--strength auto`` gives it.

- :func:`jpeg_quality`: the IJG quality (1-100) whose luma quantisation table the JPEG file carries,
  read from its DQT segment. Exact for files written by libjpeg-style encoders at a quality setting
  (OpenCV, Pillow, ImageMagick, most software); camera and phone encoders use their own tables, so
  there it is the nearest IJG quality (``exact`` False). ``None`` for anything that is not a JPEG.
- :func:`noise_sigma`: Immerkær's fast noise estimator (1996) per colour channel, on the 0-255 scale,
  taken locally: the mean absolute response in 4×4 blocks, and of those the 5th percentile (the
  flattest blocks, where texture adds least), scaled so pure Gaussian noise reads its true σ; the
  channels' mean. Colour noise and luma noise of one σ read the same. Blocks near black or white are
  left out (clipping removes noise there). Texture still reads as some noise: on 50 bicubic-downscaled
  training photos, clean LR read 0.9-1.0 (median) and 2.1-2.7 (90th percentile), the same with σ = 5
  added 5.2 (5th percentile) to 5.8-6.0 (median).
- :func:`auto_strength`: ``max(jpeg term, noise term)``, each a clamped line (constants below, their
  calibration in docs/models.md "Photo models"), rounded to :data:`STEP` so a folder needs few
  interpolated models.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# IJG (libjpeg) Annex K luminance table, in natural (row-major) order.
_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.int64)
# Position in natural order of the k-th coefficient in zigzag order (DQT stores zigzag order).
_ZIGZAG = np.array([
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6,
    7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31,
    39, 46, 53, 60, 61, 54, 47, 55, 62, 63], np.int64)

JPEG_FULL, JPEG_CLEAN = 60, 95  # quality at or below which the strength is 1, at or above which it is 0
NOISE_CLEAN, NOISE_FULL = 2.5, 5.0  # σ (0-255) at or below which the strength is 0, at or above: 1
STEP = 0.1  # strengths are rounded to this


@dataclass(frozen=True)
class Estimate:
    """What ``auto`` saw in one photo and the strength it chose."""

    jpeg_quality: int | None
    jpeg_exact: bool
    noise_sigma: float
    strength: float


def ijg_table(quality: int) -> np.ndarray:
    """The baseline luma table libjpeg writes at ``quality``, natural order."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((_STD_LUMA * scale + 50) // 100, 1, 255)


def _luma_table(data: bytes) -> np.ndarray | None:
    """Quantisation table 0 (natural order) from the JPEG bytes, or None."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker == 0xDB:
            seg, k = data[pos + 4 : pos + 2 + length], 0
            while k < len(seg):
                precision, table_id = seg[k] >> 4, seg[k] & 15
                size = 128 if precision else 64
                values = np.frombuffer(seg[k + 1 : k + 1 + size], ">u2" if precision else "u1")
                if table_id == 0 and values.size == 64:
                    natural = np.empty(64, np.int64)
                    natural[_ZIGZAG] = values
                    return natural
                k += 1 + size
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no table 0 before the data
            return None
        pos += 2 + length
    return None


def jpeg_quality(path: Path) -> tuple[int, bool] | None:
    """``(quality, exact)`` of a JPEG file from its luma table (module docstring), or None."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 20)  # tables sit in the header, before the scan
    except OSError:
        return None
    if data[:2] != b"\xff\xd8":
        return None
    table = _luma_table(data)
    if table is None:
        return None
    errors = [int(np.abs(ijg_table(q) - table).sum()) for q in range(1, 101)]
    best = int(np.argmin(errors))
    return best + 1, errors[best] == 0


_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
BLOCK = 4  # px per side of the blocks whose mean response is one local estimate
QUANTILE = 5  # percentile of the block estimates taken: the flattest blocks show the noise alone
PURE_NOISE_GAIN = 1.77  # maps that percentile to σ on pure Gaussian noise (measured: tests)
SATURATED = (10, 245)  # blocks touching these levels are left out: clipping hides the noise there


def noise_sigma(pixels: np.ndarray) -> float:
    """Gaussian noise σ (0-255 scale, per channel) of the image (module docstring): the mean of the
    channels' estimates; 0 when fewer than 16 unsaturated 4×4 blocks exist."""
    img = pixels.astype(np.float32) * np.float32(255 / (65535 if pixels.dtype == np.uint16 else 255))
    planes = [img] if img.ndim == 2 else [img[..., c] for c in range(min(3, img.shape[2]))]
    found = [s for s in (_plane_sigma(p) for p in planes) if s is not None]
    return float(np.mean(found)) if found else 0.0


def _plane_sigma(y: np.ndarray) -> float | None:
    if min(y.shape) < 3:
        return None
    response = np.abs(cv2.filter2D(y, cv2.CV_32F, _IMMERKAER)[1:-1, 1:-1])
    inner, b = y[1:-1, 1:-1], BLOCK
    h, w = response.shape[0] // b * b, response.shape[1] // b * b
    blocks = response[:h, :w].reshape(h // b, b, w // b, b).mean(axis=(1, 3))
    levels = inner[:h, :w].reshape(h // b, b, w // b, b)
    usable = (levels.min(axis=(1, 3)) > SATURATED[0]) & (levels.max(axis=(1, 3)) < SATURATED[1])
    if usable.sum() < 16:
        return None
    local = math.sqrt(math.pi / 2) / 6 * float(np.percentile(blocks[usable], QUANTILE))
    return PURE_NOISE_GAIN * local


def _ramp(value: float, zero: float, one: float) -> float:
    return min(1.0, max(0.0, (value - zero) / (one - zero)))


def auto_strength(quality: int | None, sigma: float) -> float:
    """The strength for a photo of JPEG ``quality`` (None: not a JPEG) and noise ``sigma``."""
    jpeg_term = 0.0 if quality is None else _ramp(JPEG_CLEAN - quality, 0, JPEG_CLEAN - JPEG_FULL)
    s = max(jpeg_term, _ramp(sigma, NOISE_CLEAN, NOISE_FULL))
    return round(round(s / STEP) * STEP, 6)


def estimate(path: Path | None, pixels: np.ndarray) -> Estimate:
    """The :class:`Estimate` of the photo at ``path`` (None: pixels without a file) whose decoded pixels
    are ``pixels``."""
    q = jpeg_quality(path) if path is not None else None
    sigma = noise_sigma(pixels)
    quality, exact = (q if q is not None else (None, False))
    return Estimate(quality, exact, round(sigma, 3), auto_strength(quality, sigma))
