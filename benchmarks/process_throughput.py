"""Benchmark: ``srpipe process`` throughput, efficiency, tiling fidelity and memory on EDSR-baseline x4.

Run from the repository root (about 6-10 minutes on 2 cores)::

    python benchmarks/process_throughput.py [--images 2] [--rounds 3] [--skip-24mp]

Everything is measured in one run. Other work on a shared machine moves every timing, so each ratio is
computed from *paired, interleaved* measurements (A then B, repeated) and the median ratio is reported;
the load average is printed beside it.

1. Exports EDSR-baseline x4 with random weights (the tiling and speed questions do not depend on
   training) through ``srpipe.export.export_model``: measured receptive field and overlap included.
2. Machine conv2d GFLOP/s: four stacked 64→64 3×3 convolutions on 1×64×256×256 (stacked so that ONNX
   Runtime's layout conversions at the graph boundary are amortised), in ONNX Runtime and in PyTorch;
   the faster of the two is "this machine's conv2d GFLOP/s".
3. ``srpipe process`` end to end (decode, tiles, blend, encode, atomic writes) on real photos (BSD200
   from ../shared, else synthetic 481×321), default settings: output MP/s, and useful GFLOP/s = whole-
   image model FLOPs / wall time (overlap counted as waste) divided by the conv2d GFLOP/s measured just
   before and after that run (target >= 0.75).
4. Inference only, same weights, same tile size: ``TiledUpscaler`` against a crop-only PyTorch tile loop
   written like Real-ESRGAN's ``tile_process`` (tile_pad 10, no blending) (target >= 1.3x), and the PSNR
   of each tiled output against whole-image inference.
5. Batching (1 vs 4 tiles per call) and IO binding (on vs off) on the CPU provider, tile 96.
6. Peak memory (VmHWM of a fresh child process) upscaling one 1500×1000 photo to 6000×4000 (24 MP).
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
from srpipe.infer.upscaler import TiledUpscaler
from srpipe.model.edsr import build_model, preset_config
from srpipe.workspace import Workspace

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "BSD200"


class ConvProbe:
    """Four stacked 64→64 3×3 convs on 1×64×256×256 in ONNX Runtime and PyTorch (see the module doc)."""

    FLOPS = 4 * 2 * 64 * 64 * 9 * 256 * 256

    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort

        self.model = torch.nn.Sequential(*(torch.nn.Conv2d(64, 64, 3, padding=1) for _ in range(4))).eval()
        self.x = torch.rand(1, 64, 256, 256)
        path = folder / "convs.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
            warnings.simplefilter("ignore")
            torch.onnx.export(self.model, (self.x,), str(path), dynamo=False, input_names=["x"],
                              opset_version=17)
        so = ort.SessionOptions()
        so.intra_op_num_threads = cpu_threads()
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self()

    def __call__(self) -> dict[str, float]:
        """GFLOP/s, best of 2 runs each."""
        xn = self.x.numpy()
        t_ort = min(timed(lambda: self.sess.run(None, {"x": xn})) for _ in range(2))
        with torch.no_grad():
            t_torch = min(timed(lambda: self.model(self.x)) for _ in range(2))
        return {"ort": self.FLOPS / t_ort / 1e9, "torch": self.FLOPS / t_torch / 1e9}


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0]) if Path("/proc/loadavg").exists() else -1.0


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
import sys, time
from pathlib import Path
from srpipe.config import ProcessConfig
from srpipe.infer.runner import process
from srpipe.infer.upscaler import TiledUpscaler
from srpipe.workspace import Workspace
def hwm():  # VmHWM belongs to this address space: unlike ru_maxrss it does not survive exec()
    return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
up = TiledUpscaler.open(Path(sys.argv[1]), device="cpu")
base = hwm()
t = time.perf_counter()
rep = process(Path(sys.argv[2]), Path(sys.argv[3]), ProcessConfig(), workspace=Workspace(Path(sys.argv[3])),
              upscaler=up)
print(base, hwm(), time.perf_counter() - t, rep.count("ok"), rep.tile)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2, help="photos per end-to-end run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repeats of each comparison")
    ap.add_argument("--skip-24mp", action="store_true", help="skip the 24-megapixel memory run")
    args = ap.parse_args()
    torch.set_num_threads(cpu_threads())
    res: dict[str, object] = {"threads": cpu_threads(), "torch": torch.__version__, "load_start": load()}
    work = Path(tempfile.mkdtemp(prefix="srpipe-bench-"))
    torch.manual_seed(0)
    cfg: ModelConfig = preset_config("baseline", 4)
    model = build_model(cfg).eval()
    exported = export_model(model, cfg, work / "edsr-baseline-x4.onnx", ExportConfig(), source="random")
    rf = exported.receptive
    res["receptive"] = {"theoretical": rf.theoretical, "effective": rf.effective, "overlap": rf.overlap}
    mflop = float(exported.metadata["mflop_per_lr_pixel"])
    tile = ProcessConfig().tile

    # 3. end to end, each run between two conv-peak probes
    files = photos(work / "in", args.images)
    imgs = [read_image(f).pixels for f in files]
    lr_pixels = sum(im.shape[0] * im.shape[1] for im in imgs)
    probe = ConvProbe(work)
    peaks, ratios, runs = [probe()], [], []
    for i in range(args.rounds):
        rep = process(work / "in", work / "out", ProcessConfig(device="cpu", overwrite=i > 0),
                      workspace=Workspace(work / "ws"), model=exported.path)
        peaks.append(probe())
        useful = mflop * 1e6 * lr_pixels / rep.seconds / 1e9
        ratios.append(useful / ((max(peaks[-2].values()) + max(peaks[-1].values())) / 2))
        runs.append(rep)
    rep = runs[-1]
    res["conv_gflops"] = {k: [round(p[k]) for p in peaks] for k in ("ort", "torch")}
    res["process"] = {
        "files": rep.count("ok"), "provider": rep.provider, "tile": rep.tile, "overlap": rep.overlap,
        "seconds": [round(r.seconds, 2) for r in runs], "extra_compute": round(rep.extra_compute, 4),
        "output_mp_per_s": round(statistics.median(r.megapixels_per_second for r in runs), 4),
        "useful_gflops": round(statistics.median(mflop * 1e3 * lr_pixels / r.seconds / 1e6 for r in runs), 1),
        "useful_over_conv_peak": [round(r, 3) for r in ratios],
        "useful_over_conv_peak_median": round(statistics.median(ratios), 3), "load": load()}

    # 4. inference only against a Real-ESRGAN-style crop loop, same weights and tile size
    ours = TiledUpscaler.open(exported.path, device="cpu", tile=tile)
    speedups, t_ours, t_torch, outs = [], [], [], {}
    for _ in range(args.rounds):
        for k, im in enumerate(imgs):
            a = timed(lambda im=im, k=k: outs.__setitem__(("ours", k), ours(im)))
            b = timed(lambda im=im, k=k: outs.__setitem__(("torch", k),
                                                          tile_process_torch(model, im, 4, tile)))
            t_ours.append(a)
            t_torch.append(b)
            speedups.append(b / a)
    whole = TiledUpscaler.open(exported.path, device="cpu", tile=0)
    refs = [whole(im).astype(np.int64) for im in imgs]
    res["vs_torch_tile_loop"] = {
        "tile": tile, "srpipe_s": round(statistics.median(t_ours), 2),
        "torch_s": round(statistics.median(t_torch), 2), "speedups": [round(x, 2) for x in speedups],
        "speedup_median": round(statistics.median(speedups), 3),
        "psnr_tiled_vs_whole": round(min(psnr(outs["ours", k], r) for k, r in enumerate(refs)), 2),
        "maxdiff_tiled_vs_whole": int(max(np.abs(outs["ours", k] - r).max() for k, r in enumerate(refs))),
        "psnr_torch_loop_vs_whole": round(min(psnr(outs["torch", k], r) for k, r in enumerate(refs)), 2),
        "maxdiff_torch_loop_vs_whole": int(max(np.abs(outs["torch", k] - r).max()
                                               for k, r in enumerate(refs))),
        "load": load()}
    del whole, refs

    # 5. batching and IO binding on the CPU provider (small tiles, so there are many to batch)
    variants = {"batch1": TiledUpscaler.open(exported.path, device="cpu", tile=96, batch=1),
                "batch4": TiledUpscaler.open(exported.path, device="cpu", tile=96, batch=4),
                "no_io_binding": TiledUpscaler.open(exported.path, device="cpu", tile=96, batch=1,
                                                   io_binding=False)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for k, up in variants.items():
            times[k].append(timed(lambda up=up: up(imgs[0])))
    res["cpu_variants_tile96"] = {
        "seconds": {k: round(statistics.median(v), 2) for k, v in times.items()},
        "batch4_over_batch1": round(statistics.median(b / a for a, b in zip(times["batch1"], times["batch4"],
                                                                               strict=True)), 3),
        "no_binding_over_binding": round(statistics.median(
            b / a for a, b in zip(times["batch1"], times["no_io_binding"], strict=True)), 3)}
    del variants

    # 6. peak memory of a fresh process for a 24-megapixel output
    if not args.skip_24mp:
        import cv2

        (work / "big").mkdir()
        big = cv2.resize(imgs[0], (1500, 1000), interpolation=cv2.INTER_CUBIC)
        write_image(work / "big" / "big.png", big)
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(exported.path), str(work / "big"),
                              str(work / "big-out")], capture_output=True, text=True, check=True)
        base, peak_mb, secs, ok, used_tile = out.stdout.split()
        res["24mp"] = {"output": "6000x4000", "tile": int(used_tile),
                       "hwm_after_session_mb": round(float(base)), "peak_mb": round(float(peak_mb)),
                       "seconds": round(float(secs), 1), "ok": int(ok),
                       "output_array_mb": 6000 * 4000 * 3 // 2**20}
    res["load_end"] = load()
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
