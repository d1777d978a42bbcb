"""The compiled window kernel behind imresize's integer path: its guards, and its fallback when
numba has nowhere to cache (exactness itself is tested through imresize in test_resize.py)."""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from conftest import smooth_image
from test_resize import reference_imresize

from srpipe.imaging import windowed
from srpipe.imaging.kernel import axis_plan, exact_weights
from srpipe.imaging.resize import imresize


def _x2_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    plan = axis_plan(22, 11, 0.5, "mirror")
    exact = exact_weights(22, 11, 0.5, "mirror", 255)
    assert exact is not None
    src = np.arange(22 * 5, dtype=np.uint8).reshape(22, 5)
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


def test_integer_factors_take_the_kernel_once_ready_and_blas_before(monkeypatch: pytest.MonkeyPatch,
                                                                     rng: np.random.Generator) -> None:
    calls: list[str] = []
    real_rows = windowed.window_rows
    monkeypatch.setattr(windowed, "window_rows", lambda *args: calls.append("kernel") or real_rows(*args))
    monkeypatch.setattr(windowed, "note_blas_pass", lambda values: calls.append(f"blas {values}"))
    img = smooth_image(rng, 40, 28, 3)
    kernel_out = imresize(img, 1 / 4)
    assert calls == ["kernel", "kernel"]  # rows, then columns
    calls.clear()
    assert imresize(img.astype(np.float32), 1 / 4).dtype == np.float32
    assert calls == []  # floats: MATLAB's float64 weights through BLAS, never the kernel, nothing counted
    monkeypatch.setattr(windowed, "ready", lambda: False)
    assert np.array_equal(imresize(img, 1 / 4), kernel_out)
    assert calls == [f"blas {40 * 28 * 3}", f"blas {28 * 3 * 10}"]  # input values of each pass


def _join_warming_thread() -> None:
    """Wait (at most 30 s) for the background warm-up thread, if one is running."""
    for thread in threading.enumerate():
        if thread.name == "srpipe-resize-kernel":
            thread.join(timeout=30)


class _FreshProcess:
    """The module's per-process state as a new process has it, with ``warm`` replaced."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, warm: Callable[[], None]) -> None:
        monkeypatch.setattr(windowed, "_READY", threading.Event())
        monkeypatch.setattr(windowed, "_STARTED", threading.Lock())
        monkeypatch.setattr(windowed, "_blas_values", 0)
        monkeypatch.setattr(windowed, "warm", warm)


def test_warming_starts_once_after_enough_blas_work_and_nobody_waits(monkeypatch: pytest.MonkeyPatch,
                                                                     rng: np.random.Generator) -> None:
    release, started = threading.Event(), threading.Event()
    threads: list[str] = []

    def slow_warm() -> None:  # stands in for numba's start-up: blocks until the test releases it
        threads.append(threading.current_thread().name)
        started.set()
        assert release.wait(timeout=30)
        windowed._READY.set()

    _FreshProcess(monkeypatch, slow_warm)
    monkeypatch.setattr(windowed, "WARM_AFTER_VALUES", 10_000)
    img = smooth_image(rng, 60, 50, 3)  # 9,000 values into the row pass, 2,250 into the columns
    assert np.array_equal(imresize(img, 1 / 4), reference_imresize(img, 1 / 4))
    assert started.wait(timeout=30) and threads == ["srpipe-resize-kernel"]
    assert not windowed.ready()  # the warm-up is still blocked, and imresize returned anyway:
    assert np.array_equal(imresize(img, 1 / 4), reference_imresize(img, 1 / 4))
    windowed.note_blas_pass(10**12)
    assert threads == ["srpipe-resize-kernel"]  # one warming thread per process, however much work
    release.set()
    _join_warming_thread()
    assert windowed.ready()


def test_small_jobs_never_start_warming(monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator) -> None:
    _FreshProcess(monkeypatch, lambda: pytest.fail("warm() started for a small job"))
    for _ in range(3):
        imresize(smooth_image(rng, 64, 64, 3), 1 / 2)
    assert windowed._blas_values == 3 * (64 * 64 * 3 + 64 * 3 * 32) and not windowed.ready()


def test_a_failed_warm_up_is_logged_and_blas_carries_on(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture,
                                                        rng: np.random.Generator) -> None:
    def broken() -> None:
        raise RuntimeError("numba is broken here")

    _FreshProcess(monkeypatch, broken)
    monkeypatch.setattr(windowed, "WARM_AFTER_VALUES", 1)
    img = smooth_image(rng, 23, 17, 3)
    with caplog.at_level(logging.WARNING, logger="srpipe.imaging.windowed"):
        assert np.array_equal(imresize(img, 1 / 2), reference_imresize(img, 1 / 2))
        _join_warming_thread()
    assert "compiled resize kernel is unavailable (numba is broken here)" in caplog.text
    assert not windowed.ready() and np.array_equal(imresize(img, 1 / 2), reference_imresize(img, 1 / 2))


def _may_start_warming() -> bool:
    return windowed._STARTED.acquire(blocking=False)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork here")
def test_a_forked_child_may_start_its_own_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(windowed, "_STARTED", threading.Lock())
    assert windowed._STARTED.acquire(blocking=False)  # this process "started" one
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        assert pool.submit(_may_start_warming).result(timeout=60)
    assert not _may_start_warming()


def test_after_warm_no_call_compiles_again(rng: np.random.Generator) -> None:
    # A compile in the middle of a job would stall it for up to a second: warm() must have built
    # every variant imresize uses (dtypes, read-only plans, views and copies alike).
    windowed.warm()
    kernel = windowed._compiled()
    before = len(kernel.signatures)
    for dtype in (np.uint8, np.uint16):
        img = smooth_image(rng, 48, 40, 3, dtype=dtype)
        for scale in (1 / 2, 1 / 3, 1 / 4, 1 / 8, 2, 3, 4):
            for view in (img, img[::2, 1:], img[:, :, 0], np.flipud(img)):
                imresize(view, scale, boundary="replicate")
    assert len(kernel.signatures) == before == 4


def test_numba_disable_jit_keeps_the_blas_route(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture,
                                                rng: np.random.Generator) -> None:
    # Under NUMBA_DISABLE_JIT numba returns the Python loops, minutes per image: never use them.
    import numba

    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    windowed._compiled.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="NUMBA_DISABLE_JIT"):
            windowed.warm()
        _FreshProcess(monkeypatch, windowed.warm)
        monkeypatch.setattr(windowed, "WARM_AFTER_VALUES", 1)
        img = smooth_image(rng, 23, 17, 3)
        with caplog.at_level(logging.WARNING, logger="srpipe.imaging.windowed"):
            assert np.array_equal(imresize(img, 1 / 3), reference_imresize(img, 1 / 3))
            _join_warming_thread()
        assert "NUMBA_DISABLE_JIT is set" in caplog.text and not windowed.ready()
    finally:
        windowed._compiled.cache_clear()
