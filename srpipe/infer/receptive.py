"""Measuring a model's effective receptive field, and deriving the tile overlap from it.

What tiling breaks is context: a tile's output near a cut edge differs from the whole-image output
because the network saw zero padding instead of the real neighbours. So we measure exactly that, with
the model's actual weights: run a strip of a harsh synthetic test card (full-range sharp-edged blocks,
fine sinusoids and noise) whole and with ``R + 1`` LR columns cut off (``R`` = theoretical radius),
on each of the four sides, and record ``profile[d]`` = the largest difference, in 8-bit code values of
the clipped output, over all output pixels whose LR distance to the cut edge is ``d``. Beyond ``R`` it
is float noise by construction.

- Effective radius: the smallest ``r`` with ``profile[d] < threshold`` (0.5 codes) for every ``d >= r``.
- Recommended overlap: the smallest ``O`` for which the error predicted from the profile for tiles
  blended the way ``tiling`` blends them (``blended_error``) stays <= threshold / 2 — half, because a
  pixel where four tiles meet collects the errors of two cut edges, and under this model they add.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from srpipe.infer.tiling import rising_weights

ForwardFn = Callable[[np.ndarray], np.ndarray]
"""NCHW float32 RGB in [0, 1] → NCHW float32 at ``scale`` × the size (a model's raw forward)."""

THRESHOLD_CODES = 0.5


@dataclass(frozen=True)
class ReceptiveField:
    """Result of ``measure``; radii and overlap in LR pixels, errors in 8-bit code values."""

    theoretical: int
    effective: int
    overlap: int
    predicted_error: float
    profile: tuple[float, ...]


def test_card(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Deterministic ``(height, width, 3)`` float32 image in [0, 1] built to provoke large responses."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.stack([0.5 + 0.3 * np.sin(xx / (1.3 + c) + yy / (2.1 + c) + c) for c in range(3)], axis=-1)
    for _ in range(max(8, height * width // 150)):
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        y1, x1 = y0 + rng.integers(2, 12), x0 + rng.integers(2, 12)
        img[y0:y1, x0:x1] = rng.integers(0, 2, size=3)  # saturated colours give the sharpest edges
    img += rng.uniform(-0.15, 0.15, size=img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _run(forward: ForwardFn, img: np.ndarray) -> np.ndarray:
    out = forward(np.ascontiguousarray(img.transpose(2, 0, 1)[None]))
    return np.clip(out[0].transpose(1, 2, 0), 0.0, 1.0) * 255.0


def error_profile(forward: ForwardFn, *, scale: int, radius: int, rows: int = 64,
                  seed: int = 0) -> np.ndarray:
    """``profile[d]`` for ``d = 0 .. radius + 1`` (see the module docstring)."""
    cut, keep = radius + 1, radius + 2
    profile = np.zeros(keep, dtype=np.float64)
    for vertical in (False, True):
        card = test_card(*((cut + keep, rows) if vertical else (rows, cut + keep)), seed=seed + int(vertical))

        def upscaled(img: np.ndarray, vertical: bool = vertical) -> np.ndarray:
            y = _run(forward, img)  # the cut axis is moved to axis 1 so both cases compare alike
            return y.transpose(1, 0, 2) if vertical else y

        whole = upscaled(card)
        for side in ("start", "end"):
            if vertical:
                crop = card[cut:] if side == "start" else card[:-cut]
            else:
                crop = card[:, cut:] if side == "start" else card[:, :-cut]
            ref = whole[:, cut * scale:] if side == "start" else whole[:, : -cut * scale]
            diff = np.abs(upscaled(crop) - ref).max(axis=(0, 2))  # per HR column; column 0 = at the cut
            if side == "end":
                diff = diff[::-1]
            profile = np.maximum(profile, diff.reshape(keep, scale).max(axis=1))
    return profile


def effective_radius(profile: np.ndarray, threshold: float = THRESHOLD_CODES) -> int:
    """Smallest ``r`` such that every ``profile[d >= r]`` is below ``threshold``."""
    above = np.nonzero(np.asarray(profile) >= threshold)[0]
    return int(above[-1]) + 1 if above.size else 0


def blended_error(profile: np.ndarray, overlap: int, scale: int) -> float:
    """Worst 1-D error predicted for tiles sharing ``overlap`` LR pixels, blended as ``tiling`` does.

    Inside the shared strip a pixel gets w·e_B + (1 − w)·e_A (``w`` from ``tiling.rising_weights``), each
    tile's error read from the profile at the pixel's distance to that tile's cut edge; past the strip
    a single tile's ``profile[d]`` for ``d >= overlap``. Distances beyond the profile (beyond the
    theoretical radius) count as zero error.
    """
    p = np.asarray(profile, dtype=np.float64)
    tail = float(p[overlap:].max()) if overlap < p.size else 0.0
    if overlap == 0:
        return max(tail, float(p.max()) if p.size else 0.0)

    def e(d: np.ndarray) -> np.ndarray:
        return np.where(d < p.size, p[np.minimum(d, p.size - 1)], 0.0)

    k = np.arange(overlap * scale)
    w_b = rising_weights(overlap, scale)
    inside = w_b * e(k // scale) + (1.0 - w_b) * e((overlap * scale - 1 - k) // scale)
    return max(tail, float(inside.max()))


def recommend_overlap(profile: np.ndarray, scale: int,
                      threshold: float = THRESHOLD_CODES) -> tuple[int, float]:
    """Smallest overlap whose predicted blended error is <= threshold / 2, and that error."""
    # The zero-weight margin is a third of the overlap, so the answer can reach ~3x the profile.
    limit = 4 * len(profile) + 4
    for overlap in range(0, limit + 1):
        err = blended_error(profile, overlap, scale)
        if err <= threshold / 2:
            return overlap, err
    return limit, blended_error(profile, limit, scale)


def measure(forward: ForwardFn, *, scale: int, theoretical: int,
            threshold: float = THRESHOLD_CODES) -> ReceptiveField:
    """Measure the profile with ``forward`` and derive radius and overlap from it."""
    profile = error_profile(forward, scale=scale, radius=theoretical)
    overlap, predicted = recommend_overlap(profile, scale, threshold)
    return ReceptiveField(theoretical=theoretical, effective=effective_radius(profile, threshold),
                          overlap=overlap, predicted_error=round(predicted, 4),
                          profile=tuple(round(float(v), 4) for v in profile))
