"""MATLAB's bicubic weights for one axis (``contributions()`` of ``imresize``), and the proof that
lets any summation order reproduce MATLAB's rounding (:func:`exact_weights`).

The contract these implement is in :mod:`srpipe.imaging.resize`, which applies them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Literal

import numpy as np

Boundary = Literal["mirror", "replicate"]
BOUNDARIES: tuple[str, ...] = ("mirror", "replicate")


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic kernel with a = -0.5, as MATLAB's ``cubic``: powers by ``**`` (``pow``), as
    ``absx.^3`` reads; ``absx2 * absx`` differs in the last bit of some weights. That changes no
    integer-factor pixel; for other scales it decides near-ties (our best reading of MATLAB)."""
    absx = np.abs(x)
    absx2, absx3 = absx**2, absx**3
    return ((1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
            + (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2)))


def output_length(in_len: int, scale: float) -> int:
    """``ceil(in_len * scale)``, ignoring float noise (``255 * (1/3)`` is 85, not 86)."""
    exact = in_len * scale
    nearest = round(exact)
    return int(nearest) if abs(exact - nearest) < 1e-9 * max(1.0, abs(exact)) else math.ceil(exact)


def _fold(positions: np.ndarray, n: int, boundary: Boundary) -> np.ndarray:
    """Map 0-based positions (possibly outside ``[0, n)``) to source indices."""
    if boundary == "mirror":
        folded = np.mod(positions, 2 * n)
        return np.where(folded < n, folded, 2 * n - 1 - folded)
    return np.clip(positions, 0, n - 1)


@dataclass(frozen=True)
class AxisPlan:
    """One axis: MATLAB's ``weights[i, k]`` for source rows ``indices[i, k]`` (0-based, boundary
    applied); padded row ``p`` (covering every tap) is source row ``pad_index[p]``, tap ``k`` is padded
    row ``taps[i, k]``. Integer factors: ``window[i]`` holds the weights densely over padded rows
    ``start[i] ..`` (zeros for dropped taps); rows ``p, p + period, ...`` start ``stride`` apart."""

    weights: np.ndarray
    indices: np.ndarray
    pad_index: np.ndarray
    taps: np.ndarray
    start: np.ndarray
    window: np.ndarray
    period: int
    stride: int


def padded(span: int) -> int:
    """``span`` rounded up to a multiple of 4: OpenBLAS's sgemv takes 4 columns at a time, and 11
    taps (x3) took 8 % longer than 12 (measured; ``exact_weights`` pads with zero weights)."""
    return -(-span // 4) * 4


def _find_period(start: np.ndarray, max_period: int = 16) -> tuple[int, int]:
    """Smallest ``m`` with ``start[i + m] - start[i]`` constant, and that constant; (0, 0) if none."""
    for m in range(1, max_period + 1):
        if m >= len(start):
            return m, 0
        steps = start[m:] - start[:-m]
        if np.all(steps == steps[0]):
            return m, int(steps[0])
    return 0, 0


def is_integer_factor(scale: float) -> bool:
    """True for ``s`` and ``1/s`` with ``s`` a positive integer (up to float noise in ``1/s``)."""
    factor = scale if scale >= 1 else 1 / scale
    return abs(factor - round(factor)) < 1e-9


@lru_cache(maxsize=256)
def axis_plan(in_len: int, out_len: int, scale: float, boundary: Boundary = "mirror") -> AxisPlan:
    """MATLAB's ``contributions()`` for one axis, cached; arrays are read-only. Taps that are zero
    for every output pixel are dropped, as MATLAB does; weights are normalised in tap order."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    antialias = scale < 1
    width = 4.0 / scale if antialias else 4.0
    u = np.arange(1, out_len + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    count = math.ceil(width) + 2
    indices = left[:, None] + np.arange(count, dtype=np.float64)[None, :]
    dist = u[:, None] - indices
    weights = scale * cubic(scale * dist) if antialias else cubic(dist)
    # Sum in tap order like MATLAB (np.sum would switch to pairwise order for P >= 8).
    total = np.zeros(out_len, dtype=np.float64)
    for k in range(count):
        total = total + weights[:, k]
    weights = weights / total[:, None]
    keep = np.any(weights != 0, axis=0)
    weights = np.ascontiguousarray(weights[:, keep])
    positions = indices[:, keep].astype(np.intp) - 1  # 0-based, unfolded
    lo, hi = int(positions.min()), int(positions.max())
    pad_index = _fold(np.arange(lo, hi + 1), in_len, boundary)
    taps = np.ascontiguousarray(positions - lo)
    start = taps[:, 0].copy()
    period, stride = _find_period(start) if is_integer_factor(scale) else (0, 0)
    span = int((taps - start[:, None]).max()) + 1
    if start[-1] + span > len(pad_index):  # never for integer factors; the strided view needs it
        period, stride = 0, 0
    if period and (extra := start[-1] + padded(span) - len(pad_index)) > 0:  # for exact_weights
        pad_index = _fold(np.arange(lo, hi + 1 + extra), in_len, boundary)
    window = np.zeros((out_len, span if period else 0))
    if period:
        np.put_along_axis(window, taps - start[:, None], weights, axis=1)
    plan = AxisPlan(weights, pad_index[taps], pad_index, taps, start, window, period, stride)
    for arr in (plan.weights, plan.indices, plan.pad_index, plan.taps, plan.start, plan.window):
        arr.flags.writeable = False
    return plan


def contributions(in_len: int, out_len: int, scale: float,
                  boundary: Boundary = "mirror") -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's ``[weights, indices]`` for one axis: float64 and 0-based intp, both ``(out_len, P)``."""
    plan = axis_plan(in_len, out_len, scale, boundary)
    return plan.weights, plan.indices


@lru_cache(maxsize=256)
def exact_weights(in_len: int, out_len: int, scale: float, boundary: Boundary,
                   vmax: int) -> tuple[np.ndarray, float] | None:
    """Per-row weights ``(out_len, span)``, float32 where possible, and an ``offset``: window sums
    in *any* order plus ``offset``, rounded to nearest (either tie rule) and saturated, give MATLAB's
    result for inputs in ``[0, vmax]``. None where that is not proved.

    Proof. Each phase's weights are ``m_k / D`` (integers summing to ``D``; the weights' best
    rationals, checked), so the true sum is ``x = S / D``, ``S`` an integer. ``D = 2**q``: MATLAB's
    weights are exactly ``m_k / D``, and every partial sum in any order is a multiple of ``1/D``
    below ``vmax * sum|m| / D``, so both sums are ``x``; ``x + 1/4D`` is exact too while
    ``4 * (vmax * sum|m| + D) < 2**mantissa`` (uint8 x4: 4 * (255 * 4800 + 4096) < 2**24; x8 needs
    float64), and rounds to nearest as ``x`` rounds half up (offset ``1/4D``). ``D`` odd: ``x + 0.5 =
    (2S + D) / 2D`` (odd over even) is >= ``1/2D`` from every integer, so any sum within ``1/4D`` of
    ``x`` rounds like ``x`` (offset 0). Ours is off by the weights' distance to ``m/D`` and Higham's
    ``gamma_P * sum|w v|`` (any order, blocked or FMA); MATLAB's float64 sum likewise. Both must stay
    below ``1/4D`` (uint8 x3 in float32: 2.2e-4 against 1/324). Even ``D`` that is not a power of
    two (x6): no proof."""
    plan = axis_plan(in_len, out_len, scale, boundary)
    if not plan.period or out_len < plan.period:
        return None
    phases, span = plan.window[: plan.period], plan.window.shape[1]
    denom = math.lcm(*(Fraction(w).limit_denominator(1 << 20).denominator for w in phases.ravel().tolist()))
    m = np.rint(phases * denom)
    dyadic = denom & (denom - 1) == 0
    if denom > 1 << 20 or np.any(m.sum(axis=1) != denom) or not (dyadic or denom % 2):
        return None
    true = (m / denom)[np.arange(out_len) % plan.period]  # float64; off m/D by <= 2**-53 relative
    sum_m, limit = float(np.abs(m).sum(axis=1).max()), 1 / (4 * denom)

    def error(weights: np.ndarray, unit: float) -> float:  # 2**-52: |true - m/D|, doubled
        sum_w = float(np.abs(weights.astype(np.float64)).sum(axis=1).max())
        off = float(np.abs(weights[:, :span] - true).sum(axis=1).max())
        gamma = padded(span) * unit / (1 - padded(span) * unit)
        return vmax * (off + gamma * sum_w + sum_m / denom * 2.0**-52)

    for dtype, unit, bits in ((np.float32, 2.0**-24, 24), (np.float64, 2.0**-53, 53)):
        weights = np.zeros((out_len, padded(span)), dtype=dtype)  # zero taps add exact zeros
        weights[:, :span] = true
        ok = (4 * (vmax * sum_m + denom) < 2**bits and bool(np.all(plan.window == true)) if dyadic
              else max(error(weights, unit), error(plan.window, 2.0**-53)) < limit)
        if ok:
            weights.flags.writeable = False
            return weights, (limit if dyadic else 0.0)
    return None
