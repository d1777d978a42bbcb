"""The compiled kernel of :func:`srpipe.imaging.resize.imresize` for uint8/uint16 images at integer
factors: each output row is a weighted sum of a window of input rows, rounded once.

Contract of :func:`window_rows`: ``out[i] = saturate(round(sum_k weights[i, k] * src[pad_index[
start[i] + k]] + offset))`` for 2-D ``src`` and ``out`` of one integer dtype, ``weights`` float32
or float64 with a multiple of 4 columns, rounding to nearest. The sums run in float in an order of
the compiler's choosing (blocks of eight taps, maybe fused multiply-adds), which is only correct
for the ``(weights, offset)`` that :func:`srpipe.imaging.kernel.exact_weights` returns: its proof
covers any summation order and either tie rule. Callers must not pass other weights.

Getting ready costs numba about 0.6 s of CPU per process (3 s when it must compile its four
variants rather than load them from its disk cache), while the kernel saves 0.25-0.55 ms per
million input values over the BLAS route (measured). So nobody waits for it and short jobs never
pay for it: callers use their BLAS route (same weights, same bits) until :func:`ready`, and report
its work to :func:`note_blas_pass`, which starts :func:`warm` in a daemon thread once that work
passes :data:`WARM_AFTER_VALUES` (as in renting skis until the rent reaches the price).
:func:`warm` itself gets the kernel ready in the caller's thread (benchmarks, or a program that
knows it has much to do).

Why compiled (numba, cached on disk): BLAS needs the rows as floats first, and its matrix-vector
products reread each window from the cache. Reading the integers directly, eight taps per
accumulator update, with fused multiply-adds, made the x4 row pass of a 1020×1020 RGB image take
0.78 ms against 1.44 ms (``docs/downscale.md`` has the measurements).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from functools import cache

import numpy as np

log = logging.getLogger(__name__)
WARM_AFTER_VALUES = 1_000_000_000
"""Input values through the BLAS route (about 0.3-0.5 s of extra time there) after which a process
starts getting the kernel ready: half of the break-even point, since warming overlaps other work."""
_READY = threading.Event()
_STARTED = threading.Lock()  # held from the first warm_in_background() on: at most one thread
_blas_values = 0  # approximate under threads: only decides when to start warming


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
    """The JIT dispatcher; each variant compiles on first use (under a second), then loads from the
    disk cache beside this module or in the user's cache folder (NUMBA_CACHE_DIR picks another).
    ``NUMBA_DISABLE_JIT=1`` raises here, which keeps a process on the BLAS route: the way to opt
    out of the kernel."""
    import numba

    if getattr(numba.config, "DISABLE_JIT", False):  # njit would return the Python loops: slow
        raise RuntimeError("NUMBA_DISABLE_JIT is set, so the kernel would run as plain Python")
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
    acc = np.empty(src.shape[1], dtype=weights.dtype)
    _compiled()(_read_only(src), _read_only(pad_index, np.intp), _read_only(start, np.intp),
                _read_only(weights), kind(offset), kind(top), out, acc)


def _read_only(values: np.ndarray, dtype: type | None = None) -> np.ndarray:
    """A C-contiguous read-only view (a copy only where needed): numba compiles one variant per
    layout and writability, and :func:`warm` must have compiled the one every call uses."""
    view = np.ascontiguousarray(values, dtype=dtype).view()
    view.flags.writeable = False
    return view


def ready() -> bool:
    """True once the kernel is compiled in this process, so that :func:`window_rows` will not wait."""
    return _READY.is_set()


def warm() -> None:
    """Get the kernel ready now, in this thread, for every pair of image and weight dtypes, so that
    no later call compiles. Raises whatever numba raises."""
    for image in (np.uint8, np.uint16):
        for weight in (np.float32, np.float64):
            window_rows(np.zeros((4, 1), dtype=image), np.arange(4), np.zeros(1, dtype=np.intp),
                        np.full((1, 4), 0.25, dtype=weight), 0.0, np.zeros((1, 1), dtype=image))
    _READY.set()


def warm_in_background() -> None:
    """Start :func:`warm` in a daemon thread, once per process; returns at once. If it fails, the
    reason is logged and :func:`ready` stays false (callers keep their BLAS route)."""
    if _READY.is_set() or not _STARTED.acquire(blocking=False):
        return
    threading.Thread(target=_warm_or_log, name="srpipe-resize-kernel", daemon=True).start()


def note_blas_pass(values: int) -> None:
    """Count ``values`` input values resized without the kernel; past :data:`WARM_AFTER_VALUES`
    in this process, :func:`warm_in_background`."""
    global _blas_values
    _blas_values += values
    if _blas_values >= WARM_AFTER_VALUES:
        warm_in_background()


def _warm_or_log() -> None:
    try:
        warm()
    except Exception as exc:  # the image work goes on through BLAS; say why it stays there
        log.warning("the compiled resize kernel is unavailable (%s); resizing goes on without it", exc)


def _after_fork_in_child() -> None:
    # A forked child has no warming thread, whatever the parent had: let it start its own. (Forked
    # while the parent's thread was compiling, the child's may block on numba's copied lock; the
    # child then stays on the BLAS route, which is slower but gives the same bits.)
    global _STARTED, _blas_values
    _STARTED, _blas_values = threading.Lock(), 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
