"""The compiled window kernel behind imresize's integer path: its guards, and its fallback when
numba has nowhere to cache (exactness itself is tested through imresize in test_resize.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import smooth_image
from test_resize import reference_imresize

from srpipe.imaging import windowed
from srpipe.imaging.kernel import axis_plan, exact_weights
from srpipe.imaging.resize import imresize


def _x2_case(dtype: type = np.uint8) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    plan = axis_plan(22, 11, 0.5, "mirror")
    exact = exact_weights(22, 11, 0.5, "mirror", int(np.iinfo(dtype).max))
    assert exact is not None
    src = np.arange(22 * 5, dtype=dtype).reshape(22, 5)
    return src, plan.pad_index, plan.start, exact[0], exact[1]


def test_kernel_matches_integer_arithmetic_on_a_hand_made_column() -> None:
    # x2 weights are (-3, -9, 29, 111, 111, 29, -9, -3) / 256: on a ramp 0, 1, 2, ... row i sums to
    # exactly 2i + 0.5 away from the edges, a tie that the 1/4D offset must round up to 2i + 1.
    _, pad_index, start, weights, offset = _x2_case()
    ramp = np.arange(22, dtype=np.uint8).reshape(22, 1)
    column = np.empty((11, 1), dtype=np.uint8)
    windowed.window_rows(ramp, pad_index, start, weights, offset, column)
    m, padded = np.array([-3, -9, 29, 111, 111, 29, -9, -3]), ramp[pad_index, 0].astype(np.int64)
    sums = np.array([(m * padded[start[i] : start[i] + 8]).sum() for i in range(11)])
    assert np.array_equal(column[:, 0], np.clip((2 * sums + 256) // 512, 0, 255))
    assert np.array_equal(column[2:9, 0], 2 * np.arange(2, 9) + 1)


def test_kernel_rejects_what_it_cannot_round() -> None:
    src, pad_index, start, weights, offset = _x2_case()
    out = np.empty((11, 5), dtype=np.uint8)
    with pytest.raises(ValueError, match="uint8/uint16 rows of one dtype"):
        windowed.window_rows(src.astype(np.float32), pad_index, start, weights, offset, out)
    with pytest.raises(ValueError, match="uint8 -> uint16"):
        windowed.window_rows(src, pad_index, start, weights, offset, out.astype(np.uint16))
    with pytest.raises(ValueError, match="span 6"):
        windowed.window_rows(src, pad_index, start, weights[:, :6], offset, out)
    with pytest.raises(ValueError, match="C-contiguous"):
        windowed.window_rows(src, pad_index, start, weights, offset, np.empty((11, 10), np.uint8)[:, ::2])


def test_without_a_writable_cache_the_kernel_still_compiles(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture,
                                                           rng: np.random.Generator) -> None:
    import numba

    real_njit = numba.njit

    def njit_without_cache(*, cache: bool = False, **options: object) -> object:
        if cache:  # what numba raises when no folder can hold the cache
            raise RuntimeError("cannot cache function '_window_rows': no locator available")
        return real_njit(**options)

    monkeypatch.setattr(numba, "njit", njit_without_cache)
    windowed._compiled.cache_clear()
    try:
        img = smooth_image(rng, 23, 17, 3)
        with caplog.at_level(logging.INFO, logger="srpipe.imaging.windowed"):
            out = imresize(img, 1 / 2)
        assert np.array_equal(out, reference_imresize(img, 1 / 2))
        assert "cannot cache the resize kernel" in caplog.text
    finally:
        windowed._compiled.cache_clear()  # the next test gets the cached kernel again


def _kernel_signatures_in_this_process(_: int) -> int:
    """Run in a pool worker: how many compiled variants the kernel had before the worker did anything."""
    return len(windowed._compiled().signatures)


@pytest.mark.skipif("forkserver" not in __import__("multiprocessing").get_all_start_methods(),
                    reason="workers start by spawn here and compile on first use")
def test_pool_workers_start_with_the_kernel_compiled() -> None:
    from srpipe.parallel import make_pool

    with make_pool(2) as pool:
        counts = list(pool.map(_kernel_signatures_in_this_process, range(4)))
    assert all(count >= 1 for count in counts), counts
