"""MATLAB-exact bicubic resizing (``imresize(img, scale, 'bicubic')``) and ``modcrop``.

Contract of :func:`imresize`, matching MATLAB's ``imresize`` bit for bit on uint8 images:
- Keys cubic, a = -0.5; when shrinking, antialiased (``scale * cubic(scale * x)``, width
  ``4 / scale``) and each output pixel's weights normalised to sum 1 (summed in tap order).
- Output length ``ceil(in * scale)``; output pixel ``x`` (1-based) samples input ``u = x / scale +
  0.5 * (1 - 1 / scale)``, taps ``floor(u - width / 2) + 0 .. P-1``, ``P = ceil(width) + 2``.
- Boundary: ``"mirror"`` folds indices over ``[1..n, n..1]`` (MATLAB; the EDSR Set5 files),
  ``"replicate"`` clamps them to ``[1, n]`` (the SelfExSR Set14 files). Rows (axis 0) first.
- Each value is ``sum_k w_k * in[i_k]`` in float64; uint8/uint16 results are rounded half away from
  zero and saturated after *each* pass (MATLAB's ``imresizemex`` returns the input class); float
  inputs keep their dtype and are never rounded.

Speed without losing exactness: both passes run along axis 0 of a 2-D array. For integer factors
each output row is a strided window of input rows: one batched BLAS call per cache-sized block,
read in place except at the boundary. BLAS sums in its own order; for uint8/uint16
``_exact_weights`` *proves* that harmless (odd factors, powers of two to 16, and their inverses;
float32 where it can). Floats and x6, x10, ... keep MATLAB's float64 weights. Other scales sum in
tap order (rounding of ``u`` makes near-ties there that the order would decide).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import as_strided

Boundary = Literal["mirror", "replicate"]
BOUNDARIES: tuple[str, ...] = ("mirror", "replicate")
_INT_TYPES = (np.uint8, np.uint16)
_TOP = {np.dtype(t): float(np.iinfo(t).max) for t in _INT_TYPES}
_BLOCK_BYTES = 2 << 20  # per-block buffers; 2 MiB measured fastest of 0.5-4 MiB
_CV_DEPTH = {np.dtype(np.uint8): 0, np.dtype(np.uint16): 2}  # cv2.CV_8U, cv2.CV_16U
_JUST_BELOW_HALF = float(np.nextafter(0.5, 0.0))
_SCRATCH = threading.local()


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


def _padded(span: int) -> int:
    """``span`` rounded up to a multiple of 4: OpenBLAS's sgemv takes 4 columns at a time, and 11
    taps (x3) took 8 % longer than 12 (measured; ``_exact_weights`` pads with zero weights)."""
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
    if period and (extra := start[-1] + _padded(span) - len(pad_index)) > 0:  # for _exact_weights
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
def _exact_weights(in_len: int, out_len: int, scale: float, boundary: Boundary,
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
        gamma = _padded(span) * unit / (1 - _padded(span) * unit)
        return vmax * (off + gamma * sum_w + sum_m / denom * 2.0**-52)

    for dtype, unit, bits in ((np.float32, 2.0**-24, 24), (np.float64, 2.0**-53, 53)):
        weights = np.zeros((out_len, _padded(span)), dtype=dtype)  # zero taps add exact zeros
        weights[:, :span] = true
        ok = (4 * (vmax * sum_m + denom) < 2**bits and bool(np.all(plan.window == true)) if dyadic
              else max(error(weights, unit), error(plan.window, 2.0**-53)) < limit)
        if ok:
            weights.flags.writeable = False
            return weights, (limit if dyadic else 0.0)
    return None


def _scratch(role: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A per-thread array for ``role``, kept for the next call (if at most 16 MiB): after other code
    frees big arrays, fresh pages cost as much as a pass (x2 in the benchmark: 7.8 ms, reused 3.9)."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes > 16 << 20:
        return np.zeros(shape, dtype=dtype)  # calloc: as cheap, and _load needs zeros
    if getattr(_SCRATCH, role, np.empty(0)).nbytes < nbytes:  # zeros: _load needs them
        setattr(_SCRATCH, role, np.zeros(-(-nbytes // 8), dtype=np.float64))
    return getattr(_SCRATCH, role).view(np.uint8)[:nbytes].view(dtype).reshape(shape)


def _load(buffer: np.ndarray, rows: np.ndarray) -> None:
    """``buffer[:] = rows`` converted to the buffer's float dtype. Integer rows go through
    ``cv2.accumulateWeighted`` with alpha 1: 20 % faster than numpy's cast (uint8 to float32,
    measured). OpenCV computes ``buffer + (rows - buffer) * 1``, which is ``rows`` exactly only
    while ``buffer`` holds integers below 2**24 (a float there once gave wrong pixels): so integer
    rows only ever go to their own scratch, which starts zeroed and receives nothing else."""
    if rows.dtype in _CV_DEPTH and buffer.dtype in (np.float32, np.float64) and buffer.flags.c_contiguous:
        import cv2

        cv2.accumulateWeighted(rows, buffer, 1.0)
    else:
        np.copyto(buffer, rows)


def _store(out: np.ndarray, rows: slice, sums: np.ndarray, offset: float | None) -> None:
    """``out[rows] = sums`` (``sums`` may be overwritten). Integer ``out``, ``offset`` None (MATLAB's
    tap-order sums): round half away from zero, saturate; clip first (negatives give 0 anyway), then
    the truncating cast of ``x + (0.5 - 2**-54)``, which is ``floor(x + 0.5)`` for doubles in [0,
    2**52) (``+ 0.5`` would round 0.5 - 2**-54 up). With an ``offset`` from :func:`_exact_weights`:
    OpenCV's saturating round-to-nearest of ``sums + offset``, one pass instead of three."""
    if offset is not None:
        import cv2

        view = out[rows]
        if out.dtype == np.uint8 and sums.dtype == np.float32:
            # 30 % faster than cv2.add: zero the negatives (those round to 0 anyway), then
            # convertScaleAbs rounds |sums + offset| to nearest and saturates at 255.
            cv2.threshold(sums, 0.0, 0.0, cv2.THRESH_TOZERO, dst=sums)
            stored = cv2.convertScaleAbs(sums, dst=view, alpha=1.0, beta=offset)
        else:
            stored = cv2.add(sums, offset, dst=view, dtype=_CV_DEPTH[out.dtype])  # type: ignore[call-overload]
        if stored is not view:  # never seen
            raise RuntimeError("cv2 did not write into the output rows")
        return
    if (top := _TOP.get(out.dtype)) is not None:
        np.clip(sums, 0.0, top, out=sums)
        sums += _JUST_BELOW_HALF
    out[rows] = sums


def _window_pass(src: np.ndarray, plan: AxisPlan, weights: np.ndarray, out: np.ndarray,
                 offset: float | None) -> None:
    """Integer factors, along axis 0 of 2-D ``src``: row ``i`` is ``weights[i] @ window(i)``. Blocks
    of one phase's rows convert their padded rows into a buffer (a slice of ``src``; a gather via
    ``pad_index`` only at the boundary) whose strided views are the windows: one BLAS call."""
    cols, span, period, stride = src.shape[1], weights.shape[1], plan.period, plan.stride
    per_block = max(1, _BLOCK_BYTES // (max(stride, 1) * cols * weights.itemsize))
    most = len(range(0, out.shape[0], period))  # rows of phase 0, the largest phase
    per_block = -(-most // -(-most // per_block))  # equal blocks: not 6 x 42 rows and one of 3
    rows_in = (per_block - 1) * stride + span
    # Per source kind and dtype: _load needs integers in the buffer of integer sources.
    kind = "int" if src.dtype in _CV_DEPTH else "float"
    buffer = _scratch(f"{kind}-{weights.dtype.name}-buffer", (rows_in, cols), weights.dtype)
    sums = _scratch("sums", (per_block, 1, cols), weights.dtype)
    row_bytes, item = buffer.strides
    windows = as_strided(buffer, shape=(per_block, span, cols), writeable=False,
                         strides=(stride * row_bytes, row_bytes, item))
    for phase in range(period):
        count = len(range(phase, out.shape[0], period))
        for first in range(0, count, per_block):
            n = min(per_block, count - first)
            rows = slice(phase + first * period, phase + (first + n - 1) * period + 1, period)
            index = plan.pad_index[plan.start[rows.start] : plan.start[rows.start] + (n - 1) * stride + span]
            inside = index[-1] - index[0] == len(index) - 1  # steps are 0 or ±1: then no folding
            if inside:
                _load(buffer[: len(index)], src[index[0] : index[-1] + 1])
            else:  # into a kept array: a fresh 0.5 MB one per call cost page faults (x3, 0.1 ms)
                gathered = _scratch("gather", (len(index), cols), src.dtype)
                _load(buffer[: len(index)], np.take(src, index, axis=0, out=gathered, mode="clip"))
            _store(out, rows, np.matmul(weights[rows, None, :], windows[:n], out=sums[:n])[:, 0], offset)


def _tap_pass(src: np.ndarray, plan: AxisPlan, out: np.ndarray) -> None:
    """Other scales, along axis 0 of 2-D ``src``: MATLAB's tap order, a gather-multiply-add per tap."""
    padded = np.take(src, plan.pad_index, axis=0)
    block = max(1, _BLOCK_BYTES // (src.shape[1] * 8))
    for first in range(0, out.shape[0], block):
        rows = slice(first, min(first + block, out.shape[0]))
        acc = plan.weights[rows, 0:1] * np.take(padded, plan.taps[rows, 0], axis=0)  # float64
        for k in range(1, plan.taps.shape[1]):
            acc += plan.weights[rows, k : k + 1] * np.take(padded, plan.taps[rows, k], axis=0)
        _store(out, rows, acc, None)


def _pass(src: np.ndarray, out: np.ndarray, scale: float, boundary: Boundary) -> np.ndarray:
    """One MATLAB pass along axis 0 of 2-D ``src`` into ``out`` (same dtype); returns ``out``."""
    plan, top = axis_plan(src.shape[0], out.shape[0], scale, boundary), _TOP.get(src.dtype)
    if not plan.period:
        _tap_pass(src, plan, out)
    else:
        exact = None if top is None else _exact_weights(src.shape[0], out.shape[0], scale, boundary, int(top))
        weights, offset = (plan.window, None) if exact is None else exact
        _window_pass(src, plan, weights, out, offset)
    return out


def imresize(img: np.ndarray, scale: float, *, boundary: Boundary = "mirror") -> np.ndarray:
    """Resize ``img`` by ``scale`` exactly like MATLAB ``imresize(img, scale, 'bicubic')``.

    ``img`` is ``H×W`` or ``H×W×C`` (any C), uint8, uint16, float32 or float64; ``scale`` > 0 (``1/4``
    shrinks, ``4`` enlarges). Returns ``ceil(H*scale) × ceil(W*scale)[×C]`` in the input's dtype:
    integers rounded and saturated after each pass, as MATLAB does; floats computed in float64 and
    never rounded (module docstring: the algorithm). ``ValueError`` on a bad shape, dtype, scale or
    boundary."""
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize expects an H×W or H×W×C array, got shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"imresize got an empty image of shape {img.shape}")
    number = isinstance(scale, (int, float, np.integer, np.floating)) and not isinstance(scale, bool)
    if not (number and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    scale = float(scale)
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    if img.dtype not in (*_INT_TYPES, np.float32, np.float64):
        raise ValueError(f"imresize supports uint8, uint16, float32 and float64, got {img.dtype}")
    out_h, out_w = output_length(img.shape[0], scale), output_length(img.shape[1], scale)
    # Rows (axis 0) first; the (H', W*C) row result transposed is (W, C*H'), the column result
    # (W', C*H') transposed is (H', W'*C). cv2's 2-D transpose is ~3x faster than numpy's copy.
    import cv2
    h, w, c = img.shape[0], img.shape[1], (img.shape[2] if img.ndim == 3 else 1)
    rows = _pass(img.reshape(h, w * c), _scratch("rows", (out_h, w * c), img.dtype), scale, boundary)
    turned = cv2.transpose(rows, dst=_scratch("turned", (w * c, out_h), img.dtype)).reshape(w, c * out_h)
    cols = _pass(turned, _scratch("cols", (out_w, c * out_h), img.dtype), scale, boundary)
    out = cv2.transpose(cols.reshape(out_w * c, out_h))  # a new array: scratch never escapes
    return out.reshape((out_h, out_w, c) if img.ndim == 3 else (out_h, out_w))


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop bottom and right so that height and width are multiples of ``scale`` (a view).
    ``ValueError`` when ``scale`` < 1 or the image is smaller than ``scale`` on a side."""
    if scale < 1:
        raise ValueError(f"modcrop scale must be >= 1, got {scale}")
    h, w = img.shape[:2]
    if h < scale or w < scale:
        raise ValueError(f"image of {w}x{h} pixels is smaller than the scale {scale}")
    return img[: h - h % scale, : w - w % scale]
