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
each output row is a weighted sum of a window of input rows. For uint8/uint16,
:func:`srpipe.imaging.kernel.exact_weights` *proves* that any summation order in float gives
MATLAB's rounding (odd factors, powers of two to 16, and their inverses; float32 where it can);
those passes run in a compiled kernel (:mod:`srpipe.imaging.windowed`) that reads the integers and
rounds once. Getting it ready costs numba about half a second per process, so that is done in a
background thread, and only once a process has resized enough to pay for it; until then the same
proved weights go through BLAS: one batched call per cache-sized block of windows, read in place
except at the boundary. Either way the result is the same, bit for bit. Floats and x6, x10, ...
keep MATLAB's float64 weights (BLAS). Other scales sum in tap order (rounding of ``u`` makes
near-ties there that the order would decide). The weights and that proof live in
:mod:`srpipe.imaging.kernel`.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numpy.lib.stride_tricks import as_strided

from srpipe.imaging import windowed
from srpipe.imaging.kernel import (
    BOUNDARIES,
    AxisPlan,
    Boundary,
    axis_plan,
    contributions,
    cubic,
    exact_weights,
    output_length,
)

__all__ = ["BOUNDARIES", "Boundary", "contributions", "cubic", "imresize", "modcrop", "output_length"]

_INT_TYPES = (np.uint8, np.uint16)
_TOP = {np.dtype(t): float(np.iinfo(t).max) for t in _INT_TYPES}
_BLOCK_BYTES = 2 << 20  # per-block buffers; 2 MiB measured fastest of 0.5-4 MiB
_CV_DEPTH = {np.dtype(np.uint8): 0, np.dtype(np.uint16): 2}  # cv2.CV_8U, cv2.CV_16U
_JUST_BELOW_HALF = float(np.nextafter(0.5, 0.0))
_SCRATCH = threading.local()


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
    2**52) (``+ 0.5`` would round 0.5 - 2**-54 up). With an ``offset`` from :func:`exact_weights`:
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
        return out
    exact = None if top is None else exact_weights(src.shape[0], out.shape[0], scale, boundary, int(top))
    if exact is None:
        _window_pass(src, plan, plan.window, out, None)
    elif windowed.ready():
        windowed.window_rows(src, plan.pad_index, plan.start, exact[0], exact[1], out)
    else:  # the same bits through BLAS; enough of them and the kernel gets ready in the background
        _window_pass(src, plan, exact[0], out, exact[1])
        windowed.note_blas_pass(src.size)
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
