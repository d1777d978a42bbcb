"""Benchmark: ``srpipe process`` throughput, efficiency, tiling fidelity and memory on EDSR-baseline x4.

Run from the repository root (about 5-10 minutes on 2 cores)::

    python benchmarks/process_throughput.py [--images 3] [--skip-24mp]

Everything is measured side by side in one run, medians of interleaved repeats:

1. Exports EDSR-baseline x4 with random weights (the tiling and speed questions do not depend on
   training) through ``srpipe.export.export_model``: measured receptive field and overlap included.
2. Machine conv2d peak: a 64→64 3×3 convolution on 1×64×256×256 in ONNX Runtime and in PyTorch; the
   faster of the two is "this machine's conv2d GFLOP/s", measured before, between and after the two
   end-to-end runs (median of the three), since other work on the machine moves both.
3. ``srpipe process`` end to end (decode, tiles, blend, encode, atomic writes) over real photos
   (BSD200 from ../shared, else synthetic 481×321): output MP/s and useful GFLOP/s = whole-image model
   FLOPs / wall time (overlap counted as waste), divided by the conv2d peak (target >= 0.75).
4. Inference only, same weights, same tile size (192): ``OnnxUpscaler`` against a crop-only PyTorch
   tile loop written like Real-ESRGAN's ``tile_process`` (tile_pad 10, no blending) (target >= 1.3x),
   and the PSNR of each tiled output against whole-image inference.
5. Batching (1 vs 4 tiles per call) and IO binding (on vs off) on the CPU provider.
6. Peak RSS of a child process upscaling one 1500×1000 photo to 6000×4000 (24 MP).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from srpipe.config import ExportConfig, ModelConfig, ProcessConfig
from srpipe.export import export_model
from srpipe.imaging.io import read_image, write_image
from srpipe.infer.runner import process
from srpipe.infer.session import cpu_threads
from srpipe.infer.upscaler import OnnxUpscaler
from srpipe.model.edsr import build_model, preset_config
from srpipe.workspace import Workspace

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "BSD200"


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def conv_peak() -> dict[str, float]:
    """GFLOP/s of one 64→64 3×3 conv on 1×64×256×256, ORT (CPU EP) and PyTorch, median of 5."""
    import onnxruntime as ort

    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
    x = torch.rand(1, 64, 256, 256)
    flops = 2 * 64 * 64 * 9 * 256 * 256
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "conv.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
            warnings.simplefilter("ignore")
            torch.onnx.export(conv, (x,), str(path), dynamo=False, input_names=["x"], opset_version=17)
        so = ort.SessionOptions()
        so.intra_op_num_threads = cpu_threads()
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    xn = x.numpy()
    sess.run(None, {"x": xn})
    with torch.no_grad():
        conv(x)
        t_torch = median_time(lambda: conv(x), 5)
    t_ort = median_time(lambda: sess.run(None, {"x": xn}), 5)
    return {"ort": flops / t_ort / 1e9, "torch": flops / t_torch / 1e9}


def tile_process_torch(model: torch.nn.Module, img: np.ndarray, scale: int, tile: int = 192,
                       tile_pad: int = 10) -> np.ndarray:
    """Crop-only tiling in the style of Real-ESRGAN's ``RealESRGANer.tile_process`` (no blending)."""
    x = torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    _, c, h, w = x.shape
    out = x.new_zeros((1, c, h * scale, w * scale))
    for ty in range(math.ceil(h / tile)):
        for tx in range(math.ceil(w / tile)):
            x0, y0 = tx * tile, ty * tile
            x1, y1 = min(x0 + tile, w), min(y0 + tile, h)
            px0, px1 = max(x0 - tile_pad, 0), min(x1 + tile_pad, w)
            py0, py1 = max(y0 - tile_pad, 0), min(y1 + tile_pad, h)
            with torch.no_grad():
                y = model(x[:, :, py0:py1, px0:px1])
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                y[:, :, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
    return (out[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def photos(folder: Path, count: int) -> list[Path]:
    """``count`` real 481×321 photos copied to ``folder`` (synthetic 481×321 when ../shared is absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(SHARED.glob("*.png"))[:count] if SHARED.is_dir() else []
    rng = np.random.default_rng(0)
    for i in range(count):
        px = read_image(sources[i]).pixels if i < len(sources) else \
            (rng.random((321, 481, 3)) * 255).astype(np.uint8)
        write_image(folder / f"{i:02d}.png", px)
    return sorted(folder.glob("*.png"))


MEMORY_CHILD = """
import resource, sys, time
from pathlib import Path
from srpipe.config import ProcessConfig
from srpipe.infer.runner import process
from srpipe.infer.upscaler import OnnxUpscaler
from srpipe.workspace import Workspace
up = OnnxUpscaler.open(Path(sys.argv[1]), device="cpu")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
rep = process(Path(sys.argv[2]), Path(sys.argv[3]), ProcessConfig(), workspace=Workspace(Path(sys.argv[3])),
              upscaler=up)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(base / 1024, peak / 1024, time.perf_counter() - t, rep.count("ok"))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=3, help="photos for the end-to-end runs")
    ap.add_argument("--skip-24mp", action="store_true", help="skip the 24-megapixel memory run")
    args = ap.parse_args()
    torch.set_num_threads(cpu_threads())
    res: dict[str, object] = {"threads": cpu_threads(), "torch": torch.__version__}
    work = Path(tempfile.mkdtemp(prefix="srpipe-bench-"))
    torch.manual_seed(0)
    cfg: ModelConfig = preset_config("baseline", 4)
    model = build_model(cfg).eval()
    t = time.perf_counter()
    exported = export_model(model, cfg, work / "edsr-baseline-x4.onnx", ExportConfig(), source="random")
    res["export_s"] = round(time.perf_counter() - t, 1)
    rf = exported.receptive
    res["receptive"] = {"theoretical": rf.theoretical, "effective": rf.effective, "overlap": rf.overlap}
    mflop = float(exported.metadata["mflop_per_lr_pixel"])

    files = photos(work / "in", args.images)
    lr_pixels = sum(read_image(f).pixels.shape[0] * read_image(f).pixels.shape[1] for f in files)
    ws = Workspace(work / "ws")
    peaks, runs = [conv_peak()], []
    for i in range(2):  # conv peak / process / conv peak / process / conv peak: noise hits both alike
        runs.append(process(work / "in", work / "out", ProcessConfig(device="cpu", overwrite=i > 0),
                            workspace=ws, model=exported.path))
        peaks.append(conv_peak())
    machine = statistics.median(max(p.values()) for p in peaks)
    res["conv_gflops"] = {k: [round(p[k], 1) for p in peaks] for k in ("ort", "torch")}
    seconds = statistics.median(r.seconds for r in runs)
    rep = runs[-1]
    useful = mflop * 1e6 * lr_pixels / seconds / 1e9
    res["process"] = {"files": rep.count("ok"), "provider": rep.provider, "tile": rep.tile,
                      "overlap": rep.overlap, "seconds": [round(r.seconds, 2) for r in runs],
                      "output_mp_per_s": round(rep.output_megapixels / seconds, 4),
                      "extra_compute": round(rep.extra_compute, 4), "useful_gflops": round(useful, 1),
                      "conv_peak_gflops_median": round(machine, 1),
                      "useful_over_conv_peak": round(useful / machine, 3)}

    imgs = [read_image(f).pixels for f in files[:2]]
    ours = OnnxUpscaler.open(exported.path, device="cpu", tile=192)
    whole = OnnxUpscaler.open(exported.path, device="cpu", tile=0)
    ref = [whole(im) for im in imgs]
    t_ours, t_torch = [], []
    for _ in range(2):  # interleaved, so machine noise hits both alike
        for im in imgs:
            t_ours.append(median_time(lambda im=im: ours(im), 1))
            t_torch.append(median_time(lambda im=im: tile_process_torch(model, im, 4), 1))
    res["vs_torch_tile_loop"] = {
        "srpipe_s": round(statistics.median(t_ours), 2), "torch_s": round(statistics.median(t_torch), 2),
        "speedup": round(statistics.median(t_torch) / statistics.median(t_ours), 3),
        "psnr_tiled_vs_whole": round(min(psnr(ours(im), r) for im, r in zip(imgs, ref, strict=True)), 2),
        "maxdiff_tiled_vs_whole": int(max(np.abs(ours(im).astype(int) - r).max()
                                          for im, r in zip(imgs, ref, strict=True))),
        "psnr_torch_loop_vs_whole": round(min(psnr(tile_process_torch(model, im, 4), r)
                                              for im, r in zip(imgs, ref, strict=True)), 2)}

    variants = {"batch1": OnnxUpscaler.open(exported.path, device="cpu", tile=96, batch=1),
                "batch4": OnnxUpscaler.open(exported.path, device="cpu", tile=96, batch=4),
                "no_io_binding": OnnxUpscaler.open(exported.path, device="cpu", tile=96, batch=1,
                                                   io_binding=False)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(3):
        for k, up in variants.items():
            times[k].append(median_time(lambda up=up: up(imgs[0]), 1))
    res["cpu_variants_s_tile96"] = {k: round(statistics.median(v), 2) for k, v in times.items()}

    if not args.skip_24mp:
        big = work / "big"
        big.mkdir()
        import cv2

        write_image(big / "big.png", cv2.resize(imgs[0], (1500, 1000), interpolation=cv2.INTER_CUBIC))
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(exported.path), str(big),
                              str(work / "big-out")], capture_output=True, text=True, check=True)
        base, peak_mb, secs, ok = out.stdout.split()
        res["24mp"] = {"output": "6000x4000", "rss_after_session_mb": round(float(base)),
                       "peak_rss_mb": round(float(peak_mb)), "seconds": round(float(secs), 1), "ok": int(ok)}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
