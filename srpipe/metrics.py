"""PSNR and SSIM exactly as the super-resolution papers score them (docs/metrics.md).

The protocol of the EDSR authors' MATLAB evaluation (``LimBee/NTIRE2017 demo/evaluation.m``):

1. SR and HR are 8-bit images. HR is cropped (top-left anchored) to the SR size.
2. Y channel: MATLAB ``rgb2ycbcr`` on uint8, whose result is uint8 — i.e. ``Y = 16 + (65.481 R +
   128.553 G + 24.966 B) / 255`` **rounded** to an integer. Grayscale images (2-D, e.g. Set14's
   bridge) are scored on their gray channel as is, not pushed through the Y formula.
3. ``shave`` pixels (default: the scale) are removed from each border of both images.
4. PSNR = ``10·log10(255² / MSE)`` with the MSE in float64 over all remaining values (all channels for
   RGB); identical images give ``inf``.
5. SSIM = mean of the SSIM map of Wang et al.'s ``ssim_index.m``: 11×11 Gaussian window (σ 1.5,
   normalised), K1 0.01, K2 0.03, L 255, 'valid' filtering (no padding); RGB SSIM is the mean over
   the three channels.

Dataset figures are the mean of per-image values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from srpipe.imaging.color import rgb_to_y_uint8

WINDOW = 11
SIGMA = 1.5
K1, K2, PEAK = 0.01, 0.03, 255.0
C1, C2 = (K1 * PEAK) ** 2, (K2 * PEAK) ** 2


@dataclass(frozen=True)
class Scores:
    """Scores of one image (or the mean over a set): PSNR in dB, SSIM in [−1, 1]."""

    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    ssim_rgb: float

    @staticmethod
    def mean(items: Sequence[Scores]) -> Scores:
        """Arithmetic mean of each field (the papers average per-image PSNR, not MSE)."""
        if not items:
            raise ValueError("no scores to average")
        return Scores(**{f.name: float(np.mean([getattr(s, f.name) for s in items])) for f in fields(Scores)})


def gaussian_1d() -> np.ndarray:
    """Normalised 1-D factor of ``fspecial('gaussian', 11, 1.5)``; the 2-D window is its outer product."""
    x = np.arange(WINDOW, dtype=np.float64) - (WINDOW - 1) / 2
    g = np.exp(-(x * x) / (2 * SIGMA * SIGMA))
    return g / g.sum()


def _check_uint8(img: np.ndarray, what: str) -> np.ndarray:
    if img.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 (8-bit levels), got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"{what} must be H×W gray or H×W×3 RGB, got shape {img.shape}")
    return img


def to_y(img: np.ndarray) -> np.ndarray:
    """Y as float64 integer levels: MATLAB ``rgb2ycbcr`` of uint8 RGB (rounded); 2-D gray unchanged."""
    img = _check_uint8(img, "image")
    # rgb2ycbcr on uint8 returns uint8: Y rounded half away from zero (srpipe.imaging.color).
    return img.astype(np.float64) if img.ndim == 2 else rgb_to_y_uint8(img).astype(np.float64)


def align(sr: np.ndarray, hr: np.ndarray, *, shave: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop HR to SR's size (top-left anchored) and shave ``shave`` pixels off every border of both."""
    sr, hr = _check_uint8(sr, "SR"), _check_uint8(hr, "HR")
    if sr.ndim != hr.ndim:
        kinds = ["gray" if a.ndim == 2 else "RGB" for a in (sr, hr)]
        raise ValueError(f"SR is {kinds[0]} but HR is {kinds[1]}")
    h, w = sr.shape[:2]
    if hr.shape[0] < h or hr.shape[1] < w:
        raise ValueError(f"HR {hr.shape[1]}x{hr.shape[0]} is smaller than SR {w}x{h}")
    if shave < 0 or h <= 2 * shave or w <= 2 * shave:
        raise ValueError(f"cannot shave {shave} px from each border of a {w}x{h} image")
    hr = hr[:h, :w]
    return sr[shave : h - shave, shave : w - shave], hr[shave : h - shave, shave : w - shave]


def psnr(a: np.ndarray, b: np.ndarray, *, peak: float = PEAK) -> float:
    """PSNR in dB of two equally shaped arrays of levels; MSE in float64; ``inf`` when identical."""
    if a.shape != b.shape:
        raise ValueError(f"PSNR of arrays of different shapes {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """'valid' 2-D correlation with the separable window ``outer(g, g)`` (float64)."""
    rows = np.lib.stride_tricks.sliding_window_view(x, len(g), axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(rows, len(g), axis=1) @ g


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (``ssim_index.m``) of two H×W arrays of levels; H×W×C → mean over channels."""
    if a.shape != b.shape:
        raise ValueError(f"SSIM of arrays of different shapes {a.shape} and {b.shape}")
    if a.ndim == 3:
        return float(np.mean([ssim(a[..., c], b[..., c]) for c in range(a.shape[2])]))
    if min(a.shape) < WINDOW:
        raise ValueError(f"SSIM needs at least {WINDOW}x{WINDOW} pixels after shaving, "
                         f"got {a.shape[1]}x{a.shape[0]}")
    g = gaussian_1d()
    x, y = a.astype(np.float64), b.astype(np.float64)
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mu_x * mu_x
    syy = _filter_valid(y * y, g) - mu_y * mu_y
    sxy = _filter_valid(x * y, g) - mu_x * mu_y
    num = (2 * mu_x * mu_y + C1) * (2 * sxy + C2)
    den = (mu_x * mu_x + mu_y * mu_y + C1) * (sxx + syy + C2)
    return float(np.mean(num / den))


def score(sr: np.ndarray, hr: np.ndarray, *, shave: int) -> Scores:
    """All four scores of one uint8 SR image against its uint8 HR image (see the module docstring)."""
    sr_c, hr_c = align(sr, hr, shave=shave)
    sr_y, hr_y = to_y(sr_c), to_y(hr_c)
    return Scores(psnr_y=psnr(sr_y, hr_y), ssim_y=ssim(sr_y, hr_y), psnr_rgb=psnr(sr_c, hr_c),
                  ssim_rgb=ssim(sr_c, hr_c))
