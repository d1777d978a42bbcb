"""Benchmark: ``srpipe process`` end to end against a naive tile loop and against the machine's conv peak.

Run from the repository root (about 5 minutes on 2 cores; nothing else should be running)::

    python benchmarks/process_throughput.py [--images 3] [--rounds 3] [--skip-24mp]

Everything is measured in one run, and every ratio is taken from *paired, interleaved* runs (A then B,
repeated; median of the ratios), with the load average printed beside it.

1. Exports EDSR-baseline x4 (16 blocks × 64 features) with random weights through ``export_model``
   (speed does not depend on training).
2. Conv peak: four stacked fp32 64→64 3×3 convolutions on 1×64×256×256, in PyTorch and in ONNX Runtime;
   the faster is "this machine's conv GFLOP/s" (the roofline). Measured before and after every pair.
3. End to end, each a fresh process (start-up, imports, decode, tiles, blend, encode, PNG writes), on
   ``--images`` real BSD200 photos (481×321, ~0.15 MP; synthetic when ../shared is absent):
   - ``srpipe``: the CLI with default settings (``srpipe process IN --out OUT --model M --overwrite``);
   - ``srpipe-ort``: the same with ``--backend onnxruntime`` (ONNX Runtime fp32, the reference path);
   - ``naive``: a Real-ESRGAN-style crop-only tile loop (tile 256, pad 10, no blending) over one ONNX
     Runtime CPU session (all cores, full graph optimisation), reading and writing the same PNGs
     with OpenCV.
   Reported: seconds, the speed-up over ``naive``, and useful GFLOP/s (whole-image model FLOPs ÷ wall
   time) over the conv peak (targets: ≥ 1.2× and ≥ 0.75).
4. Fidelity of the default path: tiled (default tile) against whole-image output of the same backend,
   and the default backend against ONNX Runtime fp32 (PSNR, max |Δ|).
5. Peak memory of ``srpipe process`` (the CLI and every child process it starts, summed; sampled from
   /proc every 20 ms) upscaling one 1500×1000 photo to 6000×4000 (24 MP) (target ≤ 2 GB).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from srpipe.config import ExportConfig
from srpipe.export import export_model
from srpipe.imaging.io import read_image, write_image
from srpipe.infer.upscaler import TiledUpscaler
from srpipe.model.edsr import build_model, preset_config
from srpipe.parallel import usable_cores

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "BSD200"

NAIVE = r"""
import sys, math, pathlib, cv2, numpy as np, onnxruntime as ort
model, src, dst = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
so = ort.SessionOptions()
so.intra_op_num_threads = int(sys.argv[4])
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
scale, tile, pad = 4, 256, 10
dst.mkdir(exist_ok=True)
for path in sorted(src.glob("*.png")):
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]
    x = np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    h, w = img.shape[:2]
    out = np.zeros((3, h * scale, w * scale), np.float32)
    for ty in range(math.ceil(h / tile)):
        for tx in range(math.ceil(w / tile)):
            x0, y0 = tx * tile, ty * tile
            x1, y1 = min(x0 + tile, w), min(y0 + tile, h)
            px0, px1, py0, py1 = max(x0 - pad, 0), min(x1 + pad, w), max(y0 - pad, 0), min(y1 + pad, h)
            y = sess.run(None, {name: np.ascontiguousarray(x[:, :, py0:py1, px0:px1])})[0][0]
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[:, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                y[:, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
    res = (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)[:, :, ::-1]
    cv2.imwrite(str(dst / path.name), res)
"""


class ConvProbe:
    """Four stacked 64→64 3×3 convs on 1×64×256×256 in ONNX Runtime and PyTorch, fp32."""

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
        so.intra_op_num_threads = usable_cores()
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self()

    def __call__(self) -> float:
        """The faster of the two, GFLOP/s, best of 3 runs each."""
        xn = self.x.numpy()
        t_ort = min(timed(lambda: self.sess.run(None, {"x": xn})) for _ in range(3))
        with torch.no_grad():
            t_torch = min(timed(lambda: self.model(self.x)) for _ in range(3))
        return self.FLOPS / min(t_ort, t_torch) / 1e9


def timed(fn: object) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0]) if Path("/proc/loadavg").exists() else -1.0


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


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, MB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(status.split("VmRSS:")[1].split()[0])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total / 1024


def run_peak(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak summed RSS in MB) of a command and its children."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_mb(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - t
    done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {err.decode()[-2000:]}")
    return seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=3, help="photos per end-to-end run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repeats of each comparison")
    ap.add_argument("--skip-24mp", action="store_true", help="skip the 24-megapixel memory run")
    args = ap.parse_args()
    torch.set_num_threads(usable_cores())
    res: dict[str, object] = {"threads": usable_cores(), "torch": torch.__version__, "load_start": load()}
    work = Path(tempfile.mkdtemp(prefix="srpipe-bench-"))
    torch.manual_seed(0)
    cfg = preset_config("baseline", 4)
    model = build_model(cfg).eval()
    exported = export_model(model, cfg, work / "edsr-baseline-x4.onnx", ExportConfig(), source="random")
    mflop = float(exported.metadata["mflop_per_lr_pixel"])
    files = photos(work / "in", args.images)
    imgs = [read_image(f).pixels for f in files]
    res["model"] = {"mflop_per_lr_pixel": mflop, "overlap": exported.receptive.overlap,
                    "images": [list(im.shape) for im in imgs]}
    useful = mflop * 1e6 * sum(im.shape[0] * im.shape[1] for im in imgs) / 1e9  # GFLOP, whole-image inference
    res.update(end_to_end(work, exported.path, useful, args.rounds))
    res["load_after_end_to_end"] = load()
    res["fidelity"] = fidelity(work, exported.path, imgs)
    if not args.skip_24mp:
        res["24mp"] = memory_24mp(work, exported.path, imgs[0])
    res["load_end"] = load()
    res["cpu"] = os.uname().machine
    print(json.dumps(res, indent=2))


def end_to_end(work: Path, model: Path, useful: float, rounds: int) -> dict[str, object]:
    """srpipe process (default and ONNX Runtime backends) against the naive loop, interleaved;
    ``useful`` = GFLOP of whole-image inference over the photos."""
    cli = [sys.executable, "-m", "srpipe.cli", "--workspace", str(work / "ws"), "process", str(work / "in"),
           "--model", str(model), "--overwrite"]
    commands = {"srpipe": [*cli, "--out", str(work / "out")],
                "srpipe-ort": [*cli, "--out", str(work / "out-ort"), "--backend", "onnxruntime"],
                "naive": [sys.executable, "-c", NAIVE, str(model), str(work / "in"),
                          str(work / "out-naive"), str(usable_cores())]}
    for cmd in commands.values():  # warm file caches and the overlap cache; not timed
        subprocess.run(cmd, check=True, capture_output=True)
    probe = ConvProbe(work)
    peaks = [probe()]
    times: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(rounds):
        for name, cmd in commands.items():
            times[name].append(timed(lambda cmd=cmd: subprocess.run(cmd, check=True, capture_output=True)))
        peaks.append(probe())
    peak = statistics.median(peaks)
    rows = {}
    for name, ts in times.items():
        rows[name] = {
            "seconds": [round(t, 2) for t in ts], "median_s": round(statistics.median(ts), 2),
            "speedup_vs_naive": round(statistics.median(
                n / t for n, t in zip(times["naive"], ts, strict=True)), 3),
            "useful_over_conv_peak": round(useful / statistics.median(ts) / peak, 3)}
    return {"conv_peak_gflops": [round(p) for p in peaks], "end_to_end": rows}


def fidelity(work: Path, model: Path, imgs: list[np.ndarray]) -> dict[str, object]:
    """4. fidelity of the default path: tiled vs whole image, default backend vs ONNX Runtime fp32."""
    tiled = TiledUpscaler.open(model, device="cpu", cache_dir=work / "ws" / "cache" / "overlap")
    whole = TiledUpscaler.open(model, device="cpu", tile=0)
    ort = TiledUpscaler.open(model, device="cpu", tile=0, backend="onnxruntime")
    outs = [(tiled(im), whole(im), ort(im)) for im in imgs]
    return {
        "backend": tiled.provider, "tile": tiled.tile, "overlap": tiled.overlap,
        "psnr_tiled_vs_whole": round(min(psnr(a, b) for a, b, _ in outs), 2),
        "maxdiff_tiled_vs_whole": int(max(np.abs(a.astype(int) - b).max() for a, b, _ in outs)),
        "psnr_default_vs_ort_fp32": round(min(psnr(b, c) for _, b, c in outs), 2),
        "maxdiff_default_vs_ort_fp32": int(max(np.abs(b.astype(int) - c).max() for _, b, c in outs))}


def memory_24mp(work: Path, model: Path, img: np.ndarray) -> dict[str, object]:
    """5. peak memory of the CLI (all its processes) for a 24-megapixel output."""
    import cv2

    (work / "big").mkdir()
    big_img = cv2.resize(img, (1500, 1000), interpolation=cv2.INTER_CUBIC)
    write_image(work / "big" / "big.png", big_img)
    big = [sys.executable, "-m", "srpipe.cli", "--workspace", str(work / "ws"), "process",
           str(work / "big"), "--model", str(model), "--out", str(work / "big-out")]
    mem = {}
    for name, extra in (("default", []), ("onnxruntime", ["--backend", "onnxruntime"])):
        seconds, peak_mb = run_peak([*big, "--overwrite", *extra])
        mem[name] = {"seconds": round(seconds, 1), "peak_mb_all_processes": round(peak_mb)}
    return {"output": "6000x4000", "output_array_mb": 6000 * 4000 * 3 // 2**20, **mem}


if __name__ == "__main__":
    main()
