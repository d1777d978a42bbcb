"""Process pools for the batch commands (``prepare``, ``downscale``): a clean start method and an
ordered map with a bounded number of tasks in flight.

Contract: :func:`ordered_map` yields ``fn(item)`` for every item in input order, whatever order the
workers finish in, with at most ``window`` items submitted and not yet consumed (so memory stays
bounded however long the input is). With ``pool`` None it is the plain ``map`` in this process. A
worker's exception is raised where its result would have been yielded. Workers of :func:`make_pool`
exit on their own when the process that made the pool dies, even by ``kill -9``.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: taskset, cgroup/container CPU sets), not the
    machine's count: the default number of pool workers (``prepare``, ``downscale``) and of inference
    threads (ONNX Runtime, OpenVINO)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def make_pool(workers: int) -> Executor:
    """A process pool whose workers start clean: forkserver where available (never a fork of a parent
    holding torch, HDF5 or BLAS threads), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=die_with,
                               initargs=(os.getpid(),))


def die_with(owner: int) -> None:
    """Pool-worker initializer: exit as soon as process ``owner`` (the one that made the pool) is gone.

    After a ``kill -9`` of the owner nothing else would end them: a worker waits on a task queue whose
    write end it holds itself, and the forkserver (their parent, so ``PR_SET_PDEATHSIG`` would not
    fire) and the resource tracker stay up as long as a worker does, all holding the terminal.
    """
    threading.Thread(target=_exit_after, args=(owner,), name="srpipe-owner-watch", daemon=True).start()


def _exit_after(owner: int) -> None:
    try:
        fd = os.pidfd_open(owner)  # readable once the process has exited; immune to PID reuse
    except (AttributeError, OSError):  # not Linux >= 5.3, or the owner is already gone
        fd = -1
    if fd >= 0:
        select.select([fd], [], [])
    else:
        while True:
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                break
            except PermissionError:  # alive under another user (cannot happen for our owner)
                pass
            time.sleep(1.0)
    os._exit(1)


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
