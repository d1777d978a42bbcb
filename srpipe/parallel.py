"""Process pools for the batch commands (``prepare``, ``downscale``): a clean start method and an
ordered map with a bounded number of tasks in flight.

Contract: :func:`ordered_map` yields ``fn(item)`` for every item in input order, whatever order the
workers finish in, with at most ``window`` items submitted and not yet consumed (so memory stays
bounded however long the input is). With ``pool`` None it is the plain ``map`` in this process. A
worker's exception is raised where its result would have been yielded.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def make_pool(workers: int) -> Executor:
    """A process pool whose workers start clean: forkserver where available (never a fork of a parent
    holding torch, HDF5 or BLAS threads), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


def ordered_map(pool: Executor | None, fn: Callable[[T], R], items: Iterable[T], window: int) -> Iterator[R]:
    """``fn`` over ``items`` in input order, at most ``window`` in flight (module docstring)."""
    if pool is None:
        yield from map(fn, items)
        return
    pending: deque[Future[R]] = deque()
    it = iter(items)
    for item in it:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            break
    while pending:
        result = pending.popleft().result()
        for item in it:  # refill one
            pending.append(pool.submit(fn, item))
            break
        yield result
