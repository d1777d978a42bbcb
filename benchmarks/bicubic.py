"""Benchmark: srpipe's vectorised MATLAB bicubic vs a plain per-row loop of the same kernel.

Run from the repository root::

    python benchmarks/bicubic.py [--size 1020] [--repeats 15]

Both implementations shrink the same synthetic RGB uint8 image by 2, 3 and 4; the script asserts
that their outputs are identical, then prints the median time of each, their ratio (target >= 20x),
and the HR megapixels per second srpipe sustains for x2+x3+x4 of one image. Every function is called
once before timing. srpipe's column is its compiled kernel, made ready first (numba's start-up, timed
and printed on its own); "BLAS route" is what srpipe runs before that, which is bit-identical too.

The baseline has the loop structure of BasicSR's ``imresize`` port: a Python loop over output rows
(then output columns) taking one dot product per row (and channel) with the input rows it touches.
Unlike BasicSR, which computes all weights up front, each iteration computes its own row's cubic
weights, as a plain per-row loop does; that is 6-9 % of the loops' time (a scratch variant with
the weights computed before the loop). It shares no code with ``srpipe.imaging.resize``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from srpipe.imaging import windowed
from srpipe.imaging.resize import imresize


def _cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return ((1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1)
            + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2)))


def _row_weights(i: int, scale: float) -> tuple[int, np.ndarray]:
    """MATLAB weights of output pixel ``i`` (0-based): first 0-based source position, weights."""
    width = 4 / scale if scale < 1 else 4.0
    u = (i + 1) / scale + 0.5 * (1 - 1 / scale)
    left = math.floor(u - width / 2)
    dist = u - np.arange(left, left + math.ceil(width) + 2, dtype=np.float64)
    w = scale * _cubic(scale * dist) if scale < 1 else _cubic(dist)
    return left - 1, w / sum(w.tolist())


def _pad(img: np.ndarray, axis: int, amount: int, mirror: bool) -> np.ndarray:
    widths = [(0, 0)] * img.ndim
    widths[axis] = (amount, amount)
    return np.pad(img.astype(np.float64), widths, mode="symmetric" if mirror else "edge")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def loop_basicsr(img: np.ndarray, scale: float, mirror: bool = True) -> np.ndarray:
    """BasicSR's structure: per output row and channel one matrix-vector product, then per output
    column and channel; plus MATLAB's uint8 rounding after each pass. ``img`` is H×W×C uint8."""
    (h, w, c), pad = img.shape, math.ceil(4 / scale) + 4
    out_h, out_w = math.ceil(h * scale - 1e-9), math.ceil(w * scale - 1e-9)
    aug = _pad(img, 0, pad, mirror)
    rows = np.empty((out_h, w, c))
    for i in range(out_h):
        first, wts = _row_weights(i, scale)
        for j in range(c):
            rows[i, :, j] = aug[pad + first : pad + first + len(wts), :, j].T @ wts
    aug = _pad(_to_uint8(rows), 1, pad, mirror)
    out = np.empty((out_h, out_w, c))
    for i in range(out_w):
        first, wts = _row_weights(i, scale)
        for j in range(c):
            out[:, i, j] = aug[:, pad + first : pad + first + len(wts), j] @ wts
    return _to_uint8(out)


def loop_rows(img: np.ndarray, scale: float, mirror: bool = True) -> np.ndarray:
    """A tighter per-row loop: one dot product per output row covering all columns and channels
    (the column pass runs on the transposed image)."""
    pad = math.ceil(4 / scale) + 4
    for _ in range(2):
        n = img.shape[0]
        aug = _pad(img, 0, pad, mirror)
        out = np.empty((math.ceil(n * scale - 1e-9), *img.shape[1:]))
        for i in range(out.shape[0]):
            first, wts = _row_weights(i, scale)
            out[i] = np.tensordot(wts, aug[pad + first : pad + first + len(wts)], axes=1)
        img = _to_uint8(out).swapaxes(0, 1)
    return np.ascontiguousarray(img)


def before_kernel(img: np.ndarray, scale: float) -> np.ndarray:
    """srpipe's ``imresize`` as a process runs it before the compiled kernel is ready (BLAS)."""
    real = windowed.ready
    windowed.ready = lambda: False  # type: ignore[assignment]
    try:
        return imresize(img, scale)
    finally:
        windowed.ready = real  # type: ignore[assignment]


def interleaved_medians(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time of each function, timed round-robin so load changes hit all of them alike."""
    for fn in fns:
        fn()  # warm-up (weight caches, allocator)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1020, help="HR side (divisible by 2, 3, 4)")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : args.size, 0 : args.size].astype(np.float64)
    smooth = np.stack([np.sin(xx / (7 + 3 * c) + yy / (11 + c)) for c in range(3)], axis=-1)
    img = np.clip(127.5 + 100 * smooth + rng.normal(0, 20, smooth.shape), 0, 255).round().astype(np.uint8)
    print(f"image {args.size}x{args.size} RGB uint8, median of {args.repeats} runs, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other jobs slow all columns)")
    start = time.perf_counter()
    windowed.warm()
    print(f"compiled kernel ready in {time.perf_counter() - start:.2f} s (numba's start-up, once per "
          "process; srpipe does it in the background once a process has enough to resize)")
    print(f"{'scale':>5} {'srpipe ms':>10} {'BasicSR-loop ms':>16} {'ratio':>7} "
          f"{'row-loop ms':>12} {'ratio':>7} {'BLAS route ms':>14}  identical")
    total = 0.0
    for s in (2, 3, 4):
        fast = imresize(img, 1 / s)
        same = all(np.array_equal(fast, other) for other in (
            loop_basicsr(img, 1 / s), loop_rows(img, 1 / s), before_kernel(img, 1 / s)))
        assert same, f"x{s}: srpipe and a loop baseline differ"
        t_fast, t_bsr, t_row, t_blas = interleaved_medians(
            [lambda s=s: imresize(img, 1 / s), lambda s=s: loop_basicsr(img, 1 / s),
             lambda s=s: loop_rows(img, 1 / s), lambda s=s: before_kernel(img, 1 / s)], args.repeats)
        total += t_fast
        print(f"   x{s} {t_fast * 1e3:10.1f} {t_bsr * 1e3:16.1f} {t_bsr / t_fast:6.1f}x "
              f"{t_row * 1e3:12.1f} {t_row / t_fast:6.1f}x {t_blas * 1e3:14.1f}  {same}")
    mp = img.shape[0] * img.shape[1] / 1e6
    print(f"x2+x3+x4 of one image: {total * 1e3:.1f} ms -> {mp / total:.1f} HR MP/s (resize only)")


if __name__ == "__main__":
    main()
