"""Benchmark: ``srpipe prepare`` throughput in HR megapixels/s (decode → x2+x3+x4 → HDF5 write).

Run from the repository root::

    python benchmarks/prepare.py [--input DIR | --div2k-sized N] [--workers 1,2] [--repeats 3]
                                 [--hr-size 240 --stride 120]

Input: ``--input``, else ``../shared/data/train/BSD200`` (199 PNG photos, 481×321) when present, else 40
synthetic 800×600 PNGs. BSD200's short side is 321 px, so the default sub-image side is 240 (the
smallest multiple of 12 that fits 48-px x4 LR patches is 192). ``--div2k-sized N`` makes N inputs of
DIV2K's usual size instead (2040×1356: the first N BSD200 photos, bicubic-upscaled, light noise
added), to see big images and big stores (use ``--hr-size 480 --stride 240``, DIV2K's). Each run
writes fresh stores to a temporary folder; the script prints the median HR megapixels/s of the whole
``prepare`` call per worker count, a one-process breakdown of where the time goes per image, and a
control: how many cores two concurrent CPU-bound processes actually get on this machine right now (a
shared host may give fewer than ``os.cpu_count()``). (srpipe's bicubic against a per-row loop is
``benchmarks/bicubic.py``.)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from srpipe.batch import walk
from srpipe.config import PrepareConfig
from srpipe.data.work import Task, process_image
from srpipe.imaging.io import read_image, write_image
from srpipe.imaging.resize import imresize, modcrop
from srpipe.prepare import prepare

BSD200 = Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "BSD200"


def synthetic(folder: Path, count: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:600, 0:800].astype(np.float64)
    for i in range(count):
        base = np.stack([np.sin(xx / (7 + c + i) + yy / (11 + 2 * c)) for c in range(3)], axis=-1)
        img = np.clip(127.5 + 90 * base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        write_image(folder / f"synthetic{i:03d}.png", img)
    return folder


def div2k_sized(folder: Path, count: int) -> Path:
    if not BSD200.is_dir():
        raise SystemExit(f"--div2k-sized needs the BSD200 photos in {BSD200}")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, path in enumerate([f.path for f in walk(BSD200).files][:count]):
        big = cv2.resize(read_image(path).pixels, (2040, 1356), interpolation=cv2.INTER_CUBIC)
        noisy = big.astype(np.float32) + rng.normal(0, 3, big.shape).astype(np.float32)
        write_image(folder / f"div2k_sized{i:03d}.png", np.clip(noisy, 0, 255).round().astype(np.uint8))
    return folder


def breakdown(files: list[Path], cfg: PrepareConfig) -> dict[str, float]:
    """Median ms per image of each stage, in this process."""
    stages: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[[], object]) -> object:
        start = time.perf_counter()
        out = fn()
        stages.setdefault(name, []).append(1e3 * (time.perf_counter() - start))
        return out

    for path in files:
        timed("sha256", lambda p=path: hashlib.sha256(p.read_bytes()).hexdigest())
        img = timed("decode", lambda p=path: read_image(p).pixels)
        for s in cfg.scales:
            timed(f"imresize x{s}", lambda s=s, im=img: imresize(modcrop(im, s), 1 / s))  # type: ignore[arg-type]
        task = Task(path, path.name, {}, "train", cfg.scales, cfg.hr_size, cfg.stride, cfg.boundary, 10**9)
        result = timed("process_image (all of the above)", lambda t=task: process_image(t))
        timed("cut sub-images", result.patches)  # type: ignore[union-attr]
    return {name: statistics.median(v) for name, v in stages.items()}


def _spin(_: int) -> float:
    img = np.full((600, 800, 3), 128, np.uint8)
    start = time.perf_counter()
    for _ in range(15):
        imresize(img, 1 / 2)
    return time.perf_counter() - start


def effective_cores(workers: int) -> float:
    """How many cores this machine gives us right now: the same CPU-bound job run ``workers`` times at
    once in a pool versus once alone. On a shared host it can be far below ``os.cpu_count()``."""
    alone = statistics.median(_spin(0) for _ in range(3))
    with ProcessPoolExecutor(workers) as pool:
        together = max(pool.map(_spin, range(workers)))
    return workers * alone / together


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path, default=None)
    parser.add_argument("--div2k-sized", type=int, default=0, metavar="N")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hr-size", type=int, default=240)
    parser.add_argument("--stride", type=int, default=120)
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="srpipe-prepare-") as tmp:
        if args.div2k_sized:
            root = div2k_sized(Path(tmp) / "in", args.div2k_sized)
        else:
            root = args.input or (BSD200 if BSD200.is_dir() else synthetic(Path(tmp) / "in"))
        files = [f.path for f in walk(root).files]
        cfg = PrepareConfig(hr_size=args.hr_size, stride=args.stride)
        print(f"input {root}: {len(files)} images; scales {list(cfg.scales)}, hr_size {cfg.hr_size}, "
              f"stride {cfg.stride}")
        for name, ms in breakdown(files[:30], cfg).items():
            print(f"  one process, per image: {name:34s} {ms:7.2f} ms")
        print(f"  control: {effective_cores(2):.2f} effective cores for 2 concurrent CPU-bound processes")
        for w in (int(w) for w in args.workers.split(",")):
            rates, mp, patches = [], 0.0, 0
            for r in range(args.repeats):
                summary = prepare(root, Path(tmp) / f"out-{w}-{r}", PrepareConfig(
                    hr_size=args.hr_size, stride=args.stride, workers=w))
                rates.append(summary.megapixels / summary.seconds)
                mp, patches = summary.megapixels, summary.splits[0].patches
            print(f"workers {w}: {statistics.median(rates):6.1f} HR MP/s median ({mp:.1f} MP, {patches} "
                  f"sub-images; runs: {', '.join(f'{x:.1f}' for x in rates)})")


if __name__ == "__main__":
    main()
