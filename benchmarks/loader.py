"""Benchmark: training-loader throughput, x4 pairs per second (HR 192 / LR 48, batch 16).

Run from the repository root::

    python benchmarks/loader.py [--store PATH] [--workers 0,1,2] [--chunks 120] [--batches 150]
    python benchmarks/loader.py --chunks 480,240,120,60      # the chunk-shape comparison

Without ``--store`` it writes a synthetic train store (``--patches`` 480×480 sub-images with x2/x3/x4
LR, random pixels: the loader's cost does not depend on content) once per chunk tile side in
``--chunks`` to a temporary folder. For each store and worker count it iterates
``srpipe.data.dataset.PatchLoader`` (batched reads, uint8 across processes, float conversion in the
main process) and, side by side in the same run, a plain ``DataLoader(PatchDataset)`` over the same
items (per-item float tensors + torch's ``default_collate``), and prints the median pairs/s of
``--repeats`` runs and their ratio. Consuming a batch means receiving it as float32 CPU tensors.
Target: >= 1,500 pairs/s with 2 workers on 2 cores. The first line reports how many cores two busy
processes really get at the time (a shared host may give fewer than ``os.cpu_count()``).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader

from srpipe.data import store as st
from srpipe.data.dataset import PatchDataset, PatchLoader
from srpipe.data.writer import StoreWriter

SCALES = (2, 3, 4)


def make_store(path: Path, patches: int, chunk: int) -> Path:
    """A synthetic 480-px train store with ``chunk``-side tiles."""
    rng = np.random.default_rng(0)
    text, digest = st.settings_digest({"benchmark": chunk})
    meta = st.StoreMeta("train", SCALES, 480, 240, "mirror", text, digest, "benchmark")
    saved, st.CHUNK_TARGET = st.CHUNK_TARGET, chunk
    try:
        writer = StoreWriter.open(path, meta)
        for i in range(0, patches, 16):
            hr = rng.integers(0, 256, (min(16, patches - i), 480, 480, 3), dtype=np.uint8)
            src = writer.add_source(f"synthetic{i}.png", "0" * 64, (480, 480, 3), 8)
            writer.add_patches(src, hr, {s: np.ascontiguousarray(hr[:, ::s, ::s]) for s in SCALES},
                               np.zeros((len(hr), 4), np.int32))
            writer.commit(i + 1)
        return writer.finalize()
    finally:
        st.CHUNK_TARGET = saved


def touched_kib(side: int, crop: int, tile: int) -> float:
    """Mean KiB of chunks a random ``crop`` read touches in a ``side``-px sub-image with ``tile`` chunks."""
    spans = [(y + crop - 1) // tile - y // tile + 1 for y in range(side - crop + 1)]
    return (sum(spans) / len(spans)) ** 2 * tile * tile * 3 / 1024


def read_cpu_ms(ds: PatchDataset, batches: int) -> float:
    """Median CPU ms to read one batch of 16 in this process (CPU time: robust to other load)."""
    times = []
    for b in range(batches):
        start = time.process_time()
        ds.read_batch(range(16 * b, 16 * b + 16))
        times.append(time.process_time() - start)
    return 1e3 * statistics.median(times)


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the loader's workers, once joined)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def pairs_per_second(make: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
                     batches: int) -> tuple[float, float]:
    """Wall-clock pairs/s after the first batch, and CPU µs per pair over all processes (start-up
    included). CPU time does not depend on what else the host runs, wall time does."""
    cpu0 = _cpu_seconds()
    it = iter(make())
    next(it)  # worker start-up and first prefetch are not throughput
    start, n = time.perf_counter(), 0
    for _, (lr, _hr) in zip(range(batches), it, strict=False):
        n += lr.shape[0]
    rate = n / (time.perf_counter() - start)
    del it  # joins the workers, so their CPU time is counted
    gc.collect()
    return rate, 1e6 * (_cpu_seconds() - cpu0) / (n + 16)


def _spin(_: int) -> float:
    a = np.ones((1 << 20,), np.float64)
    start = time.perf_counter()
    for _ in range(300):
        np.sqrt(a, out=a)
    return time.perf_counter() - start


def effective_cores(n: int = 2) -> float:
    """Cores ``n`` concurrent CPU-bound processes actually get (a shared host may give fewer)."""
    import multiprocessing

    alone = statistics.median(_spin(0) for _ in range(3))
    with multiprocessing.get_context("fork").Pool(n) as pool:
        together = max(pool.map(_spin, range(n)))
    return n * alone / together


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=None, help="an existing train.h5 (default: synthetic)")
    parser.add_argument("--chunks", default="120", help="tile sides to compare (synthetic stores only)")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--patches", type=int, default=400, help="sub-images in the synthetic store")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-plain", action="store_true", help="skip the plain-DataLoader comparison")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    print(f"cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}, "
          f"effective cores for 2 busy processes {effective_cores():.2f}")
    with tempfile.TemporaryDirectory(prefix="srpipe-loader-") as tmp:
        stores = ([(args.store, "given")] if args.store else
                  [(make_store(Path(tmp) / f"c{c}.h5", args.patches, c), f"tile {c}")
                   for c in (int(c) for c in args.chunks.split(","))])
        for path, label in stores:
            info = st.open_store(path)
            ds = PatchDataset(path, scale=4, patch_size=48, length=16 * (args.batches + 8) * 4)
            with h5py.File(path, "r") as f:
                hr_tile, lr_tile = f["hr"].chunks[1], f["lr_x4"].chunks[1]
            kib = touched_kib(info.hr_size, 192, hr_tile) + touched_kib(info.hr_size // 4, 48, lr_tile)
            print(f"{label}: {info.n_patches} sub-images of {info.hr_size} px, "
                  f"{path.stat().st_size / 1e6:.0f} MB; chunks HR {hr_tile} / LR x4 {lr_tile} px: a pair "
                  f"touches {kib:.0f} KiB of chunks (needs {(192 * 192 + 48 * 48) * 3 / 1024:.0f}); "
                  f"read_batch {read_cpu_ms(ds, 3 * args.batches):.2f} ms CPU per 16 pairs")
            for w in workers:
                fast, plain = [], []
                for _ in range(args.repeats):  # interleaved, so load drifts hit both alike
                    fast.append(pairs_per_second(lambda w=w, ds=ds: PatchLoader(ds, batch_size=16, workers=w),
                                                 args.batches))
                    if not args.no_plain:
                        plain.append(pairs_per_second(lambda w=w, ds=ds: DataLoader(
                            ds, batch_size=16, num_workers=w, persistent_workers=w > 0,
                            prefetch_factor=4 if w else None), args.batches))
                f, cpu = (statistics.median(v) for v in zip(*fast, strict=True))
                versus = ""
                if plain:
                    p, pcpu = (statistics.median(v) for v in zip(*plain, strict=True))
                    versus = (f" | plain DataLoader {p:6.0f} pairs/s, {pcpu:5.0f} µs CPU/pair"
                              f" | ratio {f / p:4.2f}")
                print(f"  workers {w}: srpipe {f:6.0f} pairs/s, {cpu:5.0f} µs CPU/pair{versus} "
                      f"(srpipe runs: {', '.join(f'{x:.0f}' for x, _ in fast)})")


if __name__ == "__main__":
    main()
