"""The compiled kernel of :func:`srpipe.imaging.resize.imresize` for uint8/uint16 images at integer
factors: each output row is a weighted sum of a window of input rows, rounded once.

Contract of :func:`window_rows`: ``out[i] = saturate(round(sum_k weights[i, k] * src[pad_index[
start[i] + k]] + offset))`` for 2-D ``src`` and ``out`` of one integer dtype, ``weights`` float32
or float64 with a multiple of 4 columns, rounding to nearest. The sums run in float in an order of
the compiler's choosing (blocks of eight taps, maybe fused multiply-adds), which is only correct
for the ``(weights, offset)`` that :func:`srpipe.imaging.kernel.exact_weights` returns: its proof
covers any summation order and either tie rule. Callers must not pass other weights.

Why compiled (numba, JIT on first use, cached on disk): BLAS needs the rows as floats first, and
its matrix-vector products reread each window from the cache. Reading the integers directly, with
up to eight taps per accumulator update, made the x4 row pass of a 1020×1020 RGB image 0.89 ms
against 1.44 ms (``docs/downscale.md`` has the measurements).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache

import numpy as np

log = logging.getLogger(__name__)


def _window_rows(src: np.ndarray, pad_index: np.ndarray, start: np.ndarray, weights: np.ndarray,
                 offset: float, top: float, out: np.ndarray, acc: np.ndarray) -> None:
    """Numba source of :func:`window_rows`; ``acc`` is a float row of ``weights``' dtype. Eight
    taps per update of ``acc`` (four for the last block of a span of 4, 12, ...) keep the loops
    over columns vectorised and the accumulator traffic low."""
    n_out, span = weights.shape
    cols = src.shape[1]
    zero = weights.dtype.type(0)
    for i in range(n_out):
        w, first = weights[i], start[i]
        for c in range(cols):
            acc[c] = zero
        for k in range(0, span, 8):
            a0, a1 = src[pad_index[first + k]], src[pad_index[first + k + 1]]
            a2, a3 = src[pad_index[first + k + 2]], src[pad_index[first + k + 3]]
            w0, w1, w2, w3 = w[k], w[k + 1], w[k + 2], w[k + 3]
            if k + 4 < span:
                a4, a5 = src[pad_index[first + k + 4]], src[pad_index[first + k + 5]]
                a6, a7 = src[pad_index[first + k + 6]], src[pad_index[first + k + 7]]
                w4, w5, w6, w7 = w[k + 4], w[k + 5], w[k + 6], w[k + 7]
                for c in range(cols):
                    acc[c] += (((w0 * a0[c] + w1 * a1[c]) + (w2 * a2[c] + w3 * a3[c]))
                               + ((w4 * a4[c] + w5 * a5[c]) + (w6 * a6[c] + w7 * a7[c])))
            else:
                for c in range(cols):
                    acc[c] += (w0 * a0[c] + w1 * a1[c]) + (w2 * a2[c] + w3 * a3[c])
        row = out[i]
        for c in range(cols):
            row[c] = min(max(np.rint(acc[c] + offset), zero), top)


@cache
def _compiled() -> Callable[..., None]:
    """The JIT-compiled kernel (about a second per dtype pair on first use, then cached on disk
    beside this module or in the user's cache folder; NUMBA_CACHE_DIR chooses another)."""
    import numba

    try:
        return numba.njit(cache=True, nogil=True, fastmath={"contract"})(_window_rows)  # type: ignore[no-any-return]
    except RuntimeError as exc:  # no writable cache location: compile on every run instead
        log.info("numba cannot cache the resize kernel (%s); it compiles once per process", exc)
        return numba.njit(nogil=True, fastmath={"contract"})(_window_rows)  # type: ignore[no-any-return]


def window_rows(src: np.ndarray, pad_index: np.ndarray, start: np.ndarray, weights: np.ndarray,
                offset: float, out: np.ndarray) -> None:
    """Fill ``out`` (C-contiguous, ``src``'s integer dtype) as the module docstring states."""
    if src.dtype != out.dtype or src.dtype not in (np.uint8, np.uint16) or weights.shape[1] % 4:
        raise ValueError(f"window_rows needs uint8/uint16 rows of one dtype and a span of 4k taps, got "
                         f"{src.dtype} -> {out.dtype}, span {weights.shape[1]}")
    if not out.flags.c_contiguous:
        raise ValueError("window_rows writes into C-contiguous rows only")
    top = float(np.iinfo(src.dtype).max)
    kind = weights.dtype.type
    _compiled()(np.ascontiguousarray(src), pad_index, start, weights, kind(offset), kind(top), out,
                np.empty(src.shape[1], dtype=weights.dtype))


def warm() -> None:
    """Compile (or load from the disk cache) the uint8 kernel now: numba's first call in a process
    costs about half a second, mostly importing its own registries. Process pools call this once in
    the process their workers are forked from (:mod:`srpipe.imaging._warm`)."""
    plan_start = np.zeros(1, dtype=np.intp)
    window_rows(np.zeros((4, 1), dtype=np.uint8), np.arange(4), plan_start,
                np.full((1, 4), 0.25, dtype=np.float32), 0.0, np.zeros((1, 1), dtype=np.uint8))

