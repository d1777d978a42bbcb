"""Benchmark: the bundled default models (issue 5) on this machine's CPU: size, cost and speed.

Run from the repository root (about 2-4 minutes on 2 cores)::

    python benchmarks/bundled_models.py [--images 2] [--rounds 3]

For each bundled model (``srpipe/models/default-x{2,3,4}.onnx``) it prints its parameters and file size,
MFLOP per *output* pixel (the export's per-LR-pixel count / scale²), then measures on real photos
(BSD200 481×321 from ../shared, else synthetic) through ``srpipe.process.process`` with default
settings (decode, tiles, blend, encode, atomic writes; ONNX Runtime, the provider that really ran is
printed):

- output megapixels per second, plain and with ``--ensemble`` (EDSR+), timed interleaved (plain, then
  ensemble, ``--rounds`` times) so that load changes hit both; medians;
- the ensemble's cost as the median of the paired time ratios (8 runs of the model: expect about 8×).

The quality side of the ensemble (its PSNR gain) is in docs/models.md, from ``srpipe evaluate``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from process_throughput import load, photos

from srpipe.config import ProcessConfig
from srpipe.contract import MetaKey, describe
from srpipe.infer.session import BUNDLED_DIR
from srpipe.infer.upscaler import TiledUpscaler
from srpipe.process import process
from srpipe.workspace import Workspace


def run_once(model: Path, src: Path, out: Path, *, ensemble: bool) -> tuple[float, float, str]:
    """One ``process`` of ``src`` into a fresh ``out``: (seconds, output MP, provider)."""
    upscaler = TiledUpscaler.open(model, device="auto", ensemble=ensemble)
    start = time.perf_counter()
    report = process(src, out, ProcessConfig(ensemble=ensemble, overwrite=True), workspace=Workspace(out),
                     upscaler=upscaler)
    seconds = time.perf_counter() - start
    assert report.count("ok") == len(list(src.glob("*.png"))), "a photo failed"
    return seconds, report.output_megapixels, upscaler.provider


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2, help="photos per process run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved plain/ensemble pairs")
    args = ap.parse_args()
    models = sorted(BUNDLED_DIR.glob("default-x*.onnx"))
    if not models:
        sys.exit(f"no bundled models in {BUNDLED_DIR}")
    print(f"load average {load():.1f} at start; medians of {args.rounds} interleaved rounds, "
          f"{args.images} photos each")
    print(f"{'model':16} {'params':>8} {'MB':>5} {'MFLOP/out px':>13} {'MP/s':>6} {'MP/s EDSR+':>11} "
          f"{'EDSR+ cost':>11}  provider")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        photos(src, args.images)
        for model in models:
            info = describe(model)
            s = info.scale
            mflop_out = float(info.props[MetaKey.MFLOP]) / s**2
            plain, ens, ratios = [], [], []
            for r in range(args.rounds):
                t_p, mp, provider = run_once(model, src, Path(tmp) / f"p{s}{r}", ensemble=False)
                t_e, _, _ = run_once(model, src, Path(tmp) / f"e{s}{r}", ensemble=True)
                plain.append(mp / t_p)
                ens.append(mp / t_e)
                ratios.append(t_e / t_p)
            print(f"{model.name:16} {int(info.props[MetaKey.PARAMS]):8,d} {model.stat().st_size / 1e6:5.2f} "
                  f"{mflop_out:13.3f} {statistics.median(plain):6.2f} {statistics.median(ens):11.3f} "
                  f"{statistics.median(ratios):10.2f}x  {provider}")
    print(f"load average {load():.1f} at end")


if __name__ == "__main__":
    main()
