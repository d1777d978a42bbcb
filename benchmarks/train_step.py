"""Benchmark: srpipe's training iterations/s (loader + step) against bare PyTorch loops, same run.

Run from the repository root::

    python benchmarks/train_step.py                      # small EDSR x2, batch 16 × 48 px, CPU-sized
    python benchmarks/train_step.py --blocks 16 --feats 64 --scale 4 --iterations 200   # baseline x4 (GPU)

What is timed, with the same model initialisation, batch (16 × 48×48 LR by default, the paper's), data
(the same ``PatchDataset`` items in the same order), worker count, precision and memory format:

- **srpipe**: the real entry point ``srpipe.train.run.train`` (PatchLoader, lr schedule, NaN check with
  its per-step host sync, EMA off, metrics rows every 100 iterations, progress callback). Iterations/s
  come from the progress callbacks' timestamps (each carries the iteration it reports), from the first
  report after ``--warmup`` iterations to the last iteration, so start-up and the final checkpoint are
  not counted.
- **bare DataLoader**: what one writes by hand — ``DataLoader(PatchDataset, batch_size, num_workers,
  pin_memory on CUDA)``, forward, L1, ``zero_grad``, backward, ``Adam.step``; no logging, no checks.
- **bare PatchLoader**: the same bare loop fed by srpipe's loader, isolating the training loop's overhead.

Variants run interleaved, ``--repeats`` times each; the script prints each median it/s and the ratios
srpipe / bare (ratio of medians, and the median of the per-repeat ratios, which resists load drifting
on a shared machine). Target (issue 3): srpipe / bare DataLoader ≥ 0.95 on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from srpipe.config import ModelConfig, Pipeline, TrainConfig
from srpipe.data import store as st
from srpipe.data.dataset import PatchDataset, PatchLoader
from srpipe.data.writer import StoreWriter
from srpipe.hardware import resolve_device
from srpipe.model.edsr import build_model
from srpipe.progress import Progress
from srpipe.train import runtime
from srpipe.train.run import train
from srpipe.workspace import Workspace


def make_store(path: Path, patches: int, scale: int) -> Path:
    """A synthetic train store of ``patches`` 480-px sub-images (smooth random content) and their LR."""
    rng = np.random.default_rng(0)
    text, digest = st.settings_digest({"benchmark": "train_step", "scale": scale})
    meta = st.StoreMeta("train", (scale,), 480, 240, "mirror", text, digest, "benchmark")
    writer = StoreWriter.open(path, meta)
    for i in range(patches):
        small = rng.integers(0, 256, (1, 60, 60, 3), dtype=np.uint8)
        hr = np.repeat(np.repeat(small, 8, axis=1), 8, axis=2)  # blocky but compressible
        src = writer.add_source(f"synthetic{i}.png", "0" * 64, (480, 480, 3), 8)
        writer.add_patches(src, hr, {scale: np.ascontiguousarray(hr[:, ::scale, ::scale])},
                           np.zeros((1, 4), np.int32))
        writer.commit(i + 1)
    return writer.finalize()


def run_srpipe(cfg: TrainConfig, workspace: Path, warmup: int) -> float:
    """Iterations/s of ``srpipe.train.run.train`` from its progress timestamps (see the module docstring)."""
    stamps: list[tuple[int, float]] = []

    def progress(p: Progress) -> None:
        if p.task == "train":
            stamps.append((p.done, time.perf_counter()))

    train(Pipeline(name="bench", train=cfg), workspace=Workspace(workspace), progress=progress)
    first = next(s for s in stamps if s[0] >= warmup)
    last = stamps[-1]
    return (last[0] - first[0]) / (last[1] - first[1])


def run_bare(cfg: TrainConfig, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], warmup: int) -> float:
    """Iterations/s of a hand-written loop over ``batches`` (timed after ``warmup`` iterations)."""
    device = resolve_device(cfg.device, 0)
    dtype = runtime.autocast_dtype(cfg, device)
    fmt = torch.channels_last if runtime.use_channels_last(cfg, device) else torch.contiguous_format
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(device, memory_format=fmt).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                           fused=True if device.type == "cuda" else None)
    start = 0.0
    for n, (lr, hr) in enumerate(batches, start=1):
        lr = lr.to(device, non_blocking=True).contiguous(memory_format=fmt)
        hr = hr.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            sr = model(lr)
        loss = torch.nn.functional.l1_loss(sr.float(), hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if n == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (n - warmup) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, default=None, help="an existing train.h5 (default: synthetic)")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--feats", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=30, help="timed iterations per run")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="srpipe-bench-"))
    stores = tmp / "stores"
    stores.mkdir()
    store = args.store or make_store(stores / "train.h5", 64, args.scale)
    total = args.warmup + args.iterations
    model = ModelConfig(scale=args.scale, n_resblocks=args.blocks, n_feats=args.feats)
    cfg = TrainConfig(model=model, stores=str(store.parent), batch_size=args.batch, patch_size=args.patch,
                      iterations=total, val_every=0, checkpoint_every=10**9, log_every=100,
                      workers=args.workers, tensorboard=False, device=args.device,  # type: ignore[arg-type]
                      precision=args.precision)  # type: ignore[arg-type]
    device = resolve_device(cfg.device, 0)
    ds = PatchDataset(store, scale=args.scale, patch_size=args.patch, seed=cfg.seed,
                      length=total * args.batch)
    variants: dict[str, Callable[[], float]] = {
        "srpipe": lambda: run_srpipe(cfg, tmp / "ws", args.warmup),
        "bare DataLoader": lambda: run_bare(cfg, DataLoader(
            ds, batch_size=args.batch, shuffle=False, num_workers=args.workers,
            pin_memory=device.type == "cuda", persistent_workers=args.workers > 0), args.warmup),
        "bare PatchLoader": lambda: run_bare(
            cfg, PatchLoader(ds, batch_size=args.batch, workers=args.workers, device=device), args.warmup),
    }
    speeds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            speeds[name].append(fn())
    med = {name: statistics.median(v) for name, v in speeds.items()}
    dtype = runtime.precision_name(runtime.autocast_dtype(cfg, device))
    print(f"device {device}, {torch.get_num_threads()} threads, {dtype}; EDSR x{args.scale} "
          f"{args.blocks}x{args.feats}, batch {args.batch} x {args.patch}px, {args.workers} workers; "
          f"{args.iterations} timed iterations, median of {args.repeats}")
    for name, v in speeds.items():
        print(f"  {name:17s} {med[name]:8.3f} it/s   runs: {', '.join(f'{x:.3f}' for x in v)}")
    for bare in ("bare DataLoader", "bare PatchLoader"):
        # Paired per repeat too: on a shared machine the load drifts; runs close in time see the same load.
        paired = statistics.median(a / b for a, b in zip(speeds["srpipe"], speeds[bare], strict=True))
        target = "  (target >= 0.95)" if bare == "bare DataLoader" else ""
        print(f"  srpipe / {bare:16s} ratio of medians {med['srpipe'] / med[bare]:.3f}, "
              f"median of paired ratios {paired:.3f}{target}")


if __name__ == "__main__":
    main()
