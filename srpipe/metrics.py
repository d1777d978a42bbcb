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

Dataset figures are the mean of per-image values. The torch functions implement the same protocol
batched (float64 inside) for validation during training; they quantise their [0, 1] float inputs to
8-bit levels as saving the image would, so they agree with the numpy functions on the same data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from srpipe.imaging.color import rgb_to_y_uint8

if TYPE_CHECKING:
    import torch

WINDOW = 11
SIGMA = 1.5
K1, K2, PEAK = 0.01, 0.03, 255.0
C1, C2 = (K1 * PEAK) ** 2, (K2 * PEAK) ** 2
# As srpipe.imaging.color.rgb_to_y computes them (MATLAB's order), so torch and numpy agree to the bit.
Y_COEFFS = ((1 / 255) * 65.481, (1 / 255) * 128.553, (1 / 255) * 24.966)


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


# ---- batched torch versions (validation during training) ----


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] float → float64 tensor of 8-bit levels exactly as saving does
    (``srpipe.imaging.color.from_rgb_float``: float32 clamp, ×255 in float32, round half to even)."""
    return (x.detach().float().clamp(0, 1) * 255).round().double()


def _y_torch(levels: torch.Tensor) -> torch.Tensor:
    """N×C×H×W levels → N×1×H×W Y levels (rounded MATLAB Y for C = 3, the channel itself for C = 1)."""
    if levels.shape[1] == 1:
        return levels
    if levels.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {levels.shape[1]}")
    r, g, b = levels[:, 0:1], levels[:, 1:2], levels[:, 2:3]
    return (Y_COEFFS[0] * r + Y_COEFFS[1] * g + Y_COEFFS[2] * b + 16.0 + 0.5).floor()


def _aligned_y(sr: torch.Tensor, hr: torch.Tensor, shave: int) -> tuple[torch.Tensor, torch.Tensor]:
    if sr.ndim != 4 or hr.ndim != 4 or sr.shape[:2] != hr.shape[:2]:
        raise ValueError(f"expected N×C×H×W batches of equal N and C, got {tuple(sr.shape)} and "
                         f"{tuple(hr.shape)}")
    h, w = sr.shape[-2:]
    if hr.shape[-2] < h or hr.shape[-1] < w or h <= 2 * shave or w <= 2 * shave:
        raise ValueError(f"cannot align SR {tuple(sr.shape)} with HR {tuple(hr.shape)} shaving {shave}")
    sr_y, hr_y = _y_torch(quantize(sr)), _y_torch(quantize(hr[..., :h, :w]))
    return sr_y[..., shave : h - shave, shave : w - shave], hr_y[..., shave : h - shave, shave : w - shave]


def psnr_y_torch(sr: torch.Tensor, hr: torch.Tensor, *, shave: int) -> torch.Tensor:
    """Per-image Y-PSNR (N,) float64 of N×C×H×W [0, 1] batches; HR may be larger (cropped)."""
    sr_y, hr_y = _aligned_y(sr, hr, shave)
    mse = ((sr_y - hr_y) ** 2).mean(dim=(1, 2, 3))
    return 10 * (PEAK * PEAK / mse).log10()  # mse 0 → inf, as in the numpy version


def ssim_y_torch(sr: torch.Tensor, hr: torch.Tensor, *, shave: int) -> torch.Tensor:
    """Per-image Y-SSIM (N,) float64 of N×C×H×W [0, 1] batches (same protocol as :func:`ssim`)."""
    import torch.nn.functional as F

    x, y = _aligned_y(sr, hr, shave)
    if min(x.shape[-2:]) < WINDOW:
        raise ValueError(f"SSIM needs at least {WINDOW}x{WINDOW} pixels after shaving, got {tuple(x.shape)}")
    g = x.new_tensor(gaussian_1d())
    gv, gh = g.view(1, 1, WINDOW, 1), g.view(1, 1, 1, WINDOW)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, gv), gh)

    mu_x, mu_y = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mu_x**2, filt(y * y) - mu_y**2, filt(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + C1) * (2 * sxy + C2)) / ((mu_x**2 + mu_y**2 + C1) * (sxx + syy + C2))
    return ssim_map.mean(dim=(1, 2, 3))
