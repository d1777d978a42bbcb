"""MATLAB-exact bicubic resizing (``imresize(img, scale, 'bicubic')``) and ``modcrop``.

Contract of :func:`imresize`, matching MATLAB's ``imresize`` bit for bit on uint8 images:

- Keys cubic kernel with a = -0.5, support [-2, 2].
- When shrinking (scale < 1) the kernel is antialiased: ``h(x) = scale * cubic(scale * x)`` with
  width ``4 / scale``; the weights of each output pixel are then normalised to sum to 1 (summed in
  tap order).
- Output length ``ceil(in * scale)``; output pixel ``x`` (1-based) samples the input at
  ``u = x / scale + 0.5 * (1 - 1 / scale)`` (1-based), taps ``floor(u - width / 2) + 0 .. P-1``
  with ``P = ceil(width) + 2``.
- Boundary: ``"mirror"`` folds indices over ``[1..n, n..1]`` (MATLAB's symmetric padding; the EDSR
  ``benchmark`` Set5 files), ``"replicate"`` clamps them to ``[1, n]`` (the SelfExSR Set14 files).
- Dimension order: the dimension with the smaller scale first; with one scale for both, rows
  (height, axis 0) first, then columns.
- Every output value is ``sum_k w_k * in[i_k]`` in float64. uint8/uint16 results are rounded half
  away from zero and saturated to the input type after *each* pass (MATLAB's ``imresizemex``
  returns the input class); float inputs keep their dtype and are never rounded.

Speed without losing exactness: weights and indices are computed once per ``(in_len, out_len,
scale, boundary)`` and cached, and the boundary is applied once by padding. For integer factors
(``s`` and ``1/s``) every output row is a strided window of the padded rows, so a pass is one batched
BLAS ``matmul`` per phase. BLAS sums in its own order; that cannot change a result for x2 and x4
(the weights are short dyadic fractions, every product and sum is exact) and changed none of
millions of x3 values compared against a tap-order sum (tests/test_resize.py, docs/downscale.md).
Other scales are summed in MATLAB's tap order (one gather-multiply-add per tap over whole blocks of
rows), because there rounding of ``u`` turns mathematically symmetric samples into near-ties that
the summation order would decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import as_strided

Boundary = Literal["mirror", "replicate"]
BOUNDARIES: tuple[str, ...] = ("mirror", "replicate")
_INT_TYPES = (np.uint8, np.uint16)
_BLOCK_BYTES = 1 << 20
_JUST_BELOW_HALF = float(np.nextafter(0.5, 0.0))


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5, written as MATLAB's ``cubic``.

    Powers are taken with ``**`` (``pow``), as ``absx.^3`` reads, not as ``absx2 * absx``: the two
    differ in the last bit of some weights. For integer factors this changes no output pixel (x2/x4
    weights are exact either way; all x3 benchmark files match both); for other scales it decides
    near-ties, and ``pow`` is our best reading of MATLAB, unverified without MATLAB itself."""
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    inner = (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2))
    return inner + outer


def output_length(in_len: int, scale: float) -> int:
    """``ceil(in_len * scale)``, ignoring float noise (``255 * (1/3)`` is 85, not 86)."""
    exact = in_len * scale
    nearest = round(exact)
    if abs(exact - nearest) < 1e-9 * max(1.0, abs(exact)):
        return int(nearest)
    return math.ceil(exact)


def _fold(positions: np.ndarray, n: int, boundary: Boundary) -> np.ndarray:
    """Map 0-based positions (possibly outside ``[0, n)``) to source indices."""
    if boundary == "mirror":
        folded = np.mod(positions, 2 * n)
        return np.where(folded < n, folded, 2 * n - 1 - folded)
    return np.clip(positions, 0, n - 1)


@dataclass(frozen=True)
class AxisPlan:
    """How one axis is resized: MATLAB's ``contributions()`` plus what a vectorised pass needs.

    ``weights[i, k]`` multiplies source row ``indices[i, k]`` (0-based, boundary applied); both are
    MATLAB's arrays. A pass first gathers the padded rows ``src[pad_index]`` (every position the
    taps touch, so the boundary is applied once); ``taps[i, k]`` is tap ``k``'s row there. For integer
    factors ``window[i]`` holds the weights densely over padded rows ``start[i] ..
    start[i] + window.shape[1] - 1`` (exact zeros where MATLAB dropped all-zero taps) and the
    windows of rows ``p, p + period, ...`` start ``stride`` rows apart, so they are strided views;
    ``period`` is 0 for other scales.
    """

    weights: np.ndarray
    indices: np.ndarray
    pad_index: np.ndarray
    taps: np.ndarray
    start: np.ndarray
    window: np.ndarray
    period: int
    stride: int


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
    """MATLAB's ``contributions()`` for one axis, cached per ``(in_len, out_len, scale, boundary)``.

    Taps whose weight is zero for every output pixel are dropped, as MATLAB does. Weights are
    normalised per output pixel with a sum taken in tap order. Arrays are read-only.
    """
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    width = 4.0
    antialias = scale < 1
    if antialias:
        width = width / scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
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
    window = np.zeros((out_len, span if period else 0))
    if period:
        np.put_along_axis(window, taps - start[:, None], weights, axis=1)
    plan = AxisPlan(weights, pad_index[taps], pad_index, taps, start, window, period, stride)
    for arr in (plan.weights, plan.indices, plan.pad_index, plan.taps, plan.start, plan.window):
        arr.flags.writeable = False
    return plan


def contributions(
    in_len: int, out_len: int, scale: float, boundary: Boundary = "mirror"
) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's ``[weights, indices]`` for one axis: float64 and 0-based intp, both ``(out_len, P)``."""
    plan = axis_plan(in_len, out_len, scale, boundary)
    return plan.weights, plan.indices


def _round_saturate(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round half away from zero, saturate to ``dtype``'s range and cast (MATLAB's conversion).

    Overwrites ``values`` (float64). Negative values saturate to 0 whichever way they round, so
    clip first; then ``trunc(x + (0.5 - 2**-54))`` equals ``floor(x + 0.5)`` computed exactly for
    every double in [0, 2**52) (adding 0.5 itself would round 0.5 - 2**-54 up to 1).
    """
    np.clip(values, 0.0, float(np.iinfo(dtype).max), out=values)
    values += _JUST_BELOW_HALF
    return values.astype(dtype)


def _block_sums(plan: AxisPlan, padded: np.ndarray, rows: slice, n: int) -> np.ndarray:
    """float64 sums for output rows ``rows`` (``n`` of them) of one pass."""
    if plan.period:  # integer factor: every window is a strided view; one batched BLAS call
        span = plan.window.shape[1]
        first, last = int(plan.start[rows.start]), int(plan.start[rows.start + (n - 1) * rows.step])
        # Only the rows this block reads, as float64 (converted here, while they are in cache).
        local = padded[first : last + span].astype(np.float64, copy=False)
        row_bytes, item = local.strides
        windows = as_strided(local, shape=(n, span, local.shape[1]), writeable=False,
                             strides=(plan.stride * row_bytes, row_bytes, item))
        return np.matmul(plan.window[rows, None, :], windows)[:, 0]
    # Other scales: MATLAB's tap order, one gather-multiply-add per tap over the block.
    acc = np.take(padded, plan.taps[rows, 0], axis=0).astype(np.float64)
    acc *= plan.weights[rows, 0:1]
    for k in range(1, plan.taps.shape[1]):
        acc += plan.weights[rows, k : k + 1] * np.take(padded, plan.taps[rows, k], axis=0)
    return acc


def _resize_axis0(src: np.ndarray, out_len: int, scale: float, boundary: Boundary) -> np.ndarray:
    """One MATLAB pass along axis 0; returns ``(out_len, *src.shape[1:])`` in ``src``'s dtype.

    Output row ``i`` is ``sum_k weights[i, k] * src[indices[i, k]]`` in float64. Rows are made in
    blocks of about 1 MiB so the rounding runs in cache; integer results are rounded and saturated
    per block, float results cast back to the input's dtype.
    """
    plan = axis_plan(src.shape[0], out_len, scale, boundary)
    flat = src.reshape(src.shape[0], -1)
    padded = np.take(flat, plan.pad_index, axis=0)
    if plan.period > 1:  # enlarging: every phase reads every row, so convert them once
        padded = padded.astype(np.float64, copy=False)
    result = np.empty((out_len, flat.shape[1]), dtype=src.dtype)
    block = max(1, _BLOCK_BYTES // (flat.shape[1] * 8))
    period = plan.period or 1
    for phase in range(min(period, out_len)):
        count = len(range(phase, out_len, period))
        for first in range(0, count, block):
            n = min(block, count - first)
            rows = slice(phase + first * period, phase + (first + n - 1) * period + 1, period)
            sums = _block_sums(plan, padded, rows, n)
            result[rows] = _round_saturate(sums, src.dtype) if src.dtype in _INT_TYPES else sums
    return result.reshape((out_len, *src.shape[1:]))


def imresize(img: np.ndarray, scale: float, *, boundary: Boundary = "mirror") -> np.ndarray:
    """Resize ``img`` by ``scale`` exactly like MATLAB ``imresize(img, scale, 'bicubic')``.

    ``img`` is ``H×W`` or ``H×W×C`` (any C), dtype uint8, uint16, float32 or float64. ``scale`` > 0
    (e.g. ``1/4`` shrinks, ``4`` enlarges); the output is ``ceil(H*scale) × ceil(W*scale)[×C]`` with
    the input's dtype. Integer inputs are rounded and saturated after the row pass and again after
    the column pass, as MATLAB does; float inputs are computed in float64 and returned unrounded in
    their own dtype. See the module docstring for the full algorithm. Raises ``ValueError`` on a bad
    shape, dtype, scale or boundary.
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize expects an H×W or H×W×C array, got shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"imresize got an empty image of shape {img.shape}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    if img.dtype not in (*_INT_TYPES, np.float32, np.float64):
        raise ValueError(f"imresize supports uint8, uint16, float32 and float64, got {img.dtype}")
    out_h = output_length(img.shape[0], scale)
    out_w = output_length(img.shape[1], scale)
    # Both axes share one scale, so MATLAB's order is fixed: rows (axis 0) first, then columns.
    # The column pass runs on a (W, C, H') copy of the row result: any layout with W first works,
    # and moving the small channel axis out of the way makes both transposes cheap.
    planes = img if img.ndim == 3 else img[:, :, None]
    rows = _resize_axis0(planes, out_h, scale, boundary)
    cols = _resize_axis0(np.ascontiguousarray(rows.transpose(1, 2, 0)), out_w, scale, boundary)
    out = np.ascontiguousarray(cols.transpose(2, 0, 1))
    return out if img.ndim == 3 else out[:, :, 0]


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop bottom and right so that height and width are multiples of ``scale`` (a view).

    Raises ``ValueError`` when ``scale`` < 1 or the image is smaller than ``scale`` on a side.
    """
    if scale < 1:
        raise ValueError(f"modcrop scale must be >= 1, got {scale}")
    h, w = img.shape[:2]
    if h < scale or w < scale:
        raise ValueError(f"image of {w}x{h} pixels is smaller than the scale {scale}")
    return img[: h - h % scale, : w - w % scale]
